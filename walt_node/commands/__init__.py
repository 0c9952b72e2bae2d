"""The one registry of walt-node's commands.

The `walt-node` umbrella (:mod:`walt_node.cli`), the console scripts of the
package (``setup.py``) and the command links ``walt-node-setup`` writes into
images all come from :data:`COMMANDS`.  This module imports only the standard
library: it is read on every start of every command.

A command module (``walt_node.commands.<name>``) is thin: it provides
    DESCRIPTION: str                  -- shown by --help
    add_arguments(parser) -> None     -- declares its options
    run(args) -> int                  -- calls the library, prints, returns the exit status
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Tuple


class Command(NamedTuple):
    module: str  # below walt_node.commands
    summary: str
    legacy: Tuple[str, ...] = ()  # historical program names images and server scripts call


COMMANDS: Dict[str, Command] = {
    "facts": Command("facts", "show the node facts walt-node reads, and their source"),
    "sim": Command("sim", "run a loopback WalT server simulator"),
    "demo": Command("demo", "run a self-contained demo against the simulator"),
    "logs-daemon": Command("logs_daemon", "forward the log FIFO to the server", ("walt-logs-daemon",)),
    "log": Command("log", "send one log line (like walt-log-echo)"),
    "log-monitor": Command("log_monitor", "run a command, logging its output",
                          ("walt-log-monitor", "walt-monitor")),  # walt-monitor: upstream's old name
    "serial-autolog": Command("serial_autolog", "log a serial sensor mote's output",
                              ("walt-serial-autolog",)),
    "services": Command("services", "run the long-running services in one process (walt-logs unit)"),
    "journal-forward": Command("journal_forward", "forward systemd journal units to streams"),
    "ipxe-kexec-reboot": Command("ipxe_kexec_reboot", "kexec into the currently bound image",
                                 ("walt-ipxe-kexec-reboot",)),
    "ipxe-plan": Command("ipxe_plan", "interpret /start.ipxe into a boot plan"),
    "reboot": Command("reboot", "reboot the node the best way (/bin/walt-reboot)"),
    "blink": Command("blink", "make an LED blink (1) or restore it (0)"),
    "swap": Command("swap", "attach or detach the server's NBD swap"),
    "mdns": Command("mdns", "publish and resolve <node>.local names"),
    "lldp": Command("lldp", "read LLDP neighbours and report them to the server"),
    "ptp-slave": Command("ptp_slave", "run ptp4l as a PTP slave of the WalT server"),
    "cpuinfo": Command("cpuinfo", "capture /proc/cpuinfo for an image's /etc/cpuinfo"),
    "check-image": Command("check_image", "check an image provides what WalT needs to boot it"),
    "setup": Command("setup", "install walt-node's units and commands in an image", ("walt-node-setup",)),
}


# Scripts the WalT server calls by absolute path in the image's /bin (docs/protocols.md §7),
# each running one command: name -> command. Setup and the Debian package install them.
BIN_SCRIPTS: Dict[str, str] = {
    "blink": "blink",
    "walt-reboot": "reboot",
    "walt-network-reboot": "reboot",  # the server's hooks (docs/protocols.md §7)
    "walt-hybrid-reboot": "reboot",
}


def legacy_names() -> Dict[str, str]:
    """Historical program name -> command name."""
    return {program: name for name, command in COMMANDS.items() for program in command.legacy}


def console_scripts() -> Tuple[str, ...]:
    """Entry points of the package: the umbrella and every legacy name."""
    return ("walt-node = walt_node.cli:main",
            *(f"{program} = walt_node.cli:legacy_main" for program in legacy_names()))


def command_parser(name: str, prog: str):
    """The argument parser of command ``name`` and its module: for the CLI, for manual
    pages, and for setup checking the options an image passes to a service."""
    import argparse
    import importlib

    from walt_node import __version__

    module = importlib.import_module(f"walt_node.commands.{COMMANDS[name].module}")
    parser = argparse.ArgumentParser(
        prog=prog,
        description=module.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"walt-node {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    return parser, module
