"""Node facts, read in one place (docs/protocols.md §1).

Each fact is looked up in these sources, first hit wins:

1. the environment (the variable names of ``/bin/walt-env``, plus
   ``walt_server_http_port``, ``walt_node_mac`` and ``walt_node_model``);
2. ``/bin/walt-env``, parsed as shell assignments (never executed);
3. ``/proc/cmdline`` (``walt.server.ip``, ``walt.node.model``,
   ``walt.node.mac``, ``BOOTIF=01-aa-bb-...``);
4. for the MAC only: the interface that routes to the server (pyroute2);
5. a protocol default where WalT defines one (ports, boot mode).

A fact found nowhere raises :class:`FactMissing`, which lists every source
that was tried.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from walt_node.errors import WaltNodeError
from walt_node.paths import NODE, Paths

DEFAULT_RPC_PORT = 12345
DEFAULT_LOGS_PORT = 12347
DEFAULT_HTTP_PORT = 80
BOOT_MODES = ("network", "hybrid-volatile", "hybrid-persistent")

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class FactMissing(WaltNodeError, LookupError):
    def __init__(self, fact: str, tried: List[str]):
        self.fact = fact
        self.tried = tried
        super().__init__(
            f"node fact '{fact}' is unknown; tried: " + "; ".join(tried)
            + ". Set the environment variable or boot the node from a WalT server."
        )


class FactInvalid(WaltNodeError, ValueError):
    pass


def normalize_mac(text: str) -> str:
    """'AA-BB-..' or 'aa:bb:..' -> 'aa:bb:cc:dd:ee:ff'; FactInvalid otherwise."""
    mac = text.strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise FactInvalid(f"'{text}' is not a MAC address")
    return mac


def parse_walt_env(text: str) -> Dict[str, str]:
    """Read shell assignments (``export a=b``, ``a="b c"; export a``) as data.

    Nothing is executed: command substitutions and expansions are kept as
    literal text. Only assignments count: ``a=b`` commands, and the words of
    ``export`` (``echo a=b`` assigns nothing).
    """
    values: Dict[str, str] = {}
    for line in text.splitlines():
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            words = list(lexer)
        except ValueError:
            continue  # unbalanced quotes: not data we can trust
        for command in _simple_commands(words):
            for word in _assignment_words(command):
                name, _, value = word.partition("=")
                values[name] = value
    return values


_ASSIGNMENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _simple_commands(words: List[str]) -> List[List[str]]:
    """Split shell words on the operators ``;``, ``&&``, ``||``, ``|``, ``&``."""
    commands: List[List[str]] = [[]]
    for word in words:
        if word and set(word) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def _assignment_words(command: List[str]) -> List[str]:
    if command and command[0] == "export":
        return [w for w in command[1:] if _ASSIGNMENT_RE.match(w)]
    if all(_ASSIGNMENT_RE.match(w) for w in command):
        return command  # `a=1 b=2` alone; `a=1 cmd` only sets a for cmd
    return []


def parse_cmdline(text: str) -> Dict[str, str]:
    """Kernel command line -> {key: value}; later duplicates win, as in the kernel."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    values: Dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        values[key] = value
    return values


def bootif_to_mac(value: str) -> str:
    """PXE's BOOTIF=01-aa-bb-cc-dd-ee-ff (01 = Ethernet) -> aa:bb:cc:dd:ee:ff."""
    parts = value.strip().lower().split("-")
    if len(parts) == 7 and parts[0] == "01":
        parts = parts[1:]
    return normalize_mac("-".join(parts))


def _link_attribute_routing_to(server_ip: str, attribute: str) -> Optional[str]:
    """An attribute of the interface the kernel would use to reach ``server_ip``."""
    try:
        from pyroute2 import IPRoute
    except ImportError:
        return None
    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=server_ip)
            if not routes:
                return None
            oif = routes[0].get_attr("RTA_OIF")
            links = ipr.get_links(oif)
            return links[0].get_attr(attribute) if links else None
    except Exception:  # no route, no netlink: the caller reports the fact as missing
        return None


def interface_routing_to(server_ip: str) -> Optional[str]:
    """Name of the interface the kernel would use to reach ``server_ip``."""
    return _link_attribute_routing_to(server_ip, "IFLA_IFNAME")


def mac_routing_to(server_ip: str) -> Optional[str]:
    """MAC of the interface the kernel would use to reach ``server_ip``."""
    mac = _link_attribute_routing_to(server_ip, "IFLA_ADDRESS")
    if not mac or mac == "00:00:00:00:00:00":
        return None
    return normalize_mac(mac)


Source = Tuple[str, Callable[[], Optional[str]]]


@dataclass
class Fact:
    name: str
    value: str
    source: str


class NodeFacts:
    """Lazy, cached access to the facts of the node this runs on."""

    def __init__(self, paths: Optional[Paths] = None, env: Optional[Mapping[str, str]] = None):
        self.paths = paths or Paths.from_env(env)
        self.env = dict(os.environ if env is None else env)
        self._cache: Dict[str, Fact] = {}
        self._walt_env: Optional[Dict[str, str]] = None
        self._cmdline: Optional[Dict[str, str]] = None

    # --- raw sources ---
    def walt_env_values(self) -> Dict[str, str]:
        if self._walt_env is None:
            try:
                self._walt_env = parse_walt_env(self.paths.walt_env.read_text(errors="replace"))
            except OSError:
                self._walt_env = {}
        return self._walt_env

    def cmdline_values(self) -> Dict[str, str]:
        if self._cmdline is None:
            try:
                self._cmdline = parse_cmdline(self.paths.proc_cmdline.read_text(errors="replace"))
            except OSError:
                self._cmdline = {}
        return self._cmdline

    def _env_source(self, var: str) -> Source:
        return (f"environment variable {var}", lambda: self.env.get(var) or None)

    def _walt_env_source(self, var: str) -> Source:
        return (f"{var} in {self.paths.walt_env}", lambda: self.walt_env_values().get(var) or None)

    def _cmdline_source(self, key: str) -> Source:
        return (f"{key}= in {self.paths.proc_cmdline}",
                lambda: self.cmdline_values().get(key) or None)

    def _lookup(self, name: str, sources: List[Source]) -> Fact:
        if name in self._cache:
            return self._cache[name]
        tried = []
        for label, getter in sources:
            value = getter()
            if value is not None:
                fact = Fact(name, value, label)
                self._cache[name] = fact
                return fact
            tried.append(label)
        raise FactMissing(name, tried)

    def _default(self, value: str) -> Source:
        return ("WalT default", lambda: value)

    # --- facts ---
    def fact(self, name: str) -> Fact:
        """The fact and where it came from; FactMissing if nowhere."""
        return getattr(self, f"_fact_{name}")()

    def _fact_server_ip(self) -> Fact:
        return self._lookup("server_ip", [
            self._env_source("walt_server_ip"),
            self._walt_env_source("walt_server_ip"),
            self._cmdline_source("walt.server.ip"),
        ])

    def _port(self, name: str, var: str, default: int, in_walt_env: bool = True) -> Fact:
        sources = [self._env_source(var)]
        if in_walt_env:
            sources.append(self._walt_env_source(var))
        sources.append(self._default(str(default)))
        fact = self._lookup(name, sources)
        if not fact.value.isdigit() or not 0 < int(fact.value) < 65536:
            raise FactInvalid(f"{name} '{fact.value}' from {fact.source} is not a TCP port")
        return fact

    def _fact_logs_port(self) -> Fact:
        return self._port("logs_port", "walt_server_logs_port", DEFAULT_LOGS_PORT)

    def _fact_rpc_port(self) -> Fact:
        return self._port("rpc_port", "walt_server_rpc_port", DEFAULT_RPC_PORT)

    def _fact_http_port(self) -> Fact:
        return self._port("http_port", "walt_server_http_port", DEFAULT_HTTP_PORT)

    def _fact_image_id(self) -> Fact:
        return self._lookup("image_id", [
            self._env_source("walt_image_id"),
            self._walt_env_source("walt_image_id"),
        ])

    def _fact_boot_mode(self) -> Fact:
        fact = self._lookup("boot_mode", [
            self._env_source("walt_boot_mode"),
            self._walt_env_source("walt_boot_mode"),
            ("WalT default (older servers leave it unset)", lambda: "network"),
        ])
        if fact.value not in BOOT_MODES:
            raise FactInvalid(f"boot mode '{fact.value}' from {fact.source} is not one of "
                              + ", ".join(BOOT_MODES))
        return fact

    def _fact_model(self) -> Fact:
        return self._lookup("model", [
            self._env_source("walt_node_model"),
            self._walt_env_source("walt_node_model"),
            self._cmdline_source("walt.node.model"),
        ])

    def _fact_mac(self) -> Fact:
        def from_cmdline_bootif() -> Optional[str]:
            value = self.cmdline_values().get("BOOTIF")
            return bootif_to_mac(value) if value else None

        def from_route() -> Optional[str]:
            try:
                server = self.server_ip
            except FactMissing:
                return None
            return mac_routing_to(server)

        fact = self._lookup("mac", [
            self._env_source("walt_node_mac"),
            self._walt_env_source("walt_node_mac"),
            self._cmdline_source("walt.node.mac"),
            (f"BOOTIF= in {self.paths.proc_cmdline}", from_cmdline_bootif),
            ("the interface routing to the server (netlink)", from_route),
        ])
        fact.value = normalize_mac(fact.value)
        return fact

    def _fact_hostname(self) -> Fact:
        """The kernel's name first: a booted node gets it at early boot, and the server
        deletes the image's /etc/hostname, a build leftover (docs/protocols.md §11).
        /etc/hostname only counts for an image tree, which has no kernel of its own."""
        def read(path: Path) -> Callable[[], Optional[str]]:
            def value() -> Optional[str]:
                try:
                    return path.read_text().strip() or None
                except OSError:
                    return None
            return value

        kernel = self.paths.kernel_hostname
        sources: List[Source] = [self._env_source("walt_node_hostname"),
                                 (f"the kernel ({kernel})", read(kernel))]
        if self.paths.root == NODE.root:  # a real node, not a tree below a root
            sources.append(("the kernel (uname)", socket.gethostname))
        else:
            sources.append((str(self.paths.etc_hostname), read(self.paths.etc_hostname)))
        return self._lookup("hostname", sources)

    # --- convenient accessors ---
    @property
    def server_ip(self) -> str:
        return self._fact_server_ip().value

    @property
    def logs_port(self) -> int:
        return int(self._fact_logs_port().value)

    @property
    def rpc_port(self) -> int:
        return int(self._fact_rpc_port().value)

    @property
    def http_port(self) -> int:
        return int(self._fact_http_port().value)

    @property
    def image_id(self) -> str:
        return self._fact_image_id().value

    @property
    def boot_mode(self) -> str:
        return self._fact_boot_mode().value

    @property
    def model(self) -> str:
        return self._fact_model().value

    @property
    def mac(self) -> str:
        return self._fact_mac().value

    @property
    def hostname(self) -> str:
        return self._fact_hostname().value

    def dmi(self, name: str) -> str:
        """A DMI string of a PC (``sys_vendor``, ``product_name``), or '' when there is none."""
        try:
            return (self.paths.dmi_dir / name).read_text().strip()
        except OSError:
            return ""

    def is_virtual(self) -> bool:
        """True on a qemu virtual node (DMI vendor QEMU)."""
        try:
            return (self.paths.dmi_dir / "sys_vendor").read_text().strip() == "QEMU"
        except OSError:
            return False

    FACT_NAMES = ("server_ip", "logs_port", "rpc_port", "http_port", "model", "mac",
                  "image_id", "boot_mode", "hostname")

    def server(self) -> ServerAddress:
        return ServerAddress(self.server_ip, self.logs_port, self.rpc_port, self.http_port)


@dataclass(frozen=True)
class ServerAddress:
    ip: str
    logs_port: int = DEFAULT_LOGS_PORT
    rpc_port: int = DEFAULT_RPC_PORT
    http_port: int = DEFAULT_HTTP_PORT
