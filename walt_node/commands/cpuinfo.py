"""``walt-node cpuinfo``: capture a node's /proc/cpuinfo for its image's /etc/cpuinfo."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Print (or write to FILE) this node's /proc/cpuinfo: what an image maintainer
puts in the image as /etc/cpuinfo (WalT page "Creating a WalT image from
scratch", optional feature 8).  `walt image shell` runs on the server's CPU;
with /etc/cpuinfo in the image, the server shows it as /proc/cpuinfo there,
so programs that guess the architecture from it (yum...) see the node's CPU.

Run it on a booted node of the image's model, then install the file in the
image with `walt-node setup --cpuinfo FILE`.

Examples:
  walt-node cpuinfo > rpi-4-b.cpuinfo          # on the node
  walt-node cpuinfo --output /persist/cpuinfo
  walt-node setup --cpuinfo rpi-4-b.cpuinfo    # in the image (walt image shell / Dockerfile)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")


def run(args: argparse.Namespace) -> int:
    from walt_node.cpuinfo import capture
    from walt_node.files import write_atomically
    from walt_node.paths import Paths

    text = capture(Paths.from_env())
    if args.output:
        write_atomically(args.output, text, 0o644)
    else:
        sys.stdout.write(text)
    return 0
