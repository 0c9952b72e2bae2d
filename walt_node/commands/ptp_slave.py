"""``walt-node ptp-slave``: run linuxptp's ptp4l as a PTP slave of the WalT server."""

from __future__ import annotations

import argparse

from walt_node.errors import WaltNodeError

DESCRIPTION = """\
Become ptp4l (linuxptp) following the WalT server, the PTP master of domain
42 (WalT page "Creating a WalT image from scratch", optional feature 2), on
the network interface that routes to the server.  The walt-ptp service that
`walt-node setup --time-sync ptp` installs runs this at boot, with the
configuration it writes to /etc/walt/ptp4l.conf (domain 42, slave only,
software timestamps).

Exit status 1 if the server address or its interface cannot be found, or
ptp4l is missing (apt-get install linuxptp).

Examples:
  walt-node ptp-slave -f /etc/walt/ptp4l.conf
  walt-node ptp-slave -f /etc/walt/ptp4l.conf --interface eth0 --measure-only
"""


class NoInterface(WaltNodeError):
    """ptp4l cannot be started: no server, no route to it, or no ptp4l."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from walt_node.paths import Paths

    default = str(Paths.from_env().ptp4l_conf)
    parser.add_argument("-f", "--config", default=default, metavar="FILE",
                        help=f"ptp4l configuration (default {default})")
    parser.add_argument("--interface", metavar="NAME",
                        help="network interface (default: the one that routes to the server)")
    parser.add_argument("--measure-only", action="store_true",
                        help="measure the offset to the server but never adjust this clock "
                             "(ptp4l's free_running), to try the synchronisation out")


def run(args: argparse.Namespace) -> int:
    from walt_node import runner
    from walt_node.facts import FactInvalid, FactMissing, NodeFacts, interface_routing_to

    interface = args.interface
    if interface is None:
        try:
            server_ip = NodeFacts().server().ip
        except (FactMissing, FactInvalid) as error:
            raise NoInterface(f"cannot tell which interface reaches the WalT server: {error}; "
                              "give it with --interface") from None
        interface = interface_routing_to(server_ip)
        if interface is None:
            raise NoInterface(f"no route to the WalT server {server_ip}: the network is not up yet "
                              "(the service retries), or give --interface")
    argv = ["ptp4l", "-f", args.config, "-i", interface]
    if args.measure_only:
        argv += ["--free_running", "1"]
    try:
        runner.replace_process(argv, "apt-get install linuxptp")
    except runner.CommandMissing as error:
        raise NoInterface(str(error)) from None
    return 1  # not reached: ptp4l replaced this process
