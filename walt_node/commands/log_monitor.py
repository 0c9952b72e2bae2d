"""`walt-node log-monitor` command; the work is in :mod:`walt_node.logstreams.monitor`."""

from __future__ import annotations

import os

from walt_node.errors import WaltNodeError
from walt_node.logstreams.monitor import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    Monitor,
    StreamLogger,
    flush_logs,
    stream_name,
    stream_problem,
)

DESCRIPTION = """\
Run COMMAND in a pseudo-terminal, show its output unchanged and log every
output line to the WalT log stream '<command name>.<pid>.monitor', between a
START and an END line (<pid> is the process id of walt-log-monitor).

The command runs as the calling user.  When stdin is a terminal, keystrokes
(Ctrl-C included) go to the command and the terminal is restored afterwards;
the command's terminal follows the size of yours.  When stdin is not a
terminal (a pipe, a file), the command reads it directly.

Exit status: the command's status, 128+N if it was killed by signal N,
127 if the command is not found, 126 if it cannot be executed.

example:
  walt-log-monitor python3 experiment.py --rounds 10
"""


def add_arguments(parser) -> None:
    parser.add_argument("command", nargs="...", metavar="COMMAND [ARG ...]",
                        help="program to run (looked up on PATH) and its arguments")
    parser.add_argument("--stream", metavar="NAME",
                        help="log stream to use instead of '<command name>.<pid>.monitor'")


def run(args) -> int:
    argv = list(args.command)
    prog = "walt-log-monitor"
    if not argv:
        raise WaltNodeError(f"no command given; usage: {prog} COMMAND [ARG ...]", exit_status=2)
    from walt_node import log as walt_log  # the background sender starts only when needed

    stream = args.stream or stream_name(argv[0], os.getpid())
    problem = stream_problem(stream)
    if problem:
        raise WaltNodeError(f"{problem}. Nothing was run.", exit_status=2)
    send = StreamLogger(walt_log, stream)
    monitor = Monitor(argv, on_line=send)
    try:
        monitor.start()
    except FileNotFoundError as error:
        raise WaltNodeError(f"command not found: '{argv[0]}' (check the name and your PATH). "
                            "Nothing was run.", exit_status=EXIT_NOT_FOUND) from error
    except PermissionError as error:
        raise WaltNodeError(f"cannot execute '{argv[0]}': {error.strerror}. Nothing was run.",
                            exit_status=EXIT_CANNOT_EXECUTE) from error
    except OSError as error:
        raise WaltNodeError(f"cannot start '{argv[0]}': {error}. Nothing was run.",
                            exit_status=EXIT_CANNOT_EXECUTE) from error
    send("START")
    try:
        status = monitor.run()
    finally:
        send("END")
        flush_logs(walt_log)
    return status
