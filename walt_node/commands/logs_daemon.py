"""`walt-node logs-daemon` (legacy name `walt-logs-daemon`)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from walt_node.commands.argtypes import host_port, non_negative_seconds, size
from walt_node.errors import WaltNodeError
from walt_node.logstreams.settings import SPOOL_DIR_ENV, SPOOL_SIZE_ENV, server_address
from walt_node.paths import Paths

log = logging.getLogger(__name__)

DESCRIPTION = """\
Forward the log requests written to the node's logs FIFO to the WalT server.

The daemon creates /var/lib/walt/logs.fifo (under WALT_NODE_ROOT, mode 0622:
anyone may write, as walt-log-echo does) and accepts the requests
'LOG <stream> <text>' (stamped on reception) and 'TSLOG <ts> <stream> <text>'.
Each stream goes over its own connection to the server's logs port, with
the lines' timestamps inside.  Lines the server cannot take are kept in a
bounded spool on disk and delivered, in order and with their original
timestamps, when it is back (also after a restart of the daemon).
MONITOR requests (of WalT's own walt-log-monitor script) run nothing: the
requester is told, in its own FIFO, to use walt-node's walt-log-monitor.

It tells systemd when it is ready and feeds its watchdog (Type=notify).

example:
  walt-node logs-daemon --spool-size 128M
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    paths = Paths.from_env()
    env_dir = os.environ.get(SPOOL_DIR_ENV)
    env_size = os.environ.get(SPOOL_SIZE_ENV)
    parser.add_argument("--fifo", type=Path, default=paths.logs_fifo,
                        help="the FIFO to create and read (default: %(default)s)")
    parser.add_argument("--spool-dir", type=Path, default=Path(env_dir) if env_dir else paths.logs_spool,
                        help=f"where undelivered lines wait (default: %(default)s; env {SPOOL_DIR_ENV})")
    parser.add_argument("--spool-size", type=size, default=env_size or "64M",
                        help=f"spool size limit, e.g. 64M (default: 64M; env {SPOOL_SIZE_ENV}); "
                             "when full, the oldest lines are replaced by a notice")
    parser.add_argument("--server", type=host_port, default=None, metavar="HOST[:PORT]",
                        help="the server's logs port (default: from the node facts, "
                             "see 'walt-node facts')")
    parser.add_argument("--idle-close", type=non_negative_seconds, default=30.0, metavar="SECONDS",
                        help="close a stream's connection (CLOSE) after this idle time "
                             "(default: %(default)s)")
    parser.add_argument("--max-connections", type=int, default=64, metavar="N",
                        help="connections to the server open at once; when a stream needs "
                             "one more, the least recently used idle stream is closed "
                             "(default: %(default)s)")
    parser.add_argument("--max-streams", type=int, default=4096, metavar="N",
                        help="streams holding undelivered lines at once (in memory or in the "
                             "spool); the lines of further new streams are dropped and counted "
                             "until some are delivered (default: %(default)s)")
    parser.add_argument("--unpaced-writes", action="store_true",
                        help="write up to 1 MiB at once, without the precautions a WalT 10 "
                             "server needs (docs/protocols.md section 11): it closes streams "
                             "and lines must be resent; for benchmarks/logs.py only")
    parser.add_argument("--max-line", type=int, default=65536, metavar="BYTES",
                        help="longer request lines are truncated (default: %(default)s)")
    parser.add_argument("--resend-window", type=non_negative_seconds, default=0.25, metavar="SECONDS",
                        help="after a broken connection, also resend lines the server's kernel "
                             "acknowledged this recently (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from walt_node.logstreams.daemon import DaemonConfig, LogsDaemon

    config = DaemonConfig(fifo=args.fifo, spool_dir=args.spool_dir, spool_size=args.spool_size,
                          max_line=args.max_line, idle_close=args.idle_close,
                          resend_window=args.resend_window, max_connections=args.max_connections,
                          max_streams=args.max_streams, paced=not args.unpaced_writes)
    try:
        daemon = LogsDaemon(config, server_address(args.server))
        return daemon.run()
    except ValueError as error:  # DaemonError and SpoolError: the CLI prints them
        raise WaltNodeError(str(error)) from error
