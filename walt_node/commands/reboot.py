"""`walt-node reboot` command; the work is in :mod:`walt_node.reboot.node_reboot`."""

from __future__ import annotations

import argparse
import logging
import time

from walt_node.commands.argtypes import non_negative_seconds, positive_seconds
from walt_node.config import ConfigError
from walt_node.paths import Paths
from walt_node.reboot.node_reboot import (
    DEFAULT_GRACE,
    HOOK_TIMEOUT,
    HOOKS_BUDGET,
    KEXEC_DEADLINE_END,
    KEXEC_MIN_DEADLINE,
    METHODS,
    SYNC_TIMEOUT,
    os_reboot,
    reboot_method,
    run_hooks,
)

log = logging.getLogger(__name__)

DESCRIPTION = f"""\
Reboot this WalT node the best way available; the server runs this as
/bin/walt-reboot when a user asks for a reboot (docs/protocols.md §7).

  1. flush filesystems: sync(2), then syncfs(2) on /persist (the NFS share
     whose files must survive), each bounded to {SYNC_TIMEOUT:g} s;
  2. run the image's pre-reboot hooks: the executable files of
     /etc/walt/reboot.d/, in name order, each limited to --hook-timeout
     seconds (default {HOOK_TIMEOUT:g}) and all to {HOOKS_BUDGET:g} s; a failing hook is
     reported and the reboot goes on;
  3. reboot: with method 'kexec', the kexec path of walt-ipxe-kexec-reboot
     (binding check, /start.ipxe of the bound image, kexec; a normal reboot
     when anything is uncertain); with method 'reboot' (the default), the
     OS 'reboot' command.

The method comes from /etc/walt/reboot.conf ("method = kexec" or
"method = reboot"; '#' starts a comment) unless --method is given.

The server's boot scripts call one of three hooks (docs/protocols.md §7),
all installed by walt-node-setup and all running this command:
  /bin/walt-network-reboot   network boot mode (--boot-mode network): kexec
                             (kexec -e) into the image the node is bound to,
                             else 'busybox reboot -f', as the server's own
                             soft reboot (nothing to shut down: the root is
                             read-only plus a RAM overlay);
  /bin/walt-hybrid-reboot    hybrid modes (--boot-mode hybrid): a clean
                             shutdown; kexec only through the init system
                             (systemctl kexec, kernel loaded first), else
                             'reboot';
  /bin/walt-reboot           the legacy name (network mode, older servers).
The two hooks try kexec unless reboot.conf says "method = reboot"; a node
whose kexec.allow setting is false always gets a plain reboot.

It never returns when the reboot works.  If the reboot command returns, it
waits --grace seconds (default {DEFAULT_GRACE:g}) for the OS to stop it, then exits
with status 1; when the reboot command fails it exits 1 at once, so the
server's boot scripts hard-reboot the node.

Example:
  walt-reboot                 # what the server runs
  walt-node reboot --method kexec
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=METHODS,
                        help="override the method of /etc/walt/reboot.conf")
    parser.add_argument("--boot-mode", choices=("network", "hybrid"),
                        help="reboot as the hook of this boot mode does (the /bin hooks pass it; "
                             "default: the node's boot mode, and the method of reboot.conf)")
    parser.add_argument("--hook-timeout", type=positive_seconds, default=HOOK_TIMEOUT, metavar="SECONDS",
                        help=f"time limit of each hook (default {HOOK_TIMEOUT:g})")
    parser.add_argument("--grace", type=non_negative_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="how long to wait for the OS to stop us once a reboot is requested "
                             f"(default {DEFAULT_GRACE:g})")


def run(args: argparse.Namespace) -> int:
    from walt_node.reboot import kexec

    started = time.monotonic()
    paths = Paths.from_env()
    try:
        # a boot mode's hook tries kexec unless the image says otherwise
        method = args.method or reboot_method(paths, "kexec" if args.boot_mode else "reboot")
    except ConfigError as error:
        log.warning("%s; using method 'reboot'", error)
        method = "reboot"
    if not kexec.sync_filesystems(paths, SYNC_TIMEOUT):
        log.warning("filesystem sync still running after %g s; going on", SYNC_TIMEOUT)
    run_hooks(paths.reboot_hooks, args.hook_timeout, HOOKS_BUDGET)
    if method == "kexec":
        from walt_node.reboot.kexec_reboot import Options, kexec_reboot

        # the server allows 60 s in all: keep room for the fallback reboot
        deadline = max(KEXEC_MIN_DEADLINE, KEXEC_DEADLINE_END - (time.monotonic() - started))
        return kexec_reboot(paths, Options(on_failure="reboot", grace=args.grace,
                                           deadline=deadline, boot_mode=args.boot_mode or ""))
    return os_reboot(args.grace, immediate=args.boot_mode == "network")
