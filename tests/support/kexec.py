"""Helpers shared by the reboot tests (no tests here): the WalT-shaped fixture images
served by a simulator, a node root that matches, and recorder programs on PATH."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from walt_node.sim import SimConfig, SimImage, SimNode, Simulator
from walt_node.sim.sample import make_node_root

DATA = Path(__file__).resolve().parent.parent / "data" / "ipxe"
MAC = "52:54:00:12:34:56"
NODE_IP = "127.0.0.1"
DEFAULT_IMAGE = "waltplatform/pc-x86-64-default:latest"
DEFAULT_ID = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2"
OTHER_IMAGE = "waltplatform/pc-x86-64-other:latest"
OTHER_ID = "f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1f6e5"
SIM_NETMASK = "255.0.0.0"
SIM_GATEWAY = "127.0.0.254"
QEMU_PRODUCT = "Standard PC (i440FX + PIIX, 1996)"
# what the node's previous iPXE boot left in /proc/cmdline (ip=client:server:gw:mask:host)
CMDLINE_GATEWAY = "10.1.0.254"
CMDLINE_NETMASK = "255.255.0.0"
BOOT_TIMEOUT = 30  # no test command may run longer than this


def boot_dir(image: str) -> Path:
    return DATA / image / "boot"


def model_file(image: str, name: str) -> bytes:
    return (boot_dir(image) / "pc-x86-64" / name).read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def staged_initrd_hash(image: str) -> str:
    """The single initrd kexec gets: the image's initrd, padded to 4 bytes."""
    data = model_file(image, "initrd.img")
    return sha256(data + b"\0" * (-len(data) % 4))


def expected_cmdline(image: str = "default", gateway: str = CMDLINE_GATEWAY,
                     netmask: str = CMDLINE_NETMASK, qemu: bool = True) -> str:
    console = ("console=ttyS1,9600 walt.image=other" if image == "other"
               else "console=ttyS0,115200n8" if qemu else "console=tty0 console=ttyS0,115200n8")
    # the QEMU submodel file of the default image adds "quiet"; elsewhere the empty
    # ${extra_params} token still adds its separating space, as in iPXE
    extra = "quiet" if (qemu and image == "default") else ""
    return (f"root=/dev/nfs nfsroot=127.0.0.1:/var/lib/walt/nodes/{MAC}/fs,vers=3 {console} "
            f"walt.node.model=pc-x86-64 walt.server.ip=127.0.0.1 init=/bin/walt-init "
            f"ip={NODE_IP}:127.0.0.1:{gateway}:{netmask}:node1::off "
            f"BOOTIF=01-52-54-00-12-34-56 {extra}")


def fixture_config() -> SimConfig:
    images = [SimImage(fullname=DEFAULT_IMAGE, id=DEFAULT_ID, boot_dir=boot_dir("default")),
              SimImage(fullname=OTHER_IMAGE, id=OTHER_ID, boot_dir=boot_dir("other"))]
    node = SimNode(mac=MAC, name="node1", ip=NODE_IP, model="pc-x86-64", image=DEFAULT_IMAGE,
                   conf={}, netmask=SIM_NETMASK, gateway=SIM_GATEWAY)
    return SimConfig(nodes=[node], images=images)


def fixture_simulator() -> Simulator:
    """A simulator serving the fixture images (use it with ``with``)."""
    return Simulator(fixture_config(), host="127.0.0.1")


def dead_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_node_root(root: Path, sim: Simulator, http_port: Optional[int] = None,
                      mac: str = MAC, boot_mode: Optional[str] = None,
                      kexec_support: bool = True, qemu: bool = True) -> Path:
    make_node_root(root, server_ip=sim.host, logs_port=sim.logs_port, rpc_port=sim.rpc_port,
                   http_port=http_port or sim.http_port, mac=mac, image_id=DEFAULT_ID)
    if boot_mode:
        with open(root / "bin" / "walt-env", "a") as env:
            env.write(f"export walt_boot_mode={boot_mode}\n")
    (root / "proc" / "cmdline").write_text(
        f"root=/dev/nfs walt.node.model=pc-x86-64 walt.server.ip={sim.host} walt.node.mac={mac} "
        f"init=/bin/walt-init ip={NODE_IP}:{sim.host}:{CMDLINE_GATEWAY}:{CMDLINE_NETMASK}:node1::off\n")
    dmi = root / "sys" / "devices" / "virtual" / "dmi" / "id"
    (dmi / "sys_vendor").write_text("QEMU\n" if qemu else "Dell Inc.\n")
    (dmi / "product_name").write_text(QEMU_PRODUCT + "\n" if qemu else "OptiPlex 7010\n")
    if kexec_support:
        (root / "sys" / "kernel").mkdir(parents=True, exist_ok=True)
        (root / "sys" / "kernel" / "kexec_loaded").write_text("0\n")
    return root


RECORDER = """#!{python}
# test recorder: logs its name, arguments and the sha256 of file arguments
import hashlib, json, os, signal, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
files = {{a: hashlib.sha256(open(a, "rb").read()).hexdigest() for a in args if os.path.isfile(a)}}
with open(os.environ["WALT_TEST_RECORD"], "a") as record:
    record.write(json.dumps({{"prog": name, "args": args, "files": files}}) + "\\n")
call = " ".join([name] + args)
if call in os.environ.get("WALT_TEST_STOPS_CALLER", "").split(","):
    os.kill(os.getppid(), signal.SIGKILL)  # like a real jump/reboot: the caller never resumes
sys.exit(int(os.environ.get("WALT_TEST_STATUS_" + name.upper(), "0")))
"""

RECORDED = ("kexec", "reboot", "systemctl", "modprobe", "sync", "busybox")


class Recorder:
    """Recorder programs first on PATH; ``calls()`` lists what ran, in order."""

    def __init__(self, directory: Path):
        self.bin = directory / "bin"
        self.bin.mkdir()
        self.record = directory / "calls.jsonl"
        self.record.touch()
        for name in RECORDED:
            program = self.bin / name
            program.write_text(RECORDER.format(python=sys.executable))
            program.chmod(program.stat().st_mode | stat.S_IXUSR)
        self.env: Dict[str, str] = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "WALT_TEST_RECORD": str(self.record),
            # real kexec -e, reboot and systemctl kexec do not return to their caller
            "WALT_TEST_STOPS_CALLER": "kexec -e,reboot,systemctl kexec,busybox reboot -f",
        }

    def calls(self) -> List[dict]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def argvs(self) -> List[List[str]]:
        return [[call["prog"], *call["args"]] for call in self.calls()]

    def jumped(self) -> bool:
        return any(argv[:2] in (["kexec", "-e"], ["systemctl", "kexec"]) for argv in self.argvs())


def run_walt_node(args: List[str], root: Path, recorder: Recorder,
                  extra_env: Optional[Dict[str, str]] = None,
                  timeout: float = BOOT_TIMEOUT) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("walt_")}
    env.update(recorder.env)
    env["WALT_NODE_ROOT"] = str(root)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "walt_node", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
