"""`walt-node lldp` command; the work is in :mod:`walt_node.lldp`."""

from __future__ import annotations

import json
import logging
import select
import time
from dataclasses import asdict
from typing import List, Optional

from walt_node.commands.argtypes import positive_seconds
from walt_node.lldp import (
    DEBOUNCE,
    DEFAULT_INTERVAL,
    DEFAULT_REFRESH,
    EXIT_FAILED,
    EXIT_NOTHING_USABLE,
    EXIT_OK,
    LldpUnavailable,
    Neighbor,
    NeighborEvents,
    Outcome,
    Reporter,
    ServerSession,
    read_neighbors,
    server_session,
)
from walt_node.service import StopFlag, on_stop_signals
from walt_node.text import printable

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
                                help="--watch: seconds between two tries while lldpd is away or a report "
                                     f"fails (default {DEFAULT_INTERVAL:g})")
            action.add_argument("--refresh", type=float, default=DEFAULT_REFRESH, metavar="S",
                                help="--watch: re-report every neighbour after S seconds, "
                                     f"0 = never (default {DEFAULT_REFRESH:g})")
            action.add_argument("--timeout", type=float, default=5.0, metavar="S",
                                help="time limit of one report to the server, connection included "
                                     "(default 5)")




def _print_table(neighbors: List[Neighbor]) -> None:
    if not neighbors:
        print("no LLDP neighbour")
        return
    print(f"{'INTERFACE':<12} {'SWITCH MAC':<17}  {'PORT ID':<20} {'SYSTEM':<16} STATUS")
    for n in neighbors:  # every field is what the switch announced: shown escaped
        status = printable(n.problem or "usable")
        print(f"{printable(n.interface):<12} {printable(n.chassis_id):<17}  {n.port_id!r:<20} "
              f"{printable(n.system_name):<16} {status}")


def _run_neighbors(args) -> int:
    neighbors = read_neighbors(args.lldpd_socket)  # LldpUnavailable: the CLI prints it
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
    neighbors = read_neighbors(args.lldpd_socket)  # LldpUnavailable: the CLI prints it
    outcome = reporter.process(neighbors)
    _log_outcome(outcome)
    print(outcome.summary())
    if outcome.failed:
        return EXIT_FAILED
    return EXIT_OK if outcome.reported else EXIT_NOTHING_USABLE


def _watch(args, reporter: Reporter, server: ServerSession, stop: StopFlag) -> int:
    lldpd_warned = False
    events: Optional[NeighborEvents] = None
    try:
        while not stop.is_set():
            if server.lost():
                log.info("the server closed its API session (restarted?): "
                         "reporting every neighbour again")
                reporter.forget_all()
            retry = False
            try:
                if events is None:  # listening before reading: no change slips in between
                    events = NeighborEvents(args.lldpd_socket)
                neighbors = read_neighbors(args.lldpd_socket)
                lldpd_warned = False
            except LldpUnavailable as error:
                if not lldpd_warned:  # say it once, not every round
                    log.warning("%s; retrying every %g s", error, args.interval)
                    lldpd_warned = True
                neighbors, retry = None, True
            if neighbors is not None:
                outcome = reporter.process(neighbors)
                _log_outcome(outcome)
                if outcome.reported or outcome.failed:
                    log.info("%s", outcome.summary())
                retry = bool(outcome.failed)
            if retry and events is not None and events.process.poll() is not None:
                events.close()
                events = None
            if retry or events is None:
                timeout: Optional[float] = args.interval
            else:  # nothing to do until a change, or the next refresh
                timeout = args.refresh if args.refresh > 0 else None
            if not _wait_for_change(events, server, timeout, stop):
                events.close()
                events = None
        return EXIT_OK
    finally:
        if events is not None:
            events.close()


def _wait_for_change(events: Optional[NeighborEvents], server: ServerSession,
                     timeout: Optional[float], stop: StopFlag) -> bool:
    """Sleep until lldpd tells of a change, the server ends the session, a stop is
    asked or `timeout` (None: no timeout); False when lldpd's notices ended (lldpd stopped)."""
    waited = ([events] if events is not None else []) + server.waitable() + [stop]
    ready = select.select(waited, [], [], timeout)[0]
    if events is None or events not in ready:
        return True
    time.sleep(DEBOUNCE)  # let the rest of the change arrive
    return events.drain()


def _run_report(args) -> int:
    stop = StopFlag()
    if args.watch:
        on_stop_signals(stop.set)
    return report(args, stop)


def report(args, stop: StopFlag) -> int:
    """`lldp report [--watch]` (--watch: until ``stop`` is set); `args` holds the
    options of `lldp report` (also the LLDP feature of `walt-node services`)."""
    from walt_node.facts import FactInvalid, FactMissing

    try:
        server = server_session(args.timeout)
    except (FactMissing, FactInvalid) as error:
        log.error("%s", error)
        return EXIT_FAILED
    refresh = args.refresh if args.refresh > 0 else None
    reporter = Reporter(server.report, refresh=refresh)
    try:
        if args.watch:
            return _watch(args, reporter, server, stop)
        return _report_once(args, reporter)
    finally:
        server.close()


def run(args) -> int:
    if args.action == "neighbors":
        return _run_neighbors(args)
    return _run_report(args)
