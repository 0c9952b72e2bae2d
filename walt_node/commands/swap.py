"""`walt-node swap` command; the work is in :mod:`walt_node.swap`."""

from __future__ import annotations

import sys
from typing import Optional, Tuple

from walt_node.bounds import Deadline
from walt_node.paths import Paths
from walt_node.swap import (
    DEFAULT_ATTACH_TIMEOUT,
    DEFAULT_DETACH_TIMEOUT,
    EXIT_MISSING,
    EXIT_OK,
    EXIT_SERVER,
    EXPORT_CHECK_TIMEOUT,
    EXPORT_NAME,
    Check,
    attach,
    check_export,
    detach,
    install_prerequisites,
    local_checks,
    swapped_nbd_devices,
)

DESCRIPTION = """\
Use the WalT server's NBD export 'swap-16G' as swap (WalT docs: "NBD swap",
optional feature of an image).

  status    say which prerequisite is present or missing: the nbd kernel
            module (loaded, built in, or loadable), nbd-client, mkswap,
            swapon, and the server's export (its size is read with a real
            NBD handshake; nothing is attached)
  attach    nbd-client -N swap-16G <server> /dev/nbdX -swap, mkswap, swapon,
            then grow the RAM overlay: mount -o remount,size=8G /run/walt/rootfs
            (only if that mount exists). Already attached: says so, exit 0.
            Every step is time-limited and all of them share --timeout.
  detach    swapoff, nbd-client -d; nothing attached: says so, exit 0. With
            --own only the swap 'attach' attached (what walt-nbd-swap.service
            stops), never one walt-init attached at boot
  install-prerequisites
            apt-get install the missing packages (nbd-client, util-linux)

Exit status: 0 done (or nothing to do), 1 a prerequisite is missing,
2 the server or its export is not available, 4 a step failed (undone).

Examples:
  walt-node swap status
  walt-node swap attach --timeout 15
  walt-node swap detach
  walt-node swap install-prerequisites --dry-run
"""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, help_text in (("status", "report each prerequisite"),
                            ("attach", "attach the server's swap export"),
                            ("detach", "detach the NBD swap")):
        action = sub.add_parser(name, help=help_text, description=help_text)
        default = DEFAULT_DETACH_TIMEOUT if name == "detach" else DEFAULT_ATTACH_TIMEOUT
        action.add_argument("--timeout", type=float, default=default, metavar="S",
                            help=f"time limit of the whole command (default {default:g})")
        if name == "detach":
            action.add_argument("--own", action="store_true",
                                help="only the swap 'walt-node swap attach' attached, not walt-init's")
        else:
            action.add_argument("--server", metavar="IP",
                                help="NBD server (default: the WalT server, from the node facts)")
            action.add_argument("--nbd-port", type=int, default=None, metavar="PORT",
                                help="NBD server port (default 10809)")
    install = sub.add_parser("install-prerequisites", help="apt-get install missing packages",
                             description="apt-get install nbd-client / util-linux if missing")
    install.add_argument("--dry-run", action="store_true", help="only print the apt-get command")


def _server(args) -> Tuple[Optional[str], str]:
    """(server ip, or None with the reason)."""
    if args.server:
        return args.server, ""
    from walt_node.facts import FactInvalid, FactMissing, NodeFacts

    try:
        return NodeFacts().server_ip, ""
    except (FactMissing, FactInvalid) as error:
        return None, str(error)


def run(args) -> int:
    from walt_node.protocols import NBD_DEFAULT_PORT

    paths = Paths.from_env()
    if args.action == "install-prerequisites":
        return install_prerequisites(args.dry_run)
    deadline = Deadline(args.timeout)
    if args.action == "detach":
        return detach(paths, deadline, own=args.own)
    port = args.nbd_port or NBD_DEFAULT_PORT
    server, problem = _server(args)
    if args.action == "status":
        return status(paths, server, problem, port, args.timeout)
    if server is None:
        print(f"NBD swap not attached: {problem}")
        return EXIT_SERVER
    return attach(paths, server, port, deadline)


def status(paths: Paths, server: Optional[str], problem: str, port: int, timeout: float,
           out=None) -> int:
    checks = local_checks(paths)
    if server is None:
        checks.append(Check(f"server export {EXPORT_NAME}", False, problem))
    else:
        checks.append(check_export(server, port, min(timeout, EXPORT_CHECK_TIMEOUT)))
    for check in checks:
        print(check.line(), file=out or sys.stdout)
    attached = swapped_nbd_devices(paths)
    print("NBD swap: " + (f"attached on {', '.join(attached)}" if attached else "not attached"),
          file=out or sys.stdout)
    return EXIT_OK if all(c.ok for c in checks) else EXIT_MISSING
