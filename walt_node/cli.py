"""The `walt-node` umbrella command and the legacy command names.

Startup speed matters (`/bin/blink` and `walt-reboot` run on every request
from the server), so this module imports only the standard library and loads
a subcommand's module only once that subcommand is chosen.

A subcommand module provides:
    DESCRIPTION: str                  -- shown by --help
    add_arguments(parser) -> None     -- declares its options
    run(args) -> int                  -- does the work, returns the exit status
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Dict, List, NamedTuple, Optional

from walt_node import __version__

EXIT_NOT_AVAILABLE = 3


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: Dict[str, Command] = {
    "facts": Command("walt_node.facts_cmd", "show the node facts walt-node reads, and their source"),
    "sim": Command("walt_node.sim.cli", "run a loopback WalT server simulator"),
    "demo": Command("walt_node.demo", "run a self-contained demo against the simulator"),
    "logs-daemon": Command("walt_node.logs.daemon_cmd", "forward the log FIFO to the server"),
    "log": Command("walt_node.logs.log_cmd", "send one log line (like walt-log-echo)"),
    "log-monitor": Command("walt_node.logs.monitor", "run a command, logging its output"),
    "serial-autolog": Command("walt_node.logs.serial", "log a serial sensor mote's output"),
    "journal-forward": Command("walt_node.logs.journal", "forward systemd journal units to streams"),
    "ipxe-kexec-reboot": Command("walt_node.reboot.kexec_cmd", "kexec into the currently bound image"),
    "ipxe-plan": Command("walt_node.reboot.plan_cmd", "interpret /start.ipxe into a boot plan"),
    "reboot": Command("walt_node.reboot.reboot_cmd", "reboot the node the best way (/bin/walt-reboot)"),
    "blink": Command("walt_node.blink", "make an LED blink (1) or restore it (0)"),
    "swap": Command("walt_node.swap", "attach or detach the server's NBD swap"),
    "mdns": Command("walt_node.mdns", "publish and resolve <node>.local names"),
    "lldp": Command("walt_node.lldp", "read LLDP neighbours and report them to the server"),
    "setup": Command("walt_node.setup_cmd", "install walt-node's units and commands in an image"),
}


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )


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


def _load(name: str):
    module_name = COMMANDS[name].module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return None


def run_command(name: str, argv: List[str], prog: str) -> int:
    module = _load(name)
    if module is None:
        sys.stderr.write(
            f"{prog}: not available yet in walt-node {__version__}: this feature "
            f"({COMMANDS[name].summary}) has not landed. Nothing was done.\n"
        )
        return EXIT_NOT_AVAILABLE
    parser = argparse.ArgumentParser(
        prog=prog,
        description=module.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"walt-node {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(module.run(args) or 0)
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


def _legacy(name: str, prog: str) -> int:
    return run_command(name, sys.argv[1:], prog)


def setup_main() -> int:
    return _legacy("setup", "walt-node-setup")


def logs_daemon_main() -> int:
    return _legacy("logs-daemon", "walt-logs-daemon")


def log_monitor_main() -> int:
    return _legacy("log-monitor", "walt-log-monitor")


def ipxe_kexec_reboot_main() -> int:
    return _legacy("ipxe-kexec-reboot", "walt-ipxe-kexec-reboot")


def serial_autolog_main() -> int:
    return _legacy("serial-autolog", "walt-serial-autolog")


if __name__ == "__main__":
    sys.exit(main())
