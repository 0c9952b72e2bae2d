"""`walt-node mdns`: <node>.local names and WalT node discovery with python-zeroconf.

WalT documents avahi-daemon + libnss-mdns for ``<node name>.local``
(docs/protocols.md §10). This module is the pure-Python alternative for images
without avahi: it publishes the node's A record and a ``_walt-node._tcp``
service whose TXT records carry model, image id and MAC, resolves names,
lists peers, and can keep a managed block of peers in /etc/hosts so that
``ping node2.local`` works without libnss-mdns. When avahi-daemon already
runs, ``publish`` stands aside: two responders for one host only conflict.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from walt_node.errors import WaltNodeError
from walt_node.files import edit_locked
from walt_node.paths import Paths, live_process_file
from walt_node.service import StopFlag

log = logging.getLogger(__name__)


SERVICE_TYPE = "_walt-node._tcp.local."
SERVICE_PORT = 12346  # the node's request port (reboot / blink, docs/protocols.md §7)
HOSTS_BEGIN = "# BEGIN walt-node mdns peers (managed by walt-node mdns; edits here are lost)"
HOSTS_END = "# END walt-node mdns peers"
DEBOUNCE = 0.5
PEERS_REFRESH = 5.0
RETRY_DELAY = 10.0
HOSTS_POLL = 0.5
FIRST_RETRY = 0.2

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 2

_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class MdnsError(WaltNodeError):
    pass


# ------------------------------------------------------------------ identity

@dataclass(frozen=True)
class Identity:
    hostname: str
    txt: Dict[str, str]


def valid_hostname(name: str) -> bool:
    return bool(name) and len(name) <= 253 and all(_LABEL_RE.match(p) for p in name.split("."))


def node_identity(facts) -> Identity:
    """Hostname and TXT data from the node facts; unknown TXT facts are left out."""
    from walt_node.facts import FactInvalid, FactMissing

    hostname = facts.hostname.split(".")[0]
    if not valid_hostname(hostname):
        raise MdnsError(f"hostname '{hostname}' is not a valid DNS label: give the node a valid name")
    txt: Dict[str, str] = {}
    for key, fact in (("model", "model"), ("image", "image_id"), ("mac", "mac")):
        try:
            txt[key] = str(getattr(facts, fact))
        except (FactMissing, FactInvalid) as error:
            log.warning("TXT %s left out: %s", key, error)
    return Identity(hostname, txt)


def load_ifaddr() -> Any:
    """ifaddr (zeroconf's dependency), imported without ``ctypes.util``.

    At import, ifaddr asks ``ctypes.util.find_library("c")`` for the C library:
    that runs ``ldconfig`` in a child process and loads shutil, tempfile, bz2 and
    lzma, about 0.45 MiB that the resident process would keep for nothing. The C
    library is already loaded: a ``find_library`` answering None makes ifaddr open
    the process's own symbols (``CDLL(None)``), where ``getifaddrs`` is. The stand-in
    is only there during the import; ``import ctypes.util`` later gets the real one."""
    import sys
    import types

    if "ifaddr" in sys.modules or "ctypes.util" in sys.modules:
        import ifaddr
        return ifaddr
    import ctypes

    stand_in = types.ModuleType("ctypes.util")
    stand_in.find_library = lambda name: None  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = ctypes.util = stand_in  # type: ignore[attr-defined]
    try:
        import ifaddr
    finally:
        del sys.modules["ctypes.util"]
        if getattr(ctypes, "util", None) is stand_in:
            del ctypes.util
    return ifaddr


def _ipv4_interfaces() -> List[Tuple[str, ipaddress.IPv4Interface]]:
    """(interface name, address/prefix) of every IPv4 address of this host.

    ifaddr (getifaddrs) comes with zeroconf, which the publisher loads anyway:
    pyroute2 would cost the long-running publisher about 11 MiB more."""
    ifaddr = load_ifaddr()

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):  # IPv4; IPv6 addresses are tuples
                found.append((adapter.name, ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}")))
    return found


def local_ipv4_addresses(interface: Optional[str] = None) -> List[str]:
    """IPv4 addresses of this host, loopback and link-local excluded."""
    if interface and interface not in {name for _, name in socket.if_nameindex()}:
        raise MdnsError(f"no network interface named '{interface}'")
    addresses = {str(address.ip) for name, address in _ipv4_interfaces()
                 if (not interface or name == interface)
                 and not (address.ip.is_loopback or address.ip.is_link_local)}
    return sorted(addresses)


def local_ipv4_networks() -> List[ipaddress.IPv4Network]:
    """The IPv4 networks of this host's interfaces (their broadcast addresses are no peer's)."""
    return sorted({address.network for _, address in _ipv4_interfaces()})


# ------------------------------------------------------------------ avahi

def avahi_owner(paths: Paths) -> Optional[str]:
    """A description of the running avahi-daemon, or None if there is none."""
    run_dir = paths.run_avahi_daemon
    try:
        pid = int((run_dir / "pid").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        try:  # live /proc: the pid file may be stale
            comm = live_process_file(pid, "comm").read_text().strip()
        except OSError:
            comm = ""
        if comm.startswith("avahi-daemon"):
            return f"avahi-daemon (pid {pid}, {run_dir / 'pid'})"
    sock_path = run_dir / "socket"
    if sock_path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            try:
                sock.connect(str(sock_path))
                return f"avahi-daemon (listening on {sock_path})"
            except OSError:
                pass
    return None


# ------------------------------------------------------------------ zeroconf

def new_zeroconf(interface_addresses: Optional[Sequence[str]] = None):
    load_ifaddr()  # before zeroconf imports it the costly way
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    interfaces = list(interface_addresses) if interface_addresses else InterfaceChoice.All
    return Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)


def service_info(identity: Identity, addresses: Sequence[str]):
    from zeroconf import ServiceInfo

    return ServiceInfo(
        SERVICE_TYPE,
        f"{identity.hostname}.{SERVICE_TYPE}",
        port=SERVICE_PORT,
        properties=dict(identity.txt),
        server=f"{identity.hostname}.local.",
        addresses=[socket.inet_aton(a) for a in addresses],
    )


def fqdn(name: str) -> str:
    name = name.rstrip(".")
    if not name.endswith(".local"):
        name += ".local"
    return name + "."


def resolve(name: str, timeout: float, zc=None) -> List[str]:
    """IPv4 addresses of ``name`` (.local added if missing), by multicast A queries."""
    from zeroconf import DNSOutgoing, DNSQuestion, current_time_millis
    from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_A

    target = fqdn(name)
    own = zc is None
    zc = zc or new_zeroconf()
    try:
        deadline = time.monotonic() + timeout
        # a query sent while zeroconf is still setting up its sockets can be lost,
        # so the first retry comes quickly; then RFC 6762 §5.2: 1 s, doubling
        next_query, interval = time.monotonic(), FIRST_RETRY
        while True:
            now_ms = current_time_millis()  # zeroconf's own clock for record expiry
            records = [r for r in zc.cache.get_all_by_details(target, _TYPE_A, _CLASS_IN)
                       if not r.is_expired(now_ms)]
            if records:
                return sorted({socket.inet_ntoa(r.address) for r in records})
            now = time.monotonic()
            if now >= deadline:
                return []
            if now >= next_query:
                question = DNSQuestion(target, _TYPE_A, _CLASS_IN)
                # QU (RFC 6762 §5.4): the responder answers at once by unicast instead
                # of holding a multicast answer back; later retries ask for multicast
                question.unicast = interval <= FIRST_RETRY
                out = DNSOutgoing(_FLAGS_QR_QUERY)
                out.add_question(question)
                zc.send(out)
                next_query = now + interval
                interval = 1.0 if interval == FIRST_RETRY else interval * 2
            time.sleep(0.05)
    finally:
        if own:
            zc.close()


@dataclass
class Peer:
    name: str
    hostname: str
    addresses: List[str]
    txt: Dict[str, str]


def _decode(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def peer_from_info(info) -> Peer:
    return Peer(
        name=info.name[: -len(SERVICE_TYPE) - 1] if info.name.endswith("." + SERVICE_TYPE) else info.name,
        hostname=(info.server or "").rstrip("."),
        addresses=sorted(a for a in info.parsed_addresses() if ":" not in a),
        txt={_decode(k): _decode(v) for k, v in (info.properties or {}).items()},
    )


class PeerWatcher:
    """Browses _walt-node._tcp; `changed` is set whenever the set of services moves."""

    def __init__(self, zc):
        from zeroconf import ServiceBrowser

        self.zc = zc
        self.names: Dict[str, None] = {}
        self.lock = threading.Lock()
        self.changed = threading.Event()
        self.browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(self, zeroconf, service_type, name, state_change) -> None:
        from zeroconf import ServiceStateChange

        with self.lock:
            if state_change is ServiceStateChange.Removed:
                self.names.pop(name, None)
            else:
                self.names[name] = None
        self.changed.set()

    def peers(self, timeout: float = 1.5) -> List[Peer]:
        with self.lock:
            names = list(self.names)
        found = []
        for name in names:
            info = self.zc.get_service_info(SERVICE_TYPE, name, timeout=int(timeout * 1000))
            if info is not None:
                found.append(peer_from_info(info))
        return sorted(found, key=lambda p: p.name)

    def close(self) -> None:
        self.browser.cancel()


# ------------------------------------------------------------------ /etc/hosts

class HostsFileError(WaltNodeError):
    pass


# names a peer may never claim, whatever the hosts file holds
RESERVED_NAMES = frozenset({"localhost", "localhost.localdomain", "localdomain", "local",
                            "broadcasthost", "ip6-localhost", "ip6-loopback"})

Refused = Callable[[str], None]


def names_outside_block(text: str) -> Set[str]:
    """The names (lowercase) the hosts file gives to addresses outside walt-node's block."""
    names: Set[str] = set()
    inside = False
    for line in text.splitlines():
        if line in (HOSTS_BEGIN, HOSTS_END):
            inside = line == HOSTS_BEGIN
            continue
        fields = line.split("#", 1)[0].split()
        if not inside and len(fields) > 1:
            names.update(name.lower() for name in fields[1:])
    return names


def _name_refusal(hostname: str, taken: AbstractSet[str]) -> Optional[str]:
    label, _, domain = hostname.partition(".")
    if domain.lower() != "local" or not _LABEL_RE.match(label):
        return "only a single-label <name>.local name may be written"
    for name in (label.lower(), f"{label.lower()}.local"):
        if name in taken or name in RESERVED_NAMES:
            return f"'{name}' is already a name of this hosts file (or reserved)"
    return None


def _address_refusal(address: str, networks: Sequence[ipaddress.IPv4Network]) -> Optional[str]:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return f"{address!r} is not an IPv4 address"
    # link-local too: our publishers never announce one, and it is ambiguous across links
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return f"{ip} is not a usable unicast address"
    for network in networks:
        if network.prefixlen < 31 and ip in (network.network_address, network.broadcast_address):
            return f"{ip} is not a usable unicast address on the local network {network}"
    return None


def hosts_entries(peers: Sequence[Peer], taken: AbstractSet[str] = frozenset(),
                  refused: Refused = log.warning,
                  networks: Sequence[ipaddress.IPv4Network] = ()) -> List[Tuple[str, List[str]]]:
    """(ip, names) lines for what peers may claim (names and addresses come from the network!).

    A peer gets ``<name>.local <name>`` for a single DNS label ``<name>``,
    unless the hosts file already gives either name to someone (``taken``:
    localhost, the server, this node...), and only for usable unicast IPv4
    addresses (not the network or broadcast address of one of the local
    ``networks`` either). Everything left out is reported to ``refused``.
    """
    entries = []
    for peer in peers:
        reason = _name_refusal(peer.hostname, taken)
        if reason is not None:
            refused(f"peer {peer.name!r} announces host {peer.hostname!r}: left out of the hosts "
                    f"file ({reason})")
            continue
        label = peer.hostname.partition(".")[0]
        for address in peer.addresses:
            reason = _address_refusal(address, networks)
            if reason is not None:
                refused(f"peer {peer.name!r} announces {peer.hostname!r} at {address!r}: left out of "
                        f"the hosts file ({reason})")
                continue
            entries.append((address, [f"{label}.local", label]))
    return sorted(entries)


def render_hosts(text: str, entries: Sequence[Tuple[str, List[str]]]) -> str:
    """``text`` with the managed block replaced by ``entries`` (removed when empty).

    Lines outside the block are kept byte for byte. A BEGIN without END (or
    the reverse) means someone edited the markers: refuse rather than guess.
    """
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\n") == HOSTS_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == HOSTS_END]
    if len(begins) > 1 or len(ends) > 1 or len(begins) != len(ends) or (begins and ends[0] < begins[0]):
        raise HostsFileError("the walt-node block markers are damaged (BEGIN/END lines missing, "
                             "repeated or out of order): fix or remove them by hand")
    if begins:
        position = begins[0]
        del lines[begins[0]: ends[0] + 1]
    else:
        position = len(lines)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
    if entries:
        block = [HOSTS_BEGIN + "\n"] + [f"{ip}\t{' '.join(names)}\n" for ip, names in entries]
        lines[position:position] = block + [HOSTS_END + "\n"]
    return "".join(lines)


def update_hosts(path: Path, peers: Sequence[Peer], own_hostname: Optional[str] = None,
                 refused: Refused = log.warning,
                 networks: Sequence[ipaddress.IPv4Network] = ()) -> bool:
    """Rewrite the managed block if it changed; True if the file was written.

    The file is edited under a lock, through its real path (a symbolic link
    stays one), and a line another program appends meanwhile is kept
    (:func:`walt_node.files.edit_locked`). ``own_hostname`` is never claimed;
    ``networks`` are the local ones (see :func:`hosts_entries`).
    """
    own = {own_hostname.lower(), f"{own_hostname.lower()}.local"} if own_hostname else set()

    def edit(text: str) -> str:
        return render_hosts(text, hosts_entries(peers, names_outside_block(text) | own, refused, networks))

    return edit_locked(path, edit)


# ------------------------------------------------------------------ publisher

class Publisher:
    """Keeps the node's service registered with its current addresses."""

    def __init__(self, identity: Identity, addresses: Callable[[], List[str]],
                 zeroconf_factory: Callable[[], Any] = new_zeroconf):
        self.identity = identity
        self.addresses = addresses
        self.factory = zeroconf_factory
        self.zc = None
        self.info = None
        self.published: List[str] = []

    def refresh(self) -> None:
        """(Re)register if the addresses changed since the last registration."""
        current = self.addresses()
        if current == self.published and self.zc is not None:
            return
        self.stop()
        if not current:
            log.warning("no IPv4 address yet: %s.local is not published", self.identity.hostname)
            self.published = []
            return
        from zeroconf import NonUniqueNameException

        # a fresh Zeroconf joins the multicast group on the interfaces as they are now
        self.zc = self.factory()
        self.info = service_info(self.identity, current)
        try:
            self.zc.register_service(self.info, allow_name_change=False)
        except NonUniqueNameException:
            self.stop()
            raise MdnsError(f"another host already publishes {self.identity.hostname}.local: "
                            "give this node a unique hostname") from None
        self.published = current
        log.info("published %s.local -> %s (TXT %s)", self.identity.hostname, ", ".join(current),
                 " ".join(f"{k}={v}" for k, v in sorted(self.identity.txt.items())))

    def stop(self) -> None:
        if self.zc is None:
            return
        try:
            if self.info is not None:
                self.zc.unregister_service(self.info)  # goodbye packets: peers forget us now
        finally:
            self.zc.close()
            self.zc = None
            self.info = None


# rtnetlink multicast groups (linux/rtnetlink.h)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10


class AddressMonitor:
    """The kernel's notices of link and IPv4 address changes, for a select() loop.

    A plain netlink socket: only "something changed" matters (the addresses
    are read again afterwards), so nothing is parsed."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                  socket.NETLINK_ROUTE)
        # addresses and links only: neighbour and route chatter would wake us for nothing
        self.sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        """Read what is queued, never block."""
        while True:
            try:
                self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno != errno.ENOBUFS:  # ENOBUFS: notices were lost; we re-read anyway
                    raise

    def close(self) -> None:
        self.sock.close()


class HostsKeeper:
    """Browses peers and mirrors them into the /etc/hosts block (publish --hosts)."""

    def __init__(self, paths: Paths, identity: Identity):
        self.paths, self.identity = paths, identity
        self.zc = None
        self.watcher: Optional[PeerWatcher] = None
        self.last_sync = 0.0
        self.refusals: Set[str] = set()  # logged once each: a hostile peer repeats itself

    def restart(self) -> None:
        """A fresh browser joins the multicast group on the interfaces as they are now."""
        self.close()
        self.zc = new_zeroconf()
        self.watcher = PeerWatcher(self.zc)

    def poll(self) -> None:
        if self.watcher is None:
            return
        if self.watcher.changed.is_set() or time.monotonic() - self.last_sync > PEERS_REFRESH:
            self.watcher.changed.clear()
            self.last_sync = time.monotonic()
            _sync_hosts(self.paths, self.watcher.peers(), self.identity, self.refuse)

    def refuse(self, message: str) -> None:
        if message not in self.refusals:
            self.refusals.add(message)
            log.warning("%s", message)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.zc is not None:
            self.zc.close()
            self.zc = None


def publish_forever(identity: Identity, paths: Paths, interface: Optional[str],
                    manage_hosts: bool, stop: StopFlag) -> None:
    publisher = Publisher(identity, lambda: local_ipv4_addresses(interface))
    monitor = AddressMonitor()
    hosts = HostsKeeper(paths, identity) if manage_hosts else None
    retry_at: Optional[float] = time.monotonic()
    try:
        while not stop.is_set():
            # Asleep until an address changes, a retry is due or a stop is asked:
            # an idle publisher wakes nobody (only --hosts looks at its peers twice a second).
            if select.select([monitor, stop], [], [], _sleep_time(retry_at, hosts))[0] \
                    and not stop.is_set():
                monitor.drain()
                time.sleep(DEBOUNCE)  # an address change comes as several messages
                monitor.drain()
                retry_at = time.monotonic()
            if retry_at is not None and time.monotonic() >= retry_at:
                retry_at = _refresh(publisher, hosts)
            if hosts is not None:
                hosts.poll()
    finally:
        publisher.stop()
        monitor.close()
        if hosts is not None:
            hosts.close()
            _sync_hosts(paths, [], identity, log.warning)  # stale entries are worse than none


def _sleep_time(retry_at: Optional[float], hosts: Optional[HostsKeeper]) -> Optional[float]:
    """Seconds the publisher's loop may sleep; None: until an event."""
    if hosts is not None:
        return HOSTS_POLL
    if retry_at is None:
        return None
    return max(0.0, retry_at - time.monotonic())


def _refresh(publisher: Publisher, hosts: Optional[HostsKeeper]) -> Optional[float]:
    """Re-register after a change; returns when to try again if the network refused."""
    before = list(publisher.published)
    try:
        publisher.refresh()
        if hosts is not None and (hosts.watcher is None or publisher.published != before):
            hosts.restart()
    except OSError as error:  # e.g. no multicast route yet: the network is still coming up
        log.warning("mDNS not ready (%s); retrying in %g s", error, RETRY_DELAY)
        return time.monotonic() + RETRY_DELAY
    return None


def _sync_hosts(paths: Paths, peers: List[Peer], identity: Identity, refused: Refused) -> None:
    try:
        if update_hosts(paths.etc_hosts, peers, identity.hostname, refused, local_ipv4_networks()):
            log.info("%s: walt-node block updated (%d peer(s) announced)", paths.etc_hosts, len(peers))
    except (HostsFileError, OSError) as error:
        log.error("cannot update %s: %s", paths.etc_hosts, error)


# ------------------------------------------------------------------ commands
