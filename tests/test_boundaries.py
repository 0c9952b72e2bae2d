"""The I/O boundaries of docs/architecture.md, kept true: a module that starts a
program, opens a socket to the server, names a filesystem location or reads a node
fact outside its one home fails here, with the file and line to fix."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Iterator, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "walt_node"

# where each kind of I/O lives
RUNNER = {"runner.py"}
SERVER_SOCKETS = {"protocols.py", "sim/"}  # the simulator is the server side itself
# protocols.py names the server's URL paths, not files; imagecheck/ names what an image
# must hold, always joined below the root of the image it checks, never the host's
PATHS = {"paths.py", "protocols.py", "imagecheck/"}
FACTS = {"facts.py", "sim/", "commands/demo.py"}  # the simulator and the demo play the platform
# errors are printed by errors.report (cli.run_command and /bin/blink call it); cli.py also
# prints its own usage problems (no command, an unknown program name)
ERROR_PRINTERS = {"errors.py", "cli.py"}

PROCESS_MODULES = {"subprocess", "pty", "multiprocessing", "asyncio"}
PROCESS_CALLS = re.compile(r"^(fork|forkpty|exec\w*|spawn\w*|system|popen|posix_spawn\w*)$")
# what a module outside protocols.py may use of the socket module: no connection to anywhere
HARMLESS_SOCKET_NAMES = {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "NETLINK_ROUTE", "SOCK_STREAM",
                         "SOCK_DGRAM", "SOCK_RAW", "SOCK_CLOEXEC", "SOCK_NONBLOCK", "gethostname",
                         "if_nameindex", "inet_aton", "inet_ntoa", "inet_pton", "inet_ntop", "socket"}
LOCAL_FAMILIES = {"AF_UNIX", "AF_NETLINK"}  # systemd, avahi, the kernel: never the server
FILESYSTEM_PATH = re.compile(r"^/(proc|sys|var|etc|bin|sbin|run|tmp|dev|lib|usr|persist|boot|opt|srv|home"
                             r"|root)(/|$)")
FACT_PATHS = {"proc_cmdline", "walt_env", "dmi_dir", "etc_hostname"}
FACT_VARIABLE = re.compile(r"^walt_(server_\w+|image_id|image_size_kib|boot_mode|node_(mac|model|hostname))$")


def modules() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name_of(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def allowed(path: Path, homes: Set[str]) -> bool:
    name = name_of(path)
    return any(name == home or (home.endswith("/") and name.startswith(home)) for home in homes)


def prose_nodes(tree: ast.AST) -> Set[int]:
    """Docstrings, DESCRIPTION texts and argparse help: text for people, not locations."""
    prose: Set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant):
            prose.add(id(body[0].value))
        texts = []
        if isinstance(node, ast.keyword) and node.arg in ("help", "description", "epilog"):
            texts.append(node.value)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DESCRIPTION"
                                                for t in node.targets):
            texts.append(node.value)
        for text in texts:
            prose.update(id(inner) for inner in ast.walk(text))
    return prose


def crossings(check) -> List[str]:
    found = []
    for path in modules():
        tree = ast.parse(path.read_text(), str(path))
        for line, what in check(path, tree):
            found.append(f"walt_node/{name_of(path)}:{line}: {what}")
    return found


def program_starts(path: Path, tree: ast.AST) -> Iterator[tuple]:
    if allowed(path, RUNNER):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROCESS_MODULES:
                    yield node.lineno, f"imports {alias.name} (start programs with walt_node.runner)"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PROCESS_MODULES:
            yield node.lineno, f"imports from {node.module} (start programs with walt_node.runner)"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "os" and PROCESS_CALLS.match(node.attr):
            yield node.lineno, f"os.{node.attr} (start programs with walt_node.runner)"


def server_sockets(path: Path, tree: ast.AST) -> Iterator[tuple]:
    if allowed(path, SERVER_SOCKETS):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "socket":
            yield node.lineno, "from socket import ... (server connections live in walt_node.protocols)"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "socket" and node.attr not in HARMLESS_SOCKET_NAMES:
            yield node.lineno, f"socket.{node.attr} (server connections live in walt_node.protocols)"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "socket" \
                and node.func.attr == "socket":
            family = node.args[0] if node.args else None
            if not (isinstance(family, ast.Attribute) and family.attr in LOCAL_FAMILIES):
                yield node.lineno, "socket.socket() to the network (server connections: walt_node.protocols)"


def filesystem_locations(path: Path, tree: ast.AST) -> Iterator[tuple]:
    if allowed(path, PATHS):
        return
    prose = prose_nodes(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose \
                and FILESYSTEM_PATH.match(node.value):
            yield node.lineno, f"names {node.value!r} (locations come from walt_node.paths.Paths)"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Paths" \
                and (not node.args or _literal(node.args[0])):
            yield node.lineno, "a Paths of a fixed root (the node's own names: walt_node.paths.NODE)"


def _literal(node: ast.AST) -> bool:
    """``"/"`` or ``Path("/")``: a root written in the code."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Path" \
            and node.args:
        node = node.args[0]
    return isinstance(node, ast.Constant)


def fact_reads(path: Path, tree: ast.AST) -> Iterator[tuple]:
    if allowed(path, FACTS):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FACT_PATHS:
            yield node.lineno, f"reads .{node.attr} (node facts come from walt_node.facts)"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and FACT_VARIABLE.match(node.value):
            yield node.lineno, f"names fact variable {node.value!r} (node facts come from walt_node.facts)"


def main_blocks(tree: ast.AST) -> Set[int]:
    """The nodes of ``if __name__ == "__main__":`` blocks (a module run as a script)."""
    inside: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) \
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            inside.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return inside


def error_printing(path: Path, tree: ast.AST) -> Iterator[tuple]:
    if allowed(path, ERROR_PRINTERS) or name_of(path) == "__main__.py":
        return
    scripts = main_blocks(tree)
    for node in ast.walk(tree):
        if id(node) in scripts:
            continue
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys" \
                and node.attr in ("stderr", "exit"):
            yield node.lineno, f"sys.{node.attr} (raise a WaltNodeError: the CLI prints it and exits)"
        if isinstance(node, ast.Name) and node.id == "SystemExit" and isinstance(node.ctx, ast.Load) \
                and not _caught(tree, node):
            yield node.lineno, "SystemExit (raise a WaltNodeError: the CLI prints it and exits)"


def _caught(tree: ast.AST, name: ast.Name) -> bool:
    """``except SystemExit`` catches (argparse's exit while checking arguments), it does not exit."""
    return any(isinstance(node, ast.ExceptHandler) and node.type is name for node in ast.walk(tree))


@pytest.mark.parametrize("check", [
    program_starts,
    server_sockets,
    filesystem_locations,
    fact_reads,
    error_printing,
], ids=["programs-only-via-runner", "server-sockets-only-in-protocols", "locations-only-in-paths",
        "facts-only-in-facts", "errors-printed-in-one-place"])
def test_no_module_crosses_a_boundary(check) -> None:
    assert crossings(check) == []


SAMPLE = '''
import subprocess
import socket
s = socket.create_connection(("server", 12347))
open("/var/lib/walt/logs.fifo")
ip = env["walt_server_ip"]
def f(paths):
    return paths.proc_cmdline
NODE = Paths("/")
sys.stderr.write("x: error\\n")
'''


@pytest.mark.parametrize("check", [program_starts, server_sockets, filesystem_locations, fact_reads,
                                   error_printing])
def test_each_check_catches_its_crossing(check) -> None:
    """The checks can fail: each finds its crossing in a module that has all four."""
    found = list(check(PACKAGE / "blink.py", ast.parse(SAMPLE)))
    assert found, check.__name__


# ------------------------------------------------------------------ who may import whom

CORE = {"paths", "facts", "protocols", "runner", "files", "errors", "service", "log", "text", "config",
        "bounds"}
# the library: one unit per feature, each built on the core only
FEATURES = {"blink", "swap", "mdns", "lldp", "logstreams", "reboot", "install", "sim", "imagecheck",
            "cpuinfo"}
# pure libraries of a feature that another feature may use as they are
SHARED = {
    "walt_node.reboot.ipxe",  # the iPXE interpreter: reboots and check-image replay scripts
    "walt_node.install",  # the package's own text: how to install this walt-node (hints)
}
# the layers above, which may import anything: the command modules and the CLI
TOP = {"commands", "cli", "__main__", "manpages"}  # manpages: man pages of the CLI, built from it


def unit_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def imported_units(tree: ast.AST) -> Iterator[tuple]:
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "walt_node" else \
                [f"walt_node.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("walt_node."):
                yield node.lineno, name


def layer_crossings(path: Path, tree: ast.AST) -> Iterator[tuple]:
    unit = name_of(path).split("/")[0].removesuffix(".py")
    if unit in TOP:
        return
    for line, name in imported_units(tree):
        target = unit_of(name)
        if target == unit or target in CORE or target == "__init__":
            continue
        if name == "walt_node.commands" or name in SHARED:  # the registry (data); shared libraries
            continue
        if unit == "log" and target == "logstreams":  # the public API is built on the daemon's package
            continue
        if unit in CORE and target in FEATURES:
            yield line, f"core module imports feature {name}"
        elif target in TOP:
            yield line, f"library imports the command layer ({name})"
        elif target in FEATURES:
            yield line, f"feature {unit} imports another feature's internals ({name})"


def test_library_modules_import_only_the_core_and_their_own_feature() -> None:
    assert crossings(layer_crossings) == []


def test_the_layer_check_can_fail() -> None:
    sample = ast.parse("from walt_node.logstreams.serial import x\nfrom walt_node.commands.log import run\n")
    found = [what for _, what in layer_crossings(PACKAGE / "swap.py", sample)]
    assert len(found) == 2, found


def test_every_module_has_its_place_on_the_map() -> None:
    """A new module is placed in a layer (here and in docs/architecture.md) before it lands."""
    units = {name_of(path).split("/")[0].removesuffix(".py") for path in modules()} - {"__init__"}
    assert units - CORE - FEATURES - TOP == set()
