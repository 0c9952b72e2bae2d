"""B3: each model's second-stage boot script, and the kernel it boots.

The WalT server serves ``/boot/<model>/<path>`` of the image for a TFTP
request of ``<path>`` and for ``http://<server>/boot/<path>``
(docs/protocols.md §5, §6).  An iPXE ``start.ipxe`` is run through walt-node's
own interpreter (:mod:`walt_node.reboot.ipxe`) with a fetch that reads those
files from the image, so the check sees the kernel and initrds iPXE would
load.  A ``start.uboot`` is not interpreted: its kernel is looked for among
the files of ``/boot/<model>``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from walt_node.imagecheck.kernel import kernel_version
from walt_node.imagecheck.tree import ImageTree, PathProblem
from walt_node.reboot.ipxe import FetchFailed, IpxeError, Location, interpret

# What iPXE presets and WalT scripts read (docs/protocols.md §8), with plausible values.
DEFAULT_IPXE_VARIABLES = {
    "mac": "52:54:00:00:00:01", "ip": "192.168.152.2", "netmask": "255.255.0.0",
    "gateway": "192.168.152.1", "next-server": "192.168.152.1", "hostname": "walt-image-check",
    "manufacturer": "", "product": "",
}
KERNEL_MAGICS = ((0x202, b"HdrS"), (0x38, b"ARM\x64"), (0x24, b"\x18\x28\x6f\x01"),
                 (0, b"\x27\x05\x19\x56"))
MIN_KERNEL_SIZE = 512 * 1024


class OutsideImage(FetchFailed):
    """The script asks for a file the image cannot provide (another server)."""


@dataclass
class ModelBoot:
    name: str
    status: str = "passes"
    problem: str = ""
    fix: str = ""
    summary: str = ""
    kernel_path: str = ""
    kernel_data: bytes = b""
    kernel_release: str = ""
    has_initrd: bool = False


@dataclass
class BootCheck:
    models: List[ModelBoot] = field(default_factory=list)
    guessed_models: bool = False


class ImageBootFiles:
    """An iPXE fetch serving what the WalT server would serve from this image for ``model``."""

    def __init__(self, tree: ImageTree, model: str, server: str):
        self.tree = tree
        self.root = f"/boot/{model}"
        self.server = server
        self.outside: List[str] = []

    def image_path(self, location: Location) -> str:
        path = location.path
        if location.scheme == "http":
            path = path[len("/boot"):]
        return posixpath.normpath(f"{self.root}/{path.lstrip('/')}")

    def __call__(self, location: Location) -> bytes:
        if location.host not in ("", self.server) or (
                location.scheme == "http" and not location.path.startswith("/boot/")):
            self.outside.append(str(location))
            raise OutsideImage(f"{location} is not served from the image")
        path = self.image_path(location)
        try:
            return self.tree.read(path)
        except PathProblem as error:
            raise FetchFailed(str(error)) from None


def _models_from_boot_dir(tree: ImageTree) -> List[str]:
    return [name for name in tree.listdir("/boot")
            if tree.is_file(f"/boot/{name}/start.ipxe") or tree.is_file(f"/boot/{name}/start.uboot")]


def check_boot(tree: ImageTree, models: List[str], variables: Dict[str, str]) -> BootCheck:
    result = BootCheck()
    if not models:
        models, result.guessed_models = _models_from_boot_dir(tree), True
    for model in models:
        result.models.append(_check_model(tree, model, {**DEFAULT_IPXE_VARIABLES, **variables}))
    return result


def _check_model(tree: ImageTree, model: str, variables: Dict[str, str]) -> ModelBoot:
    boot = ModelBoot(model)
    directory = f"/boot/{model}"
    if not tree.is_dir(directory):
        boot.status, boot.problem = "missing", f"no directory {directory}"
        boot.fix = f"create {directory} with start.ipxe or start.uboot and the kernel"
        return boot
    if tree.exists(f"{directory}/start.ipxe"):
        _check_ipxe(tree, boot, variables)
    elif tree.exists(f"{directory}/start.uboot"):
        _check_uboot(tree, boot)
    else:
        problem = ""
        for name in ("start.ipxe", "start.uboot"):
            if tree.is_symlink(f"{directory}/{name}"):
                try:
                    tree.resolve(f"{directory}/{name}")
                except PathProblem as error:
                    problem = f"broken symlink: {error}"
        boot.status = "missing"
        boot.problem = problem or f"neither {directory}/start.ipxe nor {directory}/start.uboot"
        boot.fix = "provide the second-stage boot script of the node's bootloader"
    if boot.kernel_data:
        boot.kernel_release = kernel_version(boot.kernel_data) or ""
    return boot


def _check_ipxe(tree: ImageTree, boot: ModelBoot, variables: Dict[str, str]) -> None:
    fetch = ImageBootFiles(tree, boot.name, variables.get("next-server", ""))
    try:
        plan = interpret(fetch, variables)
    except IpxeError as error:
        if fetch.outside:
            boot.status = "cannot tell"
            boot.problem = f"start.ipxe loads files from outside the image: {', '.join(fetch.outside)}"
        else:
            boot.status, boot.problem = "missing", f"start.ipxe does not boot: {error}"
        boot.fix = ("check it with: walt-node ipxe-plan --boot-dir <image>/boot/" + boot.name +
                    " (paths in the message are relative to /boot/" + boot.name + ")")
        return
    boot.kernel_path = fetch.image_path(plan.kernel.location)
    boot.kernel_data = plan.kernel.data
    boot.has_initrd = bool(plan.initrds)
    initrds = ", ".join(fetch.image_path(initrd.location) for initrd in plan.initrds) or "no initrd"
    boot.summary = f"start.ipxe boots {boot.kernel_path} ({initrds})"


def _check_uboot(tree: ImageTree, boot: ModelBoot) -> None:
    directory = f"/boot/{boot.name}"
    kernel = _find_kernel(tree, directory)
    names = tree.listdir(directory)
    boot.has_initrd = any("initr" in name for name in names)
    if kernel is None:
        boot.summary = "start.uboot (not interpreted; no kernel recognised among its files)"
        return
    boot.kernel_path = kernel
    boot.kernel_data = tree.read(kernel)
    boot.summary = f"start.uboot (not interpreted), kernel {kernel}"


def _find_kernel(tree: ImageTree, directory: str) -> Optional[str]:
    for name in tree.listdir(directory):
        path = f"{directory}/{name}"
        entry = tree.find(path)
        if entry is None or entry.kind != "file" or entry.size < MIN_KERNEL_SIZE:
            continue
        head = tree.read(path)[:0x210]
        if any(head[offset:offset + len(magic)] == magic for offset, magic in KERNEL_MAGICS):
            return path
    return None
