"""`walt-node log STREAM LINE...`: send one log line, like walt-log-echo."""

from __future__ import annotations

import argparse

from walt_node.errors import WaltNodeError

DESCRIPTION = """\
Send one log line to the WalT server, like the server-provided walt-log-echo.

The words of LINE are joined with single spaces (quote the line to keep
several spaces or tabs as written).  The line goes through the logs daemon
when it runs, otherwise straight to the server, otherwise into the spool
(delivered later); the command waits at most --timeout seconds for that.

example:
  walt-node log experiment "phase 1 done"
  walt-node log --ts 1700000000.5 experiment "a line with its own timestamp"
  walt-node log --timestamp 1700000000.5 experiment "the same, as walt-log-echo spells it"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stream", help="the log stream (no spaces)")
    parser.add_argument("line", nargs="+", help="the text of the line")
    parser.add_argument("--ts", "--timestamp", dest="ts", type=float, default=None, metavar="TS",
                        help="timestamp (seconds since the epoch; default: now); --timestamp is "
                             "walt-log-echo's spelling")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for delivery (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from walt_node import log

    try:
        log.echo(args.stream, " ".join(args.line), ts=args.ts)
    except ValueError as error:
        raise WaltNodeError(str(error), exit_status=2) from error
    if not log.flush(timeout=args.timeout):
        raise WaltNodeError(f"not delivered within {args.timeout:g} s; "
                            "it will be delivered or spooled at exit", exit_status=1)
    return 0
