"""The base of walt-node's own errors.

A :class:`WaltNodeError` says what is wrong and what to do, in its message,
and carries the exit status a command returns for it; the command line
(:func:`walt_node.cli.run_command`) prints it, in one place.
"""

from __future__ import annotations


class WaltNodeError(Exception):
    exit_status = 1
