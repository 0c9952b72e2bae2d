"""The documented install path, in a Debian image tree (chroot): the artifacts
`python3 -m build` makes, pip-installed into a clean venv, then walt-node-setup
run from that venv. Runs with the virtual node suite (scripts/vnode-test.sh):
it reuses its cached debootstrapped tree."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import vnode_image as image
from support.upstream_node import build_dist

from walt_node import __version__

VENV = "/opt/clean-venv"


def test_built_wheel_installs_in_a_clean_venv_and_its_setup_runs(base_tree: Path, tmp_path: Path) -> None:
    wheel, sdist = build_dist(tmp_path / "dist")
    with tarfile.open(sdist) as archive:  # the sdist carries what setup installs
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"walt_node/data/{name}" for name in ("units/walt-logs.service", "bin/walt-network-reboot",
                                                  "bin/walt-hybrid-reboot")} <= names
    staged = base_tree / "tmp/dist"
    staged.mkdir(parents=True)
    shutil.copy2(wheel, staged)
    shutil.copytree(image.CACHE / "wheels", base_tree / "tmp/wheels")  # its dependencies, offline

    image._chroot(base_tree, "clean venv", ["python3", "-m", "venv", VENV])
    image._chroot(base_tree, "pip install the built wheel",
                  ["sh", "-c", f"{VENV}/bin/pip install --no-index --find-links /tmp/wheels /tmp/dist/*.whl"])
    shown = image._chroot(base_tree, "walt-node --version", [f"{VENV}/bin/walt-node", "--version"])
    assert shown.strip() == f"walt-node {__version__}"
    out = image._chroot(base_tree, "walt-node-setup", [f"{VENV}/bin/walt-node-setup"])
    assert f"walt-node {__version__} installed" in out

    unit = (base_tree / "etc/systemd/system/walt-logs.service").read_text()
    assert f"ExecStart={VENV}/bin/walt-node services" in unit
    assert os.readlink(base_tree / "etc/systemd/system/multi-user.target.wants/walt-logs.service") == \
        "/etc/systemd/system/walt-logs.service"
    assert os.readlink(base_tree / "usr/local/bin/walt-log-monitor") == f"{VENV}/bin/walt-log-monitor"
    for hook in ("walt-network-reboot", "walt-hybrid-reboot", "walt-reboot", "blink"):
        assert (base_tree / "bin" / hook).read_text().startswith(f"#!{VENV}/bin/python3\n"), hook
        image._chroot(base_tree, f"{hook} --help", [f"/bin/{hook}", "--help"])
