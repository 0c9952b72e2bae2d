"""A sample platform (one node, two images) and a matching node root.

Used by the test fixtures, ``walt-node demo`` and ``walt-node sim`` run without
any node or image: everything is created under a directory the caller owns.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, Optional

from walt_node.sim.config import SimConfig, SimImage, SimNode

NODE_MAC = "52:54:00:12:34:56"
NODE_NAME = "node1"
NODE_IP = "127.0.0.1"  # loopback connections come from here, so the sim names them node1
NODE_MODEL = "pc-x86-64"
DEFAULT_IMAGE = "waltplatform/pc-x86-64-default:latest"
DEFAULT_IMAGE_ID = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2"
OTHER_IMAGE = "waltplatform/pc-x86-64-other:latest"
OTHER_IMAGE_ID = "f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5"

START_IPXE = """#!ipxe
# sample boot script of image {fullname}
echo booting {fullname}
set cmdline root=/dev/nfs walt.node.model={model} walt.server.ip=${{next-server}} walt.sample.image={fullname}
kernel /kernel ${{cmdline}} init=/bin/walt-init BOOTIF=01-${{mac:hexhyp}} || reboot
initrd /initrd
boot
"""


def sample_kernel(fullname: str) -> bytes:
    """Not bootable, but shaped like an x86 bzImage (the 'HdrS' setup header at
    0x202), so a kexec --dry-run accepts it as a kernel; names the image."""
    data = bytearray(1024)
    data[0x202:0x206] = b"HdrS"
    text = f"sample kernel of {fullname}\n".encode()
    return bytes(data) + text


def sample_initrd(fullname: str) -> bytes:
    """A real (gzip-compressed, newc cpio) initramfs holding one file naming the image."""
    import gzip

    content = f"sample initrd of {fullname}\n".encode()
    return gzip.compress(_cpio_newc([("image-name", content)]), mtime=0)


def _cpio_newc(files: list[tuple[str, bytes]]) -> bytes:
    def entry(name: str, data: bytes, mode: int) -> bytes:
        raw_name = name.encode() + b"\0"
        fields = [1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw_name), 0]
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        blob = header + raw_name
        blob += b"\0" * (-len(blob) % 4) + data
        return blob + b"\0" * (-len(blob) % 4)

    archive = b"".join(entry(name, data, 0o100644) for name, data in files)
    return archive + entry("TRAILER!!!", b"", 0)


def write_boot_dir(boot_dir: Path, fullname: str, model: str = NODE_MODEL) -> Path:
    """An image's /boot holding <model>/start.ipxe, kernel and initrd naming the image."""
    model_dir = boot_dir / model
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "start.ipxe").write_text(START_IPXE.format(fullname=fullname, model=model))
    (model_dir / "kernel").write_bytes(sample_kernel(fullname))
    (model_dir / "initrd").write_bytes(sample_initrd(fullname))
    return boot_dir


def sample_config(base: Path) -> SimConfig:
    """node1 (127.0.0.1) bound to the default image; a second image to re-bind it to."""
    images = []
    for fullname, image_id, dirname in ((DEFAULT_IMAGE, DEFAULT_IMAGE_ID, "default"),
                                        (OTHER_IMAGE, OTHER_IMAGE_ID, "other")):
        boot_dir = write_boot_dir(Path(base) / "images" / dirname / "boot", fullname)
        images.append(SimImage(fullname=fullname, id=image_id, boot_dir=boot_dir))
    node = SimNode(mac=NODE_MAC, name=NODE_NAME, ip=NODE_IP, model=NODE_MODEL,
                   image=DEFAULT_IMAGE, conf={})
    return SimConfig(nodes=[node], images=images)


def walt_env_text(values: Dict[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


def make_node_root(root: Path, server_ip: str = "127.0.0.1", logs_port: int = 12347,
                   rpc_port: int = 12345, http_port: Optional[int] = None,
                   mac: str = NODE_MAC, model: str = NODE_MODEL,
                   image_id: str = DEFAULT_IMAGE_ID, hostname: str = NODE_NAME) -> Path:
    """A WALT_NODE_ROOT as a WalT server leaves it: /bin/walt-env, /proc/cmdline,
    /etc/hostname, and the empty directories walt-node services use."""
    root = Path(root)
    for directory in ("bin", "etc/walt", "proc", "persist", "run", "tmp", "var/lib/walt",
                      "sys/class/leds", "sys/devices/virtual/dmi/id"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    env = {"walt_server_ip": server_ip, "walt_server_rpc_port": str(rpc_port),
           "walt_server_logs_port": str(logs_port),
           "walt_server_notify_bootup_port": str(logs_port),
           "walt_image_id": image_id, "walt_image_size_kib": "123456"}
    if http_port is not None:  # not in a real walt-env (always 80 there); needed off-testbed
        env["walt_server_http_port"] = str(http_port)
    (root / "bin" / "walt-env").write_text(walt_env_text(env))
    (root / "proc" / "cmdline").write_text(
        f"root=/dev/nfs walt.node.model={model} walt.server.ip={server_ip} "
        f"walt.node.mac={mac} init=/bin/walt-init\n")
    (root / "etc" / "hostname").write_text(hostname + "\n")
    return root
