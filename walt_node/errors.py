"""The base of walt-node's own errors, and the one place that prints them.

A :class:`WaltNodeError` says what is wrong and what to do, in its message,
and carries the exit status a command returns for it; :func:`report` prints
it (the command line, :func:`walt_node.cli.run_command`, and the fast
``/bin/blink`` entry point both go through it).
"""

from __future__ import annotations

import sys
from typing import Optional


class WaltNodeError(Exception):
    exit_status = 1

    def __init__(self, *args: object, exit_status: Optional[int] = None):
        super().__init__(*args)
        if exit_status is not None:
            self.exit_status = exit_status


def report(prog: str, error: WaltNodeError) -> int:
    """Print ``error`` as ``<prog>: <message>``; the exit status to return for it."""
    sys.stderr.write(f"{prog}: {error}\n")
    return error.exit_status
