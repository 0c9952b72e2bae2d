"""`walt-node ipxe-kexec-reboot` command; the work is in :mod:`walt_node.reboot.kexec_reboot`."""

from __future__ import annotations

import argparse

from walt_node.commands.argtypes import non_negative_seconds, positive_seconds
from walt_node.paths import Paths
from walt_node.reboot.kexec_reboot import (
    DEFAULT_DEADLINE,
    DEFAULT_GRACE,
    LOG_STREAM,
    Options,
    kexec_reboot,
)

DESCRIPTION = f"""\
Reboot this node straight into the kernel of the image it is bound to NOW,
with kexec, skipping firmware and bootloader (docs/protocols.md §7, §8).

Steps:
  1. read the node facts (MAC, model, server, booted image id, boot mode);
  2. check kexec is possible here: a 'kexec' program on PATH and a kernel with
     kexec support (/sys/kernel/kexec_loaded exists);
  3. ask the server which image the node is bound to now and whether kexec is
     allowed for it (conf "kexec.allow"): web API first, then the VSAPI API
     session; say whether the reboot keeps or changes the image, on stdout and
     in the WalT log stream '{LOG_STREAM}';
  4. interpret /start.ipxe, as the server serves it for the current binding
     (fake TFTP for paths, HTTP for http:// URLs), into kernel, initrd(s) and
     command line;
  5. download kernel and initrd(s) to a temporary directory and check they
     are non-empty and look like a kernel (bzImage, ARM64 Image, zImage, gzip,
     ELF) and an initrd (cpio, gzip, xz, zstd, lz4);
  6. 'kexec -l KERNEL --initrd INITRD --command-line CMDLINE', flush the
     filesystems, then jump: 'kexec -e' in network boot mode, 'systemctl kexec'
     (clean shutdown) in hybrid boot modes.

Whenever it cannot be sure (server unreachable, node or binding unknown,
kexec.allow false, no kexec program or kernel support, script, download or
sanity-check error, deadline passed) it never jumps: it prints why, then
falls back to a normal 'reboot' (or, with --on-failure exit, exits with
status 2 so the caller hard-reboots the node).  Steps 1-6 must finish within
--deadline seconds (default {DEFAULT_DEADLINE:g}); each network step is also
bounded on its own.  The WalT server allows 60 s for a reboot.

Exit status: on success it does not return (the node reboots).  1: the
fallback reboot was requested but the node is still running after --grace
seconds, or it failed; 2: kexec was not possible and --on-failure exit was
given.  With --dry-run: 0 if a kexec reboot would happen, 1 if not.

Example:
  walt-ipxe-kexec-reboot --dry-run
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print the binding check and the boot plan; load nothing, reboot nothing")
    parser.add_argument("--on-failure", choices=("reboot", "exit"), default="reboot",
                        help="when kexec is not possible: run 'reboot' (default) or exit with "
                             "status 2 so the boot scripts' hard reboot follows")
    parser.add_argument("--deadline", type=positive_seconds, default=DEFAULT_DEADLINE, metavar="SECONDS",
                        help=f"time allowed for steps 1-6 (default {DEFAULT_DEADLINE:g})")
    parser.add_argument("--grace", type=non_negative_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                        help="after a successful 'reboot' or 'systemctl kexec' request, how long "
                             f"to wait for the OS to stop us before giving up (default "
                             f"{DEFAULT_GRACE:g})")
    parser.add_argument("--start", default="/start.ipxe", metavar="PATH",
                        help="first script, a boot-root path or URL (default /start.ipxe)")






def run(args: argparse.Namespace) -> int:
    options = Options(dry_run=args.dry_run, on_failure=args.on_failure, deadline=args.deadline,
                      grace=args.grace, start=args.start)
    return kexec_reboot(Paths.from_env(), options)
