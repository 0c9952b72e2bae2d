"""`walt-node services`: walt-node's long-running services in one resident process."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
from typing import Callable, List

from walt_node.commands import logs_daemon
from walt_node.paths import Paths
from walt_node.service import (
    RESIDENT_SERVICES,
    Feature,
    StopFlag,
    Supervisor,
    notifier,
    on_stop_signals,
    watchdog_period,
)

log = logging.getLogger(__name__)

FEATURES = RESIDENT_SERVICES
LOGS, MDNS, LLDP, JOURNAL = FEATURES
STOP_TIMEOUT = 10.0  # the logs daemon may take 7 s: 5 to deliver, 2 for the FIFO's writers

DESCRIPTION = """\
Run walt-node's long-running services in one process (the walt-logs unit):

  walt-logs             the logs daemon (see 'walt-node logs-daemon --help')
  walt-mdns             <hostname>.local over mDNS ('walt-node mdns publish')
  walt-lldp-report      the switch port, from lldpd ('walt-node lldp report --watch')
  walt-journal-forward  journal units to log streams ('walt-node journal-forward'),
                        when /etc/walt/journal-forward.conf exists

One interpreter instead of four: about a third of the memory. Each service
is contained: one that raises or fails is logged (with its traceback the
first time), counted, and restarted after 1, 2, 4 ... up to 300 s, while the
others keep running; 'systemctl status walt-logs' shows each one's state.
The logs daemon starts first and the others once its FIFO exists.
A service's modules are loaded only when it runs (zeroconf: mDNS only), and
none loads ssl (no service speaks TLS).

Kill switch of each service: touch /etc/walt/<service>.disabled (e.g.
/etc/walt/walt-mdns.disabled), then 'systemctl restart walt-logs'.
With every service off, it exits with status 0 (and systemd leaves it off).

The options are the logs daemon's (DAEMON_ARGS of /etc/default/walt-logs),
and --mdns-hosts.

example:
  walt-node services --spool-size 128M
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    logs_daemon.add_arguments(parser)
    parser.add_argument("--mdns-hosts", action="store_true",
                        help="the mDNS publisher also keeps the other WalT nodes in a managed "
                             "block of /etc/hosts (as 'walt-node mdns publish --hosts')")


def run(args: argparse.Namespace) -> int:
    paths = Paths.from_env()
    stop = StopFlag()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)  # a signal wakes the main thread even if another thread got it
    on_stop_signals(stop.set)
    notify = notifier()
    _leave_out_tls()
    features = enabled_features(paths, args)
    if not features:
        log.warning("every service is switched off (%s): nothing to run",
                    ", ".join(str(paths.kill_switch(name)) for name in FEATURES))
        return 0
    supervisor = Supervisor(stop, notify)
    for feature in features:
        supervisor.start(feature)
        if feature.name == LOGS:
            feature.ready.wait()  # the FIFO exists (or the daemon failed) before others write to it
    notify("READY=1")
    # the logs daemon feeds the watchdog from its loop; without it, this thread does
    watchdog = None if features[0].name == LOGS else watchdog_period()
    while not stop.is_set():
        ready = select.select([stop, wake_r], [], [], watchdog)[0]
        if wake_r in ready:
            os.read(wake_r, 512)  # the signal's handler runs now, in this thread
        if not ready:
            notify("WATCHDOG=1")
    notify("STOPPING=1")
    left = supervisor.join(STOP_TIMEOUT)
    if left:
        log.warning("still running %g s after the stop request, left behind: %s", STOP_TIMEOUT,
                    ", ".join(left))
    return 0


def _leave_out_tls() -> None:
    """asyncio (zeroconf's event loop) imports ssl in case a caller wants TLS, and ssl loads
    OpenSSL: about 1.5 MiB. No service of this process speaks TLS, so that import fails here
    as on a Python built without ssl, which asyncio (and http.client) handle."""
    sys.modules.setdefault("ssl", None)  # type: ignore[assignment]


def enabled_features(paths: Paths, args: argparse.Namespace) -> List[Feature]:
    """The services to run, in start order; says why each other one is off."""
    logs_ready = threading.Event()
    runs = {LOGS: _logs(args, logs_ready), MDNS: _mdns(args.mdns_hosts), LLDP: _lldp, JOURNAL: _journal}
    features = []
    for name in FEATURES:
        switch = paths.kill_switch(name)
        if switch.exists():
            log.info("%s is off: %s exists", name, switch)
        elif name == JOURNAL and not paths.journal_forward_conf.exists():
            log.info("%s is off: no %s lists units to forward", name, paths.journal_forward_conf)
        else:
            features.append(Feature(name, runs[name], logs_ready if name == LOGS else threading.Event()))
    return features


def _logs(args: argparse.Namespace, ready: threading.Event) -> Callable[[StopFlag], int]:
    def run(stop: StopFlag) -> int:
        from walt_node.logstreams.daemon import DaemonConfig, LogsDaemon
        from walt_node.logstreams.settings import server_address

        config = DaemonConfig(fifo=args.fifo, spool_dir=args.spool_dir, spool_size=args.spool_size,
                              max_line=args.max_line, idle_close=args.idle_close,
                              resend_window=args.resend_window, max_connections=args.max_connections,
                              paced=not args.unpaced_writes)
        daemon = LogsDaemon(config, server_address(args.server))
        return daemon.run(stop, ready=ready.set)
    return run


def _mdns(hosts: bool) -> Callable[[StopFlag], int]:
    def run(stop: StopFlag) -> int:
        from walt_node.commands.mdns import publish

        return publish(stop, hosts=hosts)
    return run


def _lldp(stop: StopFlag) -> int:
    from walt_node.commands import command_parser
    from walt_node.commands.lldp import report

    parser, _ = command_parser("lldp", "walt-node lldp")
    return report(parser.parse_args(["report", "--watch"]), stop)


def _journal(stop: StopFlag) -> int:
    from walt_node.commands.journal_forward import forward_journal

    paths = Paths.from_env()
    return forward_journal(stop, paths.journal_forward_conf, paths.journal_forward_cursor)

