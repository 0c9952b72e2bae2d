"""Facts about the installation: the Python running setup, its walt-node
executable, and the init system of the target image."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from walt_node.install import INSTALL_COMMANDS, WHEEL_HINT, InstallError
from walt_node.paths import NODE, Paths

SYSTEMD_BINARIES = tuple(str(path) for path in NODE.systemd_binaries)
INIT_SYSTEMS = ("systemd", "busybox")


@dataclass(frozen=True)
class PythonEnv:
    in_venv: bool
    externally_managed: bool  # PEP 668 marker: the distribution owns this Python
    prefix: str
    executable: str

    @classmethod
    def current(cls) -> PythonEnv:
        stdlib = Path(sysconfig.get_path("stdlib"))
        return cls(
            in_venv=sys.prefix != sys.base_prefix,
            externally_managed=(stdlib / "EXTERNALLY-MANAGED").exists(),
            prefix=os.path.abspath(sys.prefix),
            executable=os.path.abspath(sys.executable),
        )


def check_python_env(env: PythonEnv, system: bool) -> None:
    """Refuse the one unsafe case: a distribution-managed Python without --system.

    There, walt-node came from `pip install --break-system-packages` (or
    sudo pip), and apt may replace or break its files at any upgrade while the
    units installed here keep pointing at them.  A venv, the Debian package
    (its postinst passes --system) and non-managed Pythons (Alpine, python
    container images) are fine.
    """
    if env.in_venv or system or not env.externally_managed:
        return
    raise InstallError(
        f"walt-node runs from {env.executable}, a Python managed by the distribution "
        "(it has an EXTERNALLY-MANAGED marker): apt may change these files under the "
        f"installed services. Install walt-node in a venv instead, from {WHEEL_HINT}:\n"
        f"  {INSTALL_COMMANDS}\n"
        "or install the Debian package (apt install ./walt-node_*.deb). "
        "If this Python is really where walt-node must live, rerun with --system."
    )


def default_walt_node(env: PythonEnv) -> str:
    """Absolute path of the walt-node executable of the Python running setup."""
    if env.in_venv:
        return os.path.join(env.prefix, "bin", "walt-node")
    candidates = [
        # first: next to the interpreter (the Debian package's /usr/bin), since
        # Debian's sysconfig names /usr/local/bin, where our own links may be
        os.path.join(os.path.dirname(env.executable), "walt-node"),
        os.path.join(sysconfig.get_path("scripts"), "walt-node"),
    ]
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise InstallError(
        "cannot find the walt-node executable of this Python (looked at "
        + ", ".join(candidates) + "); pass its path with --walt-node PATH"
    )


def check_walt_node(image: Paths, walt_node: str) -> None:
    if not os.path.isabs(walt_node):
        raise InstallError(f"--walt-node must be an absolute path inside the image, not '{walt_node}'")
    host = image.followed(walt_node)
    if not (host.is_file() and os.access(host, os.X_OK)):
        raise InstallError(
            f"the services would run {walt_node}, but there is no such executable inside "
            f"{image.root}. Install walt-node inside the image first, from {WHEEL_HINT} "
            "(python3 -m venv /opt/walt-node; /opt/walt-node/bin/pip install /tmp/walt_node-*.whl), "
            "and pass --walt-node /opt/walt-node/bin/walt-node"
        )


def interpreter_of(image: Paths, walt_node: str, fallback: str) -> str:
    """The Python that walt-node's own launcher uses (its shebang), for our scripts."""
    try:
        with open(image.followed(walt_node), "rb") as stream:
            first = stream.readline(4096).decode(errors="replace").strip()
    except OSError:
        return fallback
    if first.startswith("#!") and "python" in first:
        return first[2:].strip()
    return fallback


def detect_init(image: Paths) -> str:
    """'systemd' or 'busybox', from what the image holds."""
    if any(image.followed(path).exists() for path in SYSTEMD_BINARIES):
        return "systemd"
    init = image.inside(str(NODE.sbin_init))
    if init.is_symlink() and os.path.basename(os.readlink(init)) == "busybox":
        return "busybox"
    if image.followed(str(NODE.busybox)).exists() and not init.exists():
        return "busybox"
    raise InstallError(
        f"cannot tell the init system of {image.root}: no systemd binary "
        f"({', '.join(SYSTEMD_BINARIES)}) and {NODE.sbin_init} is not busybox; "
        "pass --init systemd or --init busybox"
    )


def systemd_running(image: Paths, prefix_given: bool) -> bool:
    """True when setup targets the running system and systemd manages it."""
    return not prefix_given and image.inside(str(NODE.run_systemd_system)).is_dir()


def data_dir() -> Path:
    """Where the package ships its unit templates (data/units) and scripts (data/bin)."""
    return Path(__file__).resolve().parent.parent / "data"



def check_logs_daemon_args(image: Paths) -> None:
    """DAEMON_ARGS of /etc/default/walt-logs (or /etc/sysconfig/walt-logs) must suit walt-logs-daemon.

    The walt-logs unit passes them on, as upstream walt-node's unit did, so an
    upgraded image keeps its settings; upstream's daemon ignored its arguments,
    ours refuses unknown ones, so a leftover value would stop the logs at boot.
    """
    for path in NODE.logs_daemon_environment:
        try:
            text = image.followed(str(path)).read_text(errors="replace")
        except FileNotFoundError:
            continue
        except OSError as error:
            raise InstallError(f"cannot read {path}: {error.strerror}") from None
        value = _environment_value(text, "DAEMON_ARGS")
        problem = _logs_daemon_rejects(value.split()) if value else None
        if problem:
            raise InstallError(
                f"{path} sets DAEMON_ARGS={value!r}, which the walt-logs unit passes to walt-logs-daemon, "
                f"but walt-logs-daemon refuses it ({problem}). Nothing was changed. Fix or remove that "
                "line (options: walt-logs-daemon --help), then rerun setup")


def _environment_value(text: str, name: str) -> Optional[str]:
    """The value systemd's EnvironmentFile= would give ``name`` (last assignment wins), quotes removed."""
    import shlex

    value = None
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if sep and key.strip() == name:
            try:
                value = " ".join(shlex.split(raw, comments=False))
            except ValueError:
                value = raw.strip()
    return value


def _logs_daemon_rejects(argv: List[str]) -> Optional[str]:
    from walt_node.commands import command_parser

    parser, _ = command_parser("logs-daemon", "walt-logs-daemon")

    class Refused(Exception):
        pass

    def refuse(message: str) -> None:
        raise Refused(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        parser.parse_args(argv)
    except Refused as error:
        return str(error)
    except SystemExit:  # --help, --version: not options for a service
        return f"'{' '.join(argv)}' prints and exits"
    return None
