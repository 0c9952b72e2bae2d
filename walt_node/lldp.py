"""`walt-node lldp`: read LLDP neighbours and report the switch port to the server.

lldpd does the LLDP work; its stable machine interface is
``lldpcli -f json0 show neighbors`` (docs/protocols.md §10).  Each
neighbour whose chassis id is a MAC address is reported with NSAPI
``report_lldp_neighbor(<switch mac>, <port id>)`` (§4) through
:mod:`walt_node.protocols`, which builds the request with ``repr()`` of the
real strings: a port label full of quotes stays a plain string.

``--watch`` sleeps until lldpd tells of a change (``lldpcli watch``, or the
server closing the session), reports a neighbour when it is new or changed,
and retries failed reports every ``--interval`` seconds. Its reports go through one NSAPI session held
open between rounds: when the server closes it (stopped, restarted, lost what
it knew), every neighbour is reported again as soon as the server answers.
Every ``--refresh`` seconds everything is re-reported anyway, in case the
server forgot without closing the session.
"""

from __future__ import annotations

import json
import logging
import os
import select
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from walt_node import runner
from walt_node.errors import WaltNodeError

log = logging.getLogger(__name__)


LLDPCLI_TIMEOUT = 10.0
DEBOUNCE = 0.5  # a change comes as several notices of lldpd: read the neighbours once
DEFAULT_INTERVAL = 10.0
DEFAULT_REFRESH = 600.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_USABLE = 2


class LldpUnavailable(WaltNodeError):
    """lldpcli is missing, lldpd is not running, or its answer is unreadable."""


@dataclass(frozen=True)
class Neighbor:
    interface: str
    chassis_id: str
    chassis_id_type: str
    port_id: str
    port_id_type: str
    port_descr: str = ""
    system_name: str = ""

    @property
    def problem(self) -> Optional[str]:
        """Why this neighbour cannot be reported (None if it can)."""
        if self.chassis_id_type != "mac":
            return f"chassis id is not a MAC (type '{self.chassis_id_type or 'missing'}')"
        if not self.port_id:
            return "no port id"
        return None

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.interface, self.switch_mac, self.port_id)

    @property
    def switch_mac(self) -> str:
        return self.chassis_id.lower()


# ------------------------------------------------------------ json0 parsing

def _first(items: Any) -> Dict[str, Any]:
    """json0 wraps every object in a list; take its first element."""
    if isinstance(items, list) and items and isinstance(items[0], dict):
        return items[0]
    if isinstance(items, dict):
        return items
    return {}


def _value(obj: Dict[str, Any], key: str) -> Tuple[str, str]:
    """(value, type) of a json0 field such as chassis.id or port.descr."""
    entry = _first(obj.get(key))
    value = entry.get("value", "")
    return (str(value) if value is not None else "", str(entry.get("type", "")))


def _parse_interface(entry: Dict[str, Any]) -> Neighbor:
    chassis = _first(entry.get("chassis"))
    port = _first(entry.get("port"))
    chassis_id, chassis_type = _value(chassis, "id")
    port_id, port_type = _value(port, "id")
    return Neighbor(
        interface=str(entry.get("name", "")),
        chassis_id=chassis_id,
        chassis_id_type=chassis_type,
        port_id=port_id,
        port_id_type=port_type,
        port_descr=_value(port, "descr")[0],
        system_name=_value(chassis, "name")[0],
    )


def parse_neighbors(document: Any, section: str = "lldp") -> List[Neighbor]:
    """Neighbours in a ``lldpcli -f json0`` document.

    ``section`` is ``lldp`` for ``show neighbors`` and ``lldp-added`` /
    ``lldp-updated`` / ``lldp-deleted`` for ``watch`` events. With no
    neighbour, lldpcli prints ``{"lldp": [{}]}``.
    """
    if not isinstance(document, dict):
        raise LldpUnavailable(f"lldpcli json0 output is not an object: {str(document)[:200]!r}")
    neighbors = []
    for group in document.get(section) or []:
        if not isinstance(group, dict):
            continue
        for entry in group.get("interface") or []:
            if isinstance(entry, dict):
                neighbors.append(_parse_interface(entry))
    return neighbors


def read_neighbors(lldpd_socket: Optional[str] = None,
                   timeout: float = LLDPCLI_TIMEOUT) -> List[Neighbor]:
    """Ask lldpd (through lldpcli) for its current neighbours."""
    argv = ["lldpcli"]
    if lldpd_socket:
        argv += ["-u", lldpd_socket]
    argv += ["-f", "json0", "show", "neighbors"]
    try:
        done = runner.run(argv, timeout=timeout)
    except runner.CommandMissing:
        raise LldpUnavailable("lldpcli was not found: install lldpd (apt install lldpd)") from None
    except runner.CommandFailed as error:
        raise LldpUnavailable(f"cannot read neighbours from lldpd, is lldpd running? ({error})") from None
    try:
        document = json.loads(done.stdout)
    except ValueError:
        raise LldpUnavailable(f"lldpcli printed something that is not JSON: {done.stdout[:200]!r}") from None
    return parse_neighbors(document)


class NeighborEvents:
    """lldpd's own notices of neighbour changes (``lldpcli watch``), for a select()
    loop: the watcher sleeps until a neighbour appears, changes or goes away,
    instead of asking lldpd again and again. Only "something changed" matters
    (the neighbours are read again with :func:`read_neighbors`)."""

    def __init__(self, lldpd_socket: Optional[str] = None):
        argv = ["lldpcli"] + (["-u", lldpd_socket] if lldpd_socket else []) + ["-f", "json0", "watch"]
        try:
            self.process = runner.start(argv, stdout=runner.PIPE, stderr=runner.DEVNULL)
        except runner.CommandMissing:
            raise LldpUnavailable("lldpcli was not found: install lldpd (apt install lldpd)") from None

    def fileno(self) -> int:
        return self.process.stdout.fileno()

    def drain(self) -> bool:
        """Read what lldpcli printed, never block; False once it ended (lldpd went away)."""
        while select.select([self], [], [], 0)[0]:
            if not os.read(self.fileno(), 65536):
                return False
        return True

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()
        self.process.stdout.close()


# ---------------------------------------------------------------- reporting

Report = Callable[[str, str], None]


@dataclass
class Outcome:
    reported: List[Neighbor] = field(default_factory=list)
    unchanged: List[Neighbor] = field(default_factory=list)
    skipped: List[Tuple[Neighbor, str]] = field(default_factory=list)
    failed: List[Tuple[Neighbor, str]] = field(default_factory=list)

    def summary(self) -> str:
        text = (f"reported {len(self.reported)}, unchanged {len(self.unchanged)}, "
                f"skipped {len(self.skipped)}, failed {len(self.failed)}")
        reasons: Dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        if reasons:
            text += " (skipped: " + "; ".join(f"{r}: {n}" for r, n in sorted(reasons.items())) + ")"
        return text


class Reporter:
    """Reports neighbours that are new, changed, or due for a refresh.

    State is the set of (interface, switch mac, port id) the server has
    accepted, with the time of acceptance. A neighbour whose report failed is
    not in it, so the next round retries it.
    """

    def __init__(self, report: Report, refresh: Optional[float] = DEFAULT_REFRESH,
                 clock: Callable[[], float] = time.monotonic):
        self.report = report
        self.refresh = refresh
        self.clock = clock
        self.accepted: Dict[Tuple[str, str, str], float] = {}
        self.skipped_total = 0

    def forget_all(self) -> None:
        """The server may have lost what it knew: report every neighbour again."""
        self.accepted.clear()

    def _due(self, neighbor: Neighbor, now: float) -> bool:
        when = self.accepted.get(neighbor.key)
        if when is None:
            return True
        return self.refresh is not None and now - when >= self.refresh

    def process(self, neighbors: Iterable[Neighbor]) -> Outcome:
        outcome = Outcome()
        now = self.clock()
        current = set()
        for neighbor in neighbors:
            problem = neighbor.problem
            if problem is not None:
                outcome.skipped.append((neighbor, problem))
                continue
            current.add(neighbor.key)
            if not self._due(neighbor, now):
                outcome.unchanged.append(neighbor)
                continue
            try:
                self.report(neighbor.switch_mac, neighbor.port_id)
            except Exception as error:  # server down, refused call: retried next round
                outcome.failed.append((neighbor, str(error)))
                self.accepted.pop(neighbor.key, None)
                continue
            self.accepted[neighbor.key] = now
            outcome.reported.append(neighbor)
        # forget neighbours that went away, so that their return is reported
        for key in list(self.accepted):
            if key not in current:
                del self.accepted[key]
        self.skipped_total += len(outcome.skipped)
        return outcome


class ServerSession:
    """One NSAPI session kept open between reports.

    Its end tells that the server went away (stopped or restarted): a
    restarted server has forgotten the topology, so the watcher reports
    everything again once it answers.
    """

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.session: Optional[Any] = None
        self.broke = False  # a call failed on an open session since the last look

    def report(self, sw_mac: str, port_label: str) -> None:
        """One report, opening the session if needed, all within ``timeout``."""
        from walt_node.bounds import Deadline
        from walt_node.protocols import ApiSession, ServerError

        deadline = Deadline(self.timeout)
        try:
            if self.session is None:
                self.session = ApiSession(self.host, self.port, "NSAPI", self.timeout).open(deadline)
            self.session.call_within(deadline, "report_lldp_neighbor", sw_mac, port_label)
        except ServerError:
            self.close()
            self.broke = True
            raise

    def lost(self) -> bool:
        """True once if the session ended (closed by the server, or broken during a
        call) since the last look."""
        if self.broke:
            self.broke = False
            return True
        # readable without being closed: the server spoke first (junk): start afresh too
        closed = self.session is not None and (self.session.closed_by_server()
                                               or bool(select.select([self.session.sock], [], [], 0)[0]))
        if closed:
            self.close()
        return closed

    def waitable(self) -> List[Any]:
        """The open session's socket (readable when the server ends it), for select()."""
        return [self.session.sock] if self.session is not None and self.session.sock is not None else []

    def close(self) -> None:
        if self.session is not None:
            self.session.close()  # sends ('CLOSE',) if the connection still works
            self.session = None


def server_session(timeout: float) -> ServerSession:
    """The NSAPI session to the server named by the node facts (opened on first use)."""
    from walt_node.facts import NodeFacts

    facts = NodeFacts()
    return ServerSession(facts.server_ip, facts.rpc_port, timeout)


# ---------------------------------------------------------------- commands
