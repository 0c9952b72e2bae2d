"""Build the virtual node's disk: a Debian root filesystem with walt-node in it.

Two layers, so a developer's second run is fast:

* the *base* root filesystem (debootstrap of Debian packages, the host
  kernel's modules, a venv holding walt-node's dependencies from PyPI) is
  built once and kept in ``/var/cache/walt-node-tests/vnode/base-<hash>/``; the hash covers
  everything that goes into it, so changing the package list rebuilds it;
* each run copies the base, writes the harness's guest files
  (guest_files.py), installs the freshly built walt-node wheel into the
  venv with ``pip`` and runs ``walt-node-setup`` the way an image maintainer
  does, writes ``/bin/walt-env`` with the simulator's ports, and
  turns the tree into an ext4 image with ``mkfs.ext4 -d`` (no mount needed).

Everything here runs as root (debootstrap and chroot need it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence

from guest_files import write_guest_files

from walt_node.imagecheck.binaries import is_static_elf

LOG = logging.getLogger("vnode.image")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# What takes minutes to build (the debootstrapped base, the small initrd, PyPI wheels) is
# keyed by its recipe and kept outside the checkout, so a fresh clone (CI) reuses it;
# each session's own files (last-run/) stay in the checkout.
CACHE = Path(os.environ.get("WALT_NODE_TEST_CACHE", "/var/cache/walt-node-tests")) / "vnode"
RUN_DIR = HERE / "cache"

SUITE = "bookworm"
# Packages a WalT image maintainer would install (the page's mandatory ssh
# server, lldpd for walt-node's LLDP report), plus what the harness needs to
# talk to the guest (bash for the command shell) and to reach the network.
PACKAGES: Sequence[str] = (
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "procps",
    "python3", "python3-venv", "kexec-tools", "nbd-client", "busybox", "openssh-server", "lldpd",
)
# walt-node's runtime dependencies (setup.py install_requires), taken from PyPI.
PYPI_DEPENDENCIES: Sequence[str] = ("requests>=2.25", "pyroute2>=0.5.14", "zeroconf>=0.38")
# Kernel module trees a virtual node never needs: left out to keep the disk small.
PRUNED_MODULE_DIRS: Sequence[str] = (
    "kernel/drivers/gpu", "kernel/sound", "kernel/drivers/media", "kernel/drivers/net/wireless",
    "kernel/drivers/infiniband", "kernel/drivers/staging", "kernel/net/bluetooth",
    "kernel/drivers/bluetooth", "kernel/drivers/net/ethernet", "kernel/drivers/iio",
    "kernel/drivers/scsi", "kernel/drivers/isdn", "kernel/drivers/mtd",
)
VENV = "/opt/walt-node"          # where the image maintainer puts walt-node's venv
# Bump when the way the base is assembled changes (invalidates the cache).
BASE_RECIPE_VERSION = "3"


class ImageBuildError(RuntimeError):
    """A step of the disk build failed; the message names the step."""


@dataclass(frozen=True)
class KernelFiles:
    version: str
    vmlinuz: Path
    initrd: Path

    @classmethod
    def from_host(cls) -> KernelFiles:
        """Debian's linux-image-amd64 kernel installed on this machine."""
        candidates = sorted(Path("/boot").glob("vmlinuz-*"))
        if not candidates:
            raise ImageBuildError("no /boot/vmlinuz-*: install linux-image-amd64 (apt-get install "
                                  "linux-image-amd64)")
        vmlinuz = candidates[-1]
        version = vmlinuz.name[len("vmlinuz-"):]
        initrd = Path("/boot") / f"initrd.img-{version}"
        if not initrd.exists():
            raise ImageBuildError(f"{initrd} is missing: run update-initramfs -c -k {version}")
        return cls(version, vmlinuz, initrd)


INITRD_MODULES: Sequence[str] = ("virtio_pci", "virtio_blk", "ext4")
# The initrd's whole job: load the disk and filesystem drivers, mount /dev/vda, start systemd.
INITRD_INIT = """#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs devtmpfs /dev
for module in $($B cat /modules.order); do $B insmod /modules/$module 2>/dev/null; done
for i in $($B seq 100); do [ -b /dev/vda ] && break; $B sleep 0.1; done
$B mount -t ext4 -o rw /dev/vda /newroot || { echo "vnode initrd: cannot mount /dev/vda"; exec $B sh; }
$B umount /dev
$B umount /proc
exec $B switch_root /newroot /sbin/init
"""


@contextmanager
def _building(what: str) -> Iterator[None]:
    """One builder at a time of a cached artefact (several checkouts share the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{what}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_small_initrd(kernel: KernelFiles) -> Path:
    with _building("initrd"):
        return _ensure_small_initrd(kernel)


def _ensure_small_initrd(kernel: KernelFiles) -> Path:
    """A 2 MB initrd (static busybox + virtio/ext4 modules) instead of Debian's 33 MB one:
    quicker to boot and, above all, to fetch over fake TFTP for the kexec reboot.
    Debian's own initrd works too, but the kexec fetch of it does not fit in the
    reboot's time budget under TCG."""
    key = hashlib.sha256((INITRD_INIT + kernel.version + ",".join(INITRD_MODULES)).encode()).hexdigest()
    out = CACHE / f"initrd-{kernel.version}-{key[:12]}.gz"
    if out.exists():
        return out
    tree = CACHE / "initrd.partial"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "bin").mkdir(parents=True)
    (tree / "modules").mkdir()
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.exists() or not is_static_elf(busybox.read_bytes()):
        raise ImageBuildError(f"{busybox} is missing or not statically linked: the initrd needs "
                              "busybox-static (apt-get install busybox-static)")
    shutil.copy2(busybox, tree / "bin/busybox")
    order: List[str] = []
    for module in INITRD_MODULES:
        for line in _run("modprobe --show-depends", ["modprobe", "--show-depends", "-S", kernel.version,
                                                     module], timeout=30).splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "insmod" and Path(words[1]).name not in order:
                shutil.copy2(words[1], tree / "modules" / Path(words[1]).name)
                order.append(Path(words[1]).name)
    (tree / "modules.order").write_text("\n".join(order) + "\n")
    (tree / "init").write_text(INITRD_INIT)
    (tree / "init").chmod(0o755)
    partial = out.with_suffix(".partial")
    _run("pack initrd", ["sh", "-c", f"cd {tree} && find . | cpio -o -H newc --quiet | gzip -1 > {partial}"],
         timeout=120)
    partial.rename(out)
    shutil.rmtree(tree)
    return out


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (the only one it reaches)."""
    for source in sorted(Path("/etc/apt").glob("sources.list*")) + sorted(
            Path("/etc/apt/sources.list.d").glob("*")):
        if not source.is_file():
            continue
        for line in source.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            for word in line.split():
                if word.startswith("http") and "/debian" in word and "security" not in word:
                    return word.rstrip("/")
    return "http://deb.debian.org/debian"


def _run(step: str, argv: List[str], timeout: float, env: Dict[str, str] = None) -> str:
    LOG.info("%s: %s", step, " ".join(argv))
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:
        raise ImageBuildError(f"{step}: timed out after {timeout:.0f}s") from error
    if done.returncode != 0:
        raise ImageBuildError(f"{step} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                              f"{done.stderr[-3000:]}")
    return done.stdout


def _chroot(root: Path, step: str, argv: List[str], timeout: float = 300) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    return _run(step, ["chroot", str(root), *argv], timeout, env)


def base_key(kernel: KernelFiles) -> str:
    recipe = {
        "suite": SUITE, "packages": sorted(PACKAGES), "pypi": sorted(PYPI_DEPENDENCIES),
        "kernel": kernel.version, "pruned": sorted(PRUNED_MODULE_DIRS),
        "recipe": BASE_RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_base(kernel: KernelFiles) -> Path:
    """The cached base root filesystem, built first if needed (takes minutes once)."""
    with _building("base"):
        return _ensure_base(kernel)


def _ensure_base(kernel: KernelFiles) -> Path:
    base = CACHE / f"base-{base_key(kernel)}"
    if (base / ".complete").exists():
        return base
    partial = base.with_name(base.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    _debootstrap(partial)
    _copy_kernel_modules(kernel, partial)
    _create_venv_with_dependencies(partial)
    (partial / ".complete").write_text("ok\n")
    shutil.rmtree(base, ignore_errors=True)
    partial.rename(base)
    return base


def _debootstrap(root: Path) -> None:
    _run("debootstrap", ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                         SUITE, str(root), debian_mirror()], timeout=1800)
    _chroot(root, "apt-get clean", ["apt-get", "clean"])


def _copy_kernel_modules(kernel: KernelFiles, root: Path) -> None:
    source = Path("/lib/modules") / kernel.version
    target = root / "lib/modules" / kernel.version
    ignored = {str(source / d) for d in PRUNED_MODULE_DIRS}
    shutil.copytree(source, target, symlinks=True,
                    ignore=lambda d, names: [n for n in names if os.path.join(d, n) in ignored])
    _chroot(root, "depmod", ["depmod", kernel.version])


def configure_guest(root: Path) -> None:
    """The harness's own guest files (shell on ttyS1, network, fstab): written on
    each run, so editing them does not rebuild the base."""
    write_guest_files(root)
    _chroot(root, "enable guest units",
            ["systemctl", "enable", "systemd-networkd.service", "vnode-shell.service"])
    _chroot(root, "set empty root password", ["passwd", "-d", "root"])


def _create_venv_with_dependencies(root: Path) -> None:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # Same CPython minor version on host and guest (bookworm: 3.11), so the
    # host's pip picks the right binary wheels.
    _run("pip download", [sys.executable, "-m", "pip", "download", "--only-binary=:all:",
                          "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
                          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
                          "--platform", "any", "-d", str(wheels), *PYPI_DEPENDENCIES], timeout=600)
    _chroot(root, "python3 -m venv", ["python3", "-m", "venv", VENV])
    staged = root / "tmp/wheels"
    shutil.copytree(wheels, staged, dirs_exist_ok=True)
    _chroot(root, "pip install dependencies",
            [f"{VENV}/bin/pip", "install", "--no-index", "--find-links", "/tmp/wheels",
             *PYPI_DEPENDENCIES])
    shutil.rmtree(staged)


def build_walt_node_wheel(out_dir: Path) -> Path:
    """The wheel of this working tree, built like a release (pip wheel --no-deps)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("walt_node-*.whl"):
        old.unlink()
    _run("pip wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps",
                       "-w", str(out_dir), str(REPO)], timeout=300)
    wheels = sorted(out_dir.glob("walt_node-*.whl"))
    if not wheels:
        raise ImageBuildError(f"pip wheel produced no walt_node wheel in {out_dir}")
    return wheels[-1]


def install_upstream_walt_node(root: Path, wheels: Path, server_mount_dir: Path) -> None:
    """The image as its maintainer left it on a WalT 10 platform: upstream walt-node 10.0
    (PyPI, with its dependencies from ``wheels``) in the venv, its own walt-node-setup
    run; and the server's walt-log-echo in /bin, as the server copies it at mount time.
    walt-node is installed over this, by install_walt_node, without --force."""
    staged = root / "tmp/upstream-wheels"
    shutil.copytree(wheels, staged)
    _chroot(root, "pip install walt-node==10.0", [f"{VENV}/bin/pip", "install", "--no-index",
                                                  "--find-links", "/tmp/upstream-wheels", "walt-node==10.0"])
    shutil.rmtree(staged)
    _chroot(root, "upstream walt-node-setup", [f"{VENV}/bin/walt-node-setup"])
    for tool in ("walt-log-echo", "walt-log-cat"):
        shutil.copy2(server_mount_dir / tool, root / "bin" / tool)
        (root / "bin" / tool).chmod(0o755)


def install_walt_node(root: Path, wheel: Path) -> bool:
    """pip install the wheel in the guest's venv, then walt-node-setup.

    Returns False when walt-node-setup reports it has not landed yet; the
    harness then enables the units by hand (and the tests say so)."""
    staged = root / "tmp" / wheel.name
    shutil.copy2(wheel, staged)
    _chroot(root, "pip install walt-node", [f"{VENV}/bin/pip", "install", "--no-index", "--no-deps",
                                            "--force-reinstall", f"/tmp/{wheel.name}"])
    staged.unlink()
    # Setup itself links the commands into /usr/local/bin and installs /bin tools.
    done = subprocess.run(["chroot", str(root), f"{VENV}/bin/walt-node-setup", "--prefix", "/"],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": f"{VENV}/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    if done.returncode == 3 and "not available yet" in done.stderr:
        _enable_units_by_hand(root)
        return False
    if done.returncode != 0:
        raise ImageBuildError(f"walt-node-setup --prefix / failed ({done.returncode}):\n"
                              f"{done.stdout}\n{done.stderr}")
    return True


def _enable_units_by_hand(root: Path) -> None:
    """Stand-in for walt-node-setup while it has not landed: units + enable links."""
    units = REPO / "units"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in sorted(units.glob("*.service")):
        text = unit.read_text().replace("@WALT_NODE@", f"{VENV}/bin/walt-node")
        (root / "etc/systemd/system" / unit.name).write_text(text)
        link = wants / unit.name
        if not link.exists():
            link.symlink_to(f"/etc/systemd/system/{unit.name}")
    for name in ("walt-node", "walt-log-monitor"):
        link = root / "usr/local/bin" / name
        if not link.exists():
            link.symlink_to(f"{VENV}/bin/{name}")


def write_walt_env(root: Path, server_ip: str, rpc_port: int, logs_port: int, http_port: int,
                   image_id: str) -> None:
    """/bin/walt-env as the server writes it into a mounted image (§1).

    The simulator listens on automatic ports, so the HTTP port (80 on a real
    server) is added as walt_server_http_port, which NodeFacts honours."""
    env = root / "bin/walt-env"
    env.write_text(
        f"export walt_server_ip={server_ip}\n"
        f"export walt_server_rpc_port={rpc_port}\n"
        f"export walt_server_logs_port={logs_port}\n"
        f"export walt_server_notify_bootup_port={logs_port}\n"
        f"export walt_server_http_port={http_port}\n"
        f"export walt_image_id={image_id}\n"
        f"export walt_image_size_kib=1048576\n"
    )
    env.chmod(0o755)


def make_ext4(root: Path, image: Path, size_mib: int = 2048) -> None:
    if image.exists():
        image.unlink()
    _run("mkfs.ext4 -d", ["mkfs.ext4", "-q", "-F", "-L", "walt-vnode", "-d", str(root), str(image),
                          f"{size_mib}M"], timeout=300)


def copy_base(base: Path, work: Path) -> Path:
    root = work / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    _run("copy base rootfs", ["cp", "-a", "--reflink=auto", str(base), str(root)], timeout=300)
    (root / ".complete").unlink()
    return root


# ------------------------------------------------------------------ upstream side
# For side-by-side measures (benchmarks/footprint.py): the same image, plus what an
# image running upstream walt-node 10.0 runs instead of walt-node's services.
UPSTREAM_VENV = "/opt/walt-upstream"
UPSTREAM_PACKAGES: Sequence[str] = ("avahi-daemon",)
# Upstream's daemon gets its own FIFO directory (its FIFO path is fixed and is ours too).
UPSTREAM_FIFO_DIR = "/var/lib/walt-upstream"
UPSTREAM_UNIT = "walt-upstream-logs.service"
UPSTREAM_RECIPE_VERSION = "1"


def ensure_upstream_base(kernel: KernelFiles, upstream_wheels: Path, server_mount_dir: Path) -> Path:
    """The cached base plus, switched off, upstream walt-node 10.0 and avahi-daemon.

    `upstream_wheels` holds PyPI's walt-node 10.0 and its dependencies (the test
    oracle, tests/support/upstream_node.py); `server_mount_dir` is the
    walt/server/mount directory of walt-server 10.0 (scripts/upstream-venv.sh),
    whose walt-log-cat and walt-log-tee a WalT server puts in every image and
    upstream's daemon runs for each log stream."""
    base = ensure_base(kernel)
    with _building("upstream-layer"):
        return _ensure_upstream_base(base, upstream_wheels, server_mount_dir)


def _ensure_upstream_base(base: Path, upstream_wheels: Path, server_mount_dir: Path) -> Path:
    recipe = {"base": base.name, "packages": sorted(UPSTREAM_PACKAGES),
              "wheels": sorted(p.name for p in upstream_wheels.glob("*.whl")),
              "recipe": UPSTREAM_RECIPE_VERSION}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    layer = CACHE / f"{base.name}-upstream-{key}"
    if (layer / ".complete").exists():
        return layer
    partial = layer.with_name(layer.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run("copy base for the upstream layer", ["cp", "-a", "--reflink=auto", str(base), str(partial)],
         timeout=600)
    (partial / ".complete").unlink()
    _install_upstream_packages(partial)
    _install_upstream_walt_node(partial, upstream_wheels, server_mount_dir)
    (partial / ".complete").write_text("ok\n")
    shutil.rmtree(layer, ignore_errors=True)
    partial.rename(layer)
    return layer


def _install_upstream_packages(root: Path) -> None:
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or not resolv.exists():
        resolv.unlink(missing_ok=True)
        shutil.copy2("/etc/resolv.conf", resolv)
    _chroot(root, "apt-get update", ["apt-get", "update", "-q"], timeout=600)
    _chroot(root, "apt-get install " + " ".join(UPSTREAM_PACKAGES),
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *UPSTREAM_PACKAGES],
            timeout=900)
    _chroot(root, "apt-get clean", ["apt-get", "clean"])
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    # Not started at boot: walt-node's mDNS publisher stands aside when avahi runs.
    _chroot(root, "disable avahi", ["systemctl", "disable", "avahi-daemon.service",
                                    "avahi-daemon.socket"])


def _install_upstream_walt_node(root: Path, wheels: Path, server_mount_dir: Path) -> None:
    staged = root / "tmp/upstream-wheels"
    shutil.copytree(wheels, staged, dirs_exist_ok=True)
    _chroot(root, "python3 -m venv (upstream)", ["python3", "-m", "venv", UPSTREAM_VENV])
    _chroot(root, "pip install walt-node==10.0",
            [f"{UPSTREAM_VENV}/bin/pip", "install", "--no-index", "--find-links",
             "/tmp/upstream-wheels", "walt-node==10.0"], timeout=600)
    shutil.rmtree(staged)
    for tool in ("walt-log-cat", "walt-log-tee"):
        shutil.copy2(server_mount_dir / tool, root / "bin" / tool)
        (root / "bin" / tool).chmod(0o755)
    (root / UPSTREAM_FIFO_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    # Upstream's own unit, pointed at its venv and given its own FIFO directory.
    shipped = sorted((root / UPSTREAM_VENV.lstrip("/")).glob(
        "lib/python3*/site-packages/walt/node/setup/walt-logs.service"))
    if not shipped:
        raise ImageBuildError("upstream walt-node 10.0 installed no walt/node/setup/walt-logs.service")
    text = shipped[0].read_text().replace("/usr/local/bin/walt-logs-daemon",
                                          f"{UPSTREAM_VENV}/bin/walt-logs-daemon")
    text = text.replace("[Service]\n", f"[Service]\nBindPaths={UPSTREAM_FIFO_DIR}:/var/lib/walt\n"
                        f"Environment=PATH={UPSTREAM_VENV}/bin:/usr/local/bin:/usr/bin:/bin\n")
    (root / "etc/systemd/system" / UPSTREAM_UNIT).write_text(text)
