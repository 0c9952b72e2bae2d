"""``walt-node ipxe-plan``: show the boot plan /start.ipxe leads to, without loading anything."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from walt_node.commands.argtypes import name_value
from walt_node.errors import WaltNodeError

DESCRIPTION = """\
Interpret /start.ipxe and every script it chains, the way iPXE would (the
subset WalT images use: set, echo, chain, kernel, initrd, imgfree, boot,
sleep, isset, iseq, exit, ${var} expansion, || && ;), and print the boot
plan: kernel, initrd(s), kernel command line, the scripts run and what they
echoed.

By default the files come from the WalT server, for the image this node is
bound to now (fake TFTP for paths, HTTP for http:// URLs), and the iPXE
variables (mac, ip, netmask, gateway, hostname, next-server, manufacturer,
product) are preset from the node facts and the server's answer.  With
--boot-dir the files come from a local directory instead (an image's
/boot/<model>), which lets image builders check their scripts.

Exit status 0 with a plan; 1 with the error, naming the file and line.

Examples:
  walt-node ipxe-plan
  walt-node ipxe-plan --boot-dir /srv/image/boot/pc-x86-64 \\
      --set manufacturer=QEMU --set "product=Standard PC (i440FX + PIIX, 1996)"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--boot-dir", type=Path, metavar="DIR",
                        help="read the scripts and files from DIR (an image's /boot/<model>) "
                             "instead of asking the server")
    parser.add_argument("--set", dest="assignments", action="append", default=[], type=name_value,
                        metavar="NAME=VALUE", help="preset an iPXE variable (repeatable; "
                                                   "overrides the value from the node)")
    parser.add_argument("--start", default="/start.ipxe", metavar="PATH",
                        help="first script, a boot-root path or URL (default /start.ipxe)")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                        help="deadline for all server requests (default 20)")


def _local_variables() -> Dict[str, str]:
    """Variables this node can tell without a server (absent facts are left unset)."""
    from walt_node.facts import NodeFacts
    from walt_node.reboot.binding import Binding
    from walt_node.reboot.kexec_reboot import ipxe_variables

    facts = NodeFacts()
    empty = Binding("", "", None, None, True, "")
    variables: Dict[str, str] = {}
    for name in ("mac", "server_ip"):
        try:
            getattr(facts, name)
        except Exception:  # noqa: BLE001 - a missing fact leaves the variable unset
            return {}
    variables.update(ipxe_variables(facts, empty))
    return variables


def run(args: argparse.Namespace) -> int:
    from walt_node.reboot.ipxe import IpxeError, interpret
    from walt_node.text import printable

    overrides = dict(args.assignments)
    try:
        if args.boot_dir is not None:
            if not args.boot_dir.is_dir():
                raise WaltNodeError(f"--boot-dir {args.boot_dir}: not a directory", exit_status=2)
            from walt_node.reboot.source import LocalSource

            fetch = LocalSource(args.boot_dir)
            variables = {**_local_variables(), **overrides}
        else:
            fetch, variables = _server_source(args.timeout)
            variables.update(overrides)
        plan = interpret(fetch, variables, args.start)
    except IpxeError as error:
        raise WaltNodeError(f"iPXE script error: {printable(str(error))}") from error
    except _Unavailable as error:
        raise WaltNodeError(printable(str(error))) from error
    for message in plan.messages:
        print(f"echo: {printable(message)}")
    print(plan.describe())
    return 0


class _Unavailable(RuntimeError):
    pass


def _server_source(timeout: float):
    from walt_node.bounds import Deadline, DeadlineExceeded
    from walt_node.facts import FactInvalid, FactMissing, NodeFacts
    from walt_node.reboot.binding import BindingUnknown, check_binding
    from walt_node.reboot.kexec_reboot import ipxe_variables, optional
    from walt_node.reboot.source import ServerSource

    facts = NodeFacts()
    deadline = Deadline(timeout)
    try:
        server, mac = facts.server(), facts.mac
        binding = check_binding(server, mac, optional(lambda: facts.image_id) or None, deadline)
    except (FactMissing, FactInvalid, BindingUnknown, DeadlineExceeded) as error:
        raise _Unavailable(f"cannot ask the server: {error} (or use --boot-dir)") from None
    print("binding: " + binding.summary())
    source = ServerSource(server, mac, binding.node_ip or None, deadline)
    return source, ipxe_variables(facts, binding)
