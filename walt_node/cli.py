"""The `walt-node` umbrella command and the legacy program names.

Startup speed matters (`/bin/blink` and `walt-reboot` run on every request
from the server), so this module imports only the standard library and loads
a command's module only once that command is chosen.  Which commands exist
is said once, in :mod:`walt_node.commands`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from walt_node import __version__
from walt_node.commands import COMMANDS, command_parser, legacy_names
from walt_node.errors import WaltNodeError, report
from walt_node.text import printable


class _PrintableFormatter(logging.Formatter):
    """Log messages carry text of other parties (a mote's lines, a peer's names): what a
    terminal would act on is shown escaped, so it can neither drive the terminal nor fake
    a log line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _top_parser() -> argparse.ArgumentParser:
    lines = [f"  {name:<18} {cmd.summary}" for name, cmd in COMMANDS.items()]
    parser = argparse.ArgumentParser(
        prog="walt-node",
        description="walt-node: node-side services for WalT testbed images.",
        epilog="commands:\n" + "\n".join(lines)
        + "\n\nRun 'walt-node <command> --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"walt-node {__version__}")
    parser.add_argument("command", metavar="<command>", nargs="?", choices=sorted(COMMANDS),
                        help="one of the commands listed below")
    return parser


def run_command(name: str, argv: List[str], prog: str) -> int:
    parser, module = command_parser(name, prog)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(module.run(args) or 0)
    except WaltNodeError as error:  # every command's errors are printed here
        return report(prog, error)
    except KeyboardInterrupt:
        return 130


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _top_parser()
    # Options before the command belong to walt-node; everything after it to the command.
    split = next((i for i, word in enumerate(argv) if not word.startswith("-")), len(argv))
    args = parser.parse_args(argv[: split + 1])
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return run_command(args.command, argv[split + 1:], f"walt-node {args.command}")


def legacy_main() -> int:
    """Entry point of every legacy program name: the name it was started as says the command."""
    program = os.path.basename(sys.argv[0])
    name = legacy_names().get(program)
    if name is None:
        sys.stderr.write(f"{program}: not a walt-node program name; try 'walt-node --help'\n")
        return 2
    return run_command(name, sys.argv[1:], program)


if __name__ == "__main__":
    sys.exit(main())
