"""`walt-node check-image` on small images built here: directories, and archives
written by Debian's OCI tools (umoci builds the layers, skopeo converts to the
docker-archive format `docker save` writes), read without a container engine.

The image holds this machine's real static busybox, Debian kernel, its
config and a WalT-shaped start.ipxe reaching its kernel through symlinks.
The full check of a Debian image (the virtual node's) is tests/vnode/test_image_check_vnode.py.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List

import pytest

from walt_node.imagecheck import check_image
from walt_node.imagecheck.archive import ArchiveProblem, open_archive
from walt_node.imagecheck.binaries import busybox_applets, elf_info, is_static_elf
from walt_node.imagecheck.checks import BUSYBOX_APPLETS
from walt_node.imagecheck.kernel import embedded_config, find_config, kernel_version
from walt_node.imagecheck.tree import DirTree, PathProblem

MODEL = "pc-x86-64"
LABELS = {"walt.node.models": MODEL, "walt.server.minversion": "10"}
HOST_BUSYBOX = Path("/bin/busybox")
KERNELS = sorted(Path("/boot").glob("vmlinuz-*"))
START_IPXE = """#!ipxe
set server ${next-server}
chain generic/boot.ipxe
"""
GENERIC_IPXE = """#!ipxe
kernel ../kernel root=/dev/nfs ip=dhcp walt.server.ip=${server} BOOTIF=01-${mac:hexhyp}
initrd ../initrd.img
boot
"""

# Debian builds these as modules: with an initrd that is allowed, if the image has them
BOOT_MODULES = ("kernel/fs/overlayfs/overlay.ko", "kernel/fs/nfs/nfs.ko", "kernel/fs/nfs/nfsv3.ko")

needs_static_busybox = pytest.mark.skipif(
    not HOST_BUSYBOX.exists() or not is_static_elf(HOST_BUSYBOX.read_bytes()),
    reason="needs busybox-static (.ci/apt-packages)")
needs_kernel = pytest.mark.skipif(not KERNELS, reason="needs linux-image-amd64 (.ci/apt-packages)")


def _kernel() -> Path:
    return KERNELS[-1]


def _release() -> str:
    return _kernel().name[len("vmlinuz-"):]


def make_image(root: Path, initrd: bool = True) -> Path:
    """A merged-/usr root: static busybox as init and every command, a kernel reached by symlinks."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/sbin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    shutil.copy2(HOST_BUSYBOX, root / "usr/bin/busybox")
    (root / "usr/sbin/init").symlink_to("/bin/busybox")  # absolute: must resolve inside the image
    boot = root / "boot" / MODEL
    (boot / "generic").mkdir(parents=True)
    shutil.copy2(_kernel(), root / "boot" / _kernel().name)
    shutil.copy2(Path("/boot") / f"config-{_release()}", root / "boot" / f"config-{_release()}")
    (boot / "kernel").symlink_to(f"../{_kernel().name}")
    if initrd:
        (boot / "initrd.img").write_bytes(gzip.compress(b"070701"))
    (boot / "start.ipxe").write_text(START_IPXE)
    (boot / "generic/boot.ipxe").write_text(GENERIC_IPXE if initrd else
                                            GENERIC_IPXE.replace("initrd ../initrd.img\n", ""))
    modules = Path("/lib/modules") / _release()
    for module in BOOT_MODULES:
        target = root / "usr/lib/modules" / _release() / module
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(modules / module, target)
    (root / "lib").symlink_to("usr/lib")
    (root / "etc").mkdir()
    (root / "etc/leftover").write_text("removed by the second layer\n")
    return root


def run_tool(argv: List[str], cwd: Path) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"


def build_oci_layout(work: Path, labels: Dict[str, str]) -> Path:
    """An OCI layout made by umoci: layer 1 = make_image, layer 2 deletes /etc/leftover."""
    layout = work / "layout"
    run_tool(["umoci", "init", "--layout", str(layout)], work)
    run_tool(["umoci", "new", "--image", f"{layout}:latest"], work)
    run_tool(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", "bundle"], work)
    rootfs = work / "bundle/rootfs"
    shutil.rmtree(rootfs)
    make_image(rootfs)
    run_tool(["umoci", "repack", "--image", f"{layout}:latest", "bundle"], work)
    (rootfs / "etc/leftover").unlink()
    run_tool(["umoci", "repack", "--image", f"{layout}:latest", "bundle"], work)
    run_tool(["umoci", "config", "--image", f"{layout}:latest",
              *(arg for name, value in labels.items() for arg in ("--config.label", f"{name}={value}"))],
             work)
    return layout


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    for tool in ("umoci", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt-get install {tool} (.ci/apt-packages)")
    if not HOST_BUSYBOX.exists() or not KERNELS:
        pytest.skip("needs busybox-static and linux-image-amd64 (.ci/apt-packages)")
    work = tmp_path_factory.mktemp("oci")
    labels = {**LABELS, "walt.image.preferred-name": "tiny-default:latest"}
    layout = build_oci_layout(work, labels)
    oci_archive = work / "image.oci.tar"
    with tarfile.open(oci_archive, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(layout / name, arcname=name)
    docker_archive = work / "image.docker.tar"
    run_tool(["skopeo", "copy", f"oci:{layout}:latest",
              f"docker-archive:{docker_archive}:walt/tiny:latest"], work)
    return {"oci-layout": layout, "oci-archive": oci_archive, "docker-archive": docker_archive}


@pytest.mark.parametrize("kind", ["oci-layout", "oci-archive", "docker-archive"])
def test_archive_labels_and_layers_are_read(archives: Dict[str, Path], kind: str) -> None:
    archive = open_archive(archives[kind])
    try:
        assert archive.format == kind
        assert archive.labels == {**LABELS, "walt.image.preferred-name": "tiny-default:latest"}
        tree = archive.tree
        assert not tree.exists("/etc/leftover")  # the second layer's whiteout
        assert tree.is_dir("/etc")
        assert tree.resolve("/sbin/init") == "/usr/bin/busybox"
        assert tree.read(f"/boot/{MODEL}/kernel") == _kernel().read_bytes()
    finally:
        archive.close()
    report = check_image(archives[kind])
    assert report.format == kind
    statuses = {f.id: f.status for f in report.features}
    for feature_id in ("B1", "B2", "B3", "B4", "B5", "B6", "C7"):
        assert statuses[feature_id] == "passes", report.feature(feature_id)
    assert statuses["B7"] == "missing"  # this tiny image has no ssh server
    assert f"/boot/{MODEL}/kernel (/boot/{MODEL}/initrd.img)" in report.feature("B3").found


def test_command_prints_one_line_per_feature_and_fails_on_a_missing_mandatory_one(
        archives: Dict[str, Path]) -> None:
    command = [sys.executable, "-m", "walt_node", "check-image"]
    done = subprocess.run([*command, str(archives["docker-archive"])], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 + 17 + 1
    b7 = next(line for line in lines if line.startswith("B7"))
    assert "missing" in b7 and "no ssh server" in b7 and "fix: apt-get install openssh-server" in b7
    done = subprocess.run([*command, "--json", str(archives["oci-archive"])], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["labels"]["walt.node.models"] == MODEL
    assert [f["id"] for f in report["features"] if f["status"] != "passes" and f["mandatory"]] == ["B7"]


def test_command_says_what_is_wrong_with_an_unreadable_target(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar file at all" * 100)
    done = subprocess.run([sys.executable, "-m", "walt_node", "check-image", str(bogus)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "not a readable tar archive" in done.stderr and "docker save" in done.stderr
    with pytest.raises(ArchiveProblem, match="neither manifest.json nor index.json"):
        empty = tmp_path / "empty.tar"
        with tarfile.open(empty, "w") as tar:
            tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
        open_archive(empty)


def _layer(entries: Dict[str, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type, info.name = tarfile.DIRTYPE, name.rstrip("/")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return data.getvalue()


def test_opaque_whiteout_empties_a_directory_of_the_layers_below(tmp_path: Path) -> None:
    """A docker-archive written by hand: layer 2 makes /etc opaque and adds one file."""
    layers = {"l1.tar": _layer({"etc/": b"", "etc/a": b"1", "etc/b": b"2", "usr/x": b"x"}),
              "l2.tar": _layer({"etc/": b"", "etc/.wh..wh..opq": b"", "etc/c": b"3",
                                "usr/.wh.x": b""})}
    config = json.dumps({"config": {"Labels": {"walt.node.models": "m"}}}).encode()
    manifest = json.dumps([{"Config": "c.json", "Layers": ["l1.tar", "l2.tar"]}]).encode()
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as tar:
        for name, content in {"manifest.json": manifest, "c.json": config, **layers}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    archive = open_archive(path)
    try:
        assert archive.tree.listdir("/etc") == ["c"]
        assert archive.tree.read("/etc/c") == b"3"
        assert not archive.tree.exists("/usr/x")
        assert archive.labels == {"walt.node.models": "m"}
    finally:
        archive.close()


def test_symlinks_resolve_inside_the_image_never_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("image\n")
    (tmp_path / "secret").write_text("host file\n")
    (root / "abs").symlink_to("/etc/hostname")
    (root / "up").symlink_to("../../../../secret")
    (root / "loop").symlink_to("loop")
    tree = DirTree(root)
    assert tree.read("/abs") == b"image\n"
    assert not tree.exists("/up")  # ".." stops at the image root: /secret is not in the image
    with pytest.raises(PathProblem, match="/secret does not exist in the image"):
        tree.read("/up")
    with pytest.raises(PathProblem, match="too many levels"):
        tree.resolve("/loop")


@needs_static_busybox
def test_elf_headers_tell_static_from_dynamic() -> None:
    assert is_static_elf(HOST_BUSYBOX.read_bytes())
    ls = elf_info(Path(shutil.which("ls")).read_bytes())
    assert not ls.static and ls.interpreter.startswith("/lib")
    applets = busybox_applets(HOST_BUSYBOX.read_bytes())
    listed = subprocess.run([str(HOST_BUSYBOX), "--list"], capture_output=True, text=True,
                            check=True).stdout.split()
    assert set(applets) - {"busybox"} == set(listed) - {"busybox"}
    assert set(BUSYBOX_APPLETS) <= set(applets)


@needs_static_busybox
@needs_kernel
def test_dynamic_busybox_without_ldd_fails_b6(tmp_path: Path) -> None:
    root = make_image(tmp_path / "root")
    (root / "usr/bin/busybox").unlink()
    shutil.copy2(shutil.which("ls"), root / "usr/bin/busybox")  # a dynamic ELF
    feature = check_image(root, LABELS).feature("B6")
    assert feature.status == "missing"
    assert any("dynamically linked" in problem and "no ldd" in problem for problem in feature.problems)


@needs_static_busybox
@needs_kernel
def test_kernel_options_without_initrd_must_be_built_in(tmp_path: Path) -> None:
    with_initrd = check_image(make_image(tmp_path / "with"), LABELS).feature("B4")
    assert with_initrd.status == "passes", with_initrd
    assert f"/boot/config-{_release()}" in with_initrd.found
    without = check_image(make_image(tmp_path / "without", initrd=False), LABELS).feature("B4")
    assert without.status == "missing"
    config = (Path("/boot") / f"config-{_release()}").read_text()
    # Debian builds overlay and NFS as modules and leaves root-on-NFS out
    assert "CONFIG_OVERLAY_FS=m" in config
    assert any("CONFIG_OVERLAY_FS =m, needs =y (no initrd)" in p for p in without.problems)
    assert any("CONFIG_ROOT_NFS not set" in p for p in without.problems)


@needs_kernel
def test_kernel_version_and_embedded_config() -> None:
    assert kernel_version(_kernel().read_bytes()) == _release()
    config = "CONFIG_OVERLAY_FS=y\nCONFIG_NFS_FS=y\n# CONFIG_ROOT_NFS is not set\n"
    # what CONFIG_IKCONFIG=y puts in a kernel, inside an xz-compressed payload as bzImage has it
    payload = b"\0" * 4096 + b"IKCFG_ST" + gzip.compress(config.encode()) + b"IKCFG_ED" + b"\0" * 64
    kernel = b"\x90" * 1024 + lzma.compress(payload, format=lzma.FORMAT_XZ) + b"\0" * 16
    assert embedded_config(kernel) == config
    found = find_config(DirTree(Path("/nonexistent")), "/boot/m/kernel", kernel)
    assert found is not None and "embedded IKCONFIG" in found.source
    assert (found.value("CONFIG_OVERLAY_FS"), found.value("CONFIG_ROOT_NFS")) == ("y", "n")
