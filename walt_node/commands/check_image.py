"""``walt-node check-image``: check an image against the WalT page "Creating a WalT image from scratch"."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from walt_node.commands.argtypes import name_value

DESCRIPTION = """\
Check that an OS image provides what WalT needs to boot it (features B1-B7 of
the WalT page "Creating a WalT image from scratch") and which optional
features (C1-C10) it offers, before trying it on a node.  Nothing of the image
is run: files are read, ELF headers parsed, iPXE scripts interpreted.

TARGET is an image root directory, or an image archive as `docker save`,
`podman save` or OCI tools write it (docker-archive, OCI archive, or an OCI
layout directory), read without a container engine: labels from the image
config, files from the layers applied in order.  A directory has no labels:
give them with --label as the Dockerfile will set them.

One line per feature: passes / missing / cannot tell, what is wrong and how to
fix it.  Exit status 0 only if every mandatory feature passes, 1 otherwise,
2 if TARGET cannot be read.

Examples:
  walt-node check-image image.tar                      # docker save / podman save output
  walt-node check-image /srv/rootfs --label walt.node.models=pc-x86-64 \\
      --label walt.server.minversion=10
  walt-node check-image image.tar --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=Path, metavar="TARGET",
                        help="image root directory, or docker/podman/OCI image archive")
    parser.add_argument("--label", dest="labels", action="append", default=[], type=name_value,
                        metavar="NAME=VALUE",
                        help="an image label (repeatable); for a directory, or to override the "
                             "archive's")
    parser.add_argument("--ipxe-set", dest="ipxe", action="append", default=[], type=name_value,
                        metavar="NAME=VALUE",
                        help="preset an iPXE variable for start.ipxe (repeatable), e.g. "
                             "--ipxe-set manufacturer=QEMU")
    parser.add_argument("--json", action="store_true", help="print a JSON object instead")


def run(args: argparse.Namespace) -> int:
    from walt_node.imagecheck import check_image

    report = check_image(args.target, dict(args.labels) or None, dict(args.ipxe))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1
