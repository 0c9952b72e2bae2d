"""`walt-node logs-daemon` (legacy name `walt-logs-daemon`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Tuple

from walt_node.paths import Paths

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "WALT_LOGS_SPOOL_DIR"
SPOOL_SIZE_ENV = "WALT_LOGS_SPOOL_SIZE"

DESCRIPTION = """\
Forward the log requests written to the node's logs FIFO to the WalT server.

The daemon creates /var/lib/walt/logs.fifo (under WALT_NODE_ROOT, mode 0622:
anyone may write, as walt-log-echo does) and accepts the requests
'LOG <stream> <text>' (stamped on reception) and 'TSLOG <ts> <stream> <text>'.
Each stream goes over its own connection to the server's logs port, with
the lines' timestamps inside.  Lines the server cannot take are kept in a
bounded spool on disk and delivered, in order and with their original
timestamps, when it is back (also after a restart of the daemon).
MONITOR requests are refused: use walt-node's walt-log-monitor.

It tells systemd when it is ready and feeds its watchdog (Type=notify).

example:
  walt-node logs-daemon --spool-size 128M
"""

_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}


def parse_size(text: str) -> int:
    """'64M', '512K', '1G' or a number of bytes."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in "KMG" else ""
    number = value[:-1] if unit else value
    try:
        size = int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid size '{text}': use a number of bytes or a number with K, M or G") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': must be positive")
    return size


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid duration '{text}': give a number of seconds >= 0")
    return value


def parse_server(text: str) -> Tuple[str, Optional[int]]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"invalid server '{text}': expected HOST or HOST:PORT")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    paths = Paths.from_env()
    env_dir = os.environ.get(SPOOL_DIR_ENV)
    env_size = os.environ.get(SPOOL_SIZE_ENV)
    parser.add_argument("--fifo", type=Path, default=paths.logs_fifo,
                        help="the FIFO to create and read (default: %(default)s)")
    parser.add_argument("--spool-dir", type=Path, default=Path(env_dir) if env_dir else paths.logs_spool,
                        help=f"where undelivered lines wait (default: %(default)s; env {SPOOL_DIR_ENV})")
    parser.add_argument("--spool-size", type=parse_size, default=env_size or "64M",
                        help=f"spool size limit, e.g. 64M (default: 64M; env {SPOOL_SIZE_ENV}); "
                             "when full, the oldest lines are replaced by a notice")
    parser.add_argument("--server", type=parse_server, default=None, metavar="HOST[:PORT]",
                        help="the server's logs port (default: from the node facts, "
                             "see 'walt-node facts')")
    parser.add_argument("--idle-close", type=positive_seconds, default=300.0, metavar="SECONDS",
                        help="close a stream's connection (CLOSE) after this idle time "
                             "(default: %(default)s)")
    parser.add_argument("--max-line", type=int, default=65536, metavar="BYTES",
                        help="longer request lines are truncated (default: %(default)s)")
    parser.add_argument("--resend-window", type=positive_seconds, default=0.25, metavar="SECONDS",
                        help="after a broken connection, also resend lines the server's kernel "
                             "acknowledged this recently (default: %(default)s)")


def server_address(server: Optional[Tuple[str, Optional[int]]]) -> Callable[[], Tuple[str, int]]:
    """Where to send logs, looked up when a connection is made (facts may appear later)."""
    def address() -> Tuple[str, int]:
        from walt_node.facts import NodeFacts

        facts = NodeFacts()
        if server is None:
            return facts.server_ip, facts.logs_port
        host, port = server
        return host, port if port is not None else facts.logs_port

    return address


def run(args: argparse.Namespace) -> int:
    from walt_node.logs.daemon import DaemonConfig, DaemonError, LogsDaemon
    from walt_node.logs.spool import SpoolError

    config = DaemonConfig(fifo=args.fifo, spool_dir=args.spool_dir, spool_size=args.spool_size,
                          max_line=args.max_line, idle_close=args.idle_close,
                          resend_window=args.resend_window)
    try:
        daemon = LogsDaemon(config, server_address(args.server))
        return daemon.run()
    except (DaemonError, SpoolError, ValueError) as error:
        sys.stderr.write(f"walt-logs-daemon: {error}\n")
        return 1
