"""The simulated WalT platform of the virtual node suite: images, boot files, simulator."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import vnode_image as image

from walt_node.sim import Simulator

MODEL = "pc-x86-64"
FIRST_IMAGE = "waltplatform/vnode-first:latest"
SECOND_IMAGE = "waltplatform/vnode-second:latest"
FIRST_ID = "f1r57000000000000000000000000000000000000000000000000000000000001"
SECOND_ID = "5ec0nd00000000000000000000000000000000000000000000000000000000002"
SECOND_MARKER = "walt.test.marker=second"




def _start_ipxe(marker: str) -> str:
    """A start.ipxe shaped like WalT's: variables, ${mac:hexhyp}, bare (fake TFTP) paths."""
    return (
        "#!ipxe\n"
        "# vnode test image: boots this machine's Debian kernel with the disk root\n"
        f"set marker {marker}\n"
        "set server ${next-server}\n"
        "kernel vmlinuz root=/dev/vda rw console=ttyS0,115200 panic=1 "
        f"walt.server.ip=${{server}} walt.node.model={MODEL} BOOTIF=01-${{mac:hexhyp}} "
        "walt.test.marker=${marker}\n"
        "initrd initrd.img\n"
        "boot\n"
    )


def make_boot_dir(root: Path, kernel: image.KernelFiles, marker: str) -> Path:
    model_dir = root / MODEL
    model_dir.mkdir(parents=True, exist_ok=True)
    for source, name in ((kernel.vmlinuz, "vmlinuz"), (kernel.initrd, "initrd.img")):
        target = model_dir / name
        if not target.exists():
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    (model_dir / "start.ipxe").write_text(_start_ipxe(marker))
    return root


@dataclass
class Platform:
    sim: Simulator
    kernel: image.KernelFiles
    work: Path


@dataclass
class Disk:
    path: Path
    setup_ran: bool  # False: walt-node-setup had not landed and the units were enabled by hand
