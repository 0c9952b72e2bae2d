"""`walt-node lldp`: read LLDP neighbours and report the switch port to the server.

lldpd does the LLDP work; its stable machine interface is
``lldpcli -f json0 show neighbors`` (walt-protocols.md §10).  Each
neighbour whose chassis id is a MAC address is reported with NSAPI
``report_lldp_neighbor(<switch mac>, <port id>)`` (§4) through
:mod:`walt_node.protocols`, which builds the request with ``repr()`` of the
real strings: a port label full of quotes stays a plain string.

``--watch`` polls lldpd and reports a neighbour when it is new or changed,
and retries failed reports. Its reports go through one NSAPI session held
open between rounds: when the server closes it (stopped, restarted, lost what
it knew), every neighbour is reported again as soon as the server answers.
Every ``--refresh`` seconds everything is re-reported anyway, in case the
server forgot without closing the session.
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from walt_node import runner

log = logging.getLogger(__name__)

DESCRIPTION = """\
Read LLDP neighbours from lldpd and report the switch port this node is
plugged in to the WalT server (NSAPI report_lldp_neighbor), so that the
server knows the platform topology.

  neighbors   list what lldpd sees (lldpcli -f json0 show neighbors), and
              whether each neighbour can be reported
  report      report each usable neighbour once (chassis id must be a MAC)
  report --watch
              keep running: report new or changed neighbours, retry failed
              reports; report everything again when the server restarts
              (its API session, held open, is closed) and every --refresh
              seconds

Exit status of report (without --watch): 0 reported, 2 nothing usable to
report, 1 lldpd or the server failed. Needs lldpd running (package lldpd).

Examples:
  walt-node lldp neighbors
  walt-node lldp report --watch --interval 10
"""

LLDPCLI_TIMEOUT = 10.0
DEFAULT_INTERVAL = 10.0
DEFAULT_REFRESH = 600.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOTHING_USABLE = 2


class LldpUnavailable(RuntimeError):
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
        from walt_node.protocols import ApiSession, ServerError

        if self.session is None:
            self.session = ApiSession(self.host, self.port, "NSAPI", self.timeout).open()
        try:
            self.session.call("report_lldp_neighbor", sw_mac, port_label)
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
        sock = self.session.sock if self.session is not None else None
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False  # the server never speaks first: silence means alive
        try:
            closed = sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            closed = True
        if closed:
            self.close()
        return closed

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

def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, help_text in (("neighbors", "list LLDP neighbours seen by lldpd"),
                            ("report", "report switch neighbours to the WalT server")):
        action = sub.add_parser(name, help=help_text, description=help_text)
        action.add_argument("--lldpd-socket", metavar="PATH",
                            help="lldpd control socket (lldpcli -u), default: lldpd's own")
        if name == "neighbors":
            action.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            action.add_argument("--watch", action="store_true",
                                help="keep running and report changes")
            action.add_argument("--interval", type=positive_seconds, default=DEFAULT_INTERVAL, metavar="S",
                                help=f"--watch: seconds between two looks (default {DEFAULT_INTERVAL:g})")
            action.add_argument("--refresh", type=float, default=DEFAULT_REFRESH, metavar="S",
                                help="--watch: re-report every neighbour after S seconds, "
                                     f"0 = never (default {DEFAULT_REFRESH:g})")
            action.add_argument("--timeout", type=float, default=5.0, metavar="S",
                                help="time limit of one server call (default 5)")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive number of seconds")
    return value


def _print_table(neighbors: List[Neighbor]) -> None:
    if not neighbors:
        print("no LLDP neighbour")
        return
    print(f"{'INTERFACE':<12} {'SWITCH MAC':<17}  {'PORT ID':<20} {'SYSTEM':<16} STATUS")
    for n in neighbors:
        status = n.problem or "usable"
        print(f"{n.interface:<12} {n.chassis_id:<17}  {n.port_id!r:<20} {n.system_name:<16} {status}")


def _run_neighbors(args) -> int:
    try:
        neighbors = read_neighbors(args.lldpd_socket)
    except LldpUnavailable as error:
        print(f"walt-node lldp: {error}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps([dict(asdict(n), problem=n.problem) for n in neighbors], indent=2))
    else:
        _print_table(neighbors)
    return EXIT_OK


def _log_outcome(outcome: Outcome) -> None:
    for n in outcome.reported:
        log.info("reported switch %s port %r (seen on %s)", n.switch_mac, n.port_id, n.interface)
    for n, reason in outcome.skipped:
        log.debug("skipped neighbour %r on %s: %s", n.chassis_id, n.interface, reason)
    for n, reason in outcome.failed:
        log.warning("could not report switch %s port %r: %s (will retry)",
                    n.switch_mac, n.port_id, reason)


def _report_once(args, reporter: Reporter) -> int:
    try:
        neighbors = read_neighbors(args.lldpd_socket)
    except LldpUnavailable as error:
        print(f"walt-node lldp: {error}", file=sys.stderr)
        return EXIT_FAILED
    outcome = reporter.process(neighbors)
    _log_outcome(outcome)
    print(outcome.summary())
    if outcome.failed:
        return EXIT_FAILED
    return EXIT_OK if outcome.reported else EXIT_NOTHING_USABLE


def _watch(args, reporter: Reporter, server: ServerSession) -> int:
    lldpd_warned = False
    while True:
        if server.lost():
            log.info("the server closed its API session (restarted?): "
                     "reporting every neighbour again")
            reporter.forget_all()
        try:
            neighbors = read_neighbors(args.lldpd_socket)
            lldpd_warned = False
        except LldpUnavailable as error:
            if not lldpd_warned:  # say it once, not every round
                log.warning("%s; retrying every %g s", error, args.interval)
                lldpd_warned = True
            neighbors = None
        if neighbors is not None:
            outcome = reporter.process(neighbors)
            _log_outcome(outcome)
            if outcome.reported or outcome.failed:
                log.info("%s", outcome.summary())
        time.sleep(args.interval)


def _run_report(args) -> int:
    from walt_node.facts import FactInvalid, FactMissing

    try:
        server = server_session(args.timeout)
    except (FactMissing, FactInvalid) as error:
        print(f"walt-node lldp: {error}", file=sys.stderr)
        return EXIT_FAILED
    refresh = args.refresh if args.refresh > 0 else None
    reporter = Reporter(server.report, refresh=refresh)
    try:
        if args.watch:
            return _watch(args, reporter, server)
        return _report_once(args, reporter)
    finally:
        server.close()


def run(args) -> int:
    if args.action == "neighbors":
        return _run_neighbors(args)
    return _run_report(args)
