"""walt-node as a drop-in for upstream walt-node 10.0: its own install path, upstream's
setup options, the upgrade of an image that runs upstream's package.

Upstream's package comes from PyPI at test time (tests/support/upstream_node.py)
and is only run, as the oracle of what an image holds after its setup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.upstream_node import REPO, build_dist, upstream_wheel_dir
from test_setup import IMAGE_WALT_NODE, UNITS, WALT_NODE, make_image, ok, setup

from walt_node import __version__


def test_version_is_shown_and_above_every_upstream_release() -> None:
    from pip._vendor.packaging.version import Version

    done = subprocess.run([WALT_NODE, "--version"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == f"walt-node {__version__}"
    ours = Version(__version__)
    # upstream is at 10.0; an epoch puts us above any release it can ever make
    assert ours > Version("10.0") and ours > Version("9999.99.99")
    assert str(ours) == __version__, "the version must be written in PEP 440's normal form"


@pytest.mark.slow
def test_pip_keeps_our_built_wheel_over_upstream_from_the_same_index(tmp_path: Path) -> None:
    """pip given both upstream's 10.0 and our wheel installs ours, and -U keeps it."""
    wheel, sdist = build_dist(tmp_path / "dist")
    assert wheel.name.startswith(f"walt_node-{__version__}-")
    assert sdist.name.endswith(f"-{__version__}.tar.gz")
    index = tmp_path / "index"
    index.mkdir()
    upstream = next(upstream_wheel_dir().glob("walt_node-10.0-*.whl"))
    for dist in (wheel, upstream):
        shutil.copy(dist, index)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/pip"), "install", "--disable-pip-version-check", "--no-index", "--no-deps",
           "--find-links", str(index)]
    ok(subprocess.run([*pip, "walt-node"], capture_output=True, text=True, timeout=300))
    ok(subprocess.run([*pip, "--upgrade", "walt-node"], capture_output=True, text=True, timeout=300))
    shown = subprocess.run([str(venv / "bin/pip"), "show", "walt-node"], capture_output=True, text=True,
                           timeout=60).stdout
    assert f"Version: {__version__}" in shown, shown


# --- upstream's setup options --------------------------------------------------------

def test_upstream_init_system_option_is_accepted_in_either_case(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")  # a systemd layout: the option must win
    ok(setup(image, "--init-system", "BUSYBOX"))
    assert (image / "etc/init.d/S90walt-node").is_file()
    assert not (image / "etc/systemd/system/walt-logs.service").exists()
    ok(setup(image, "--uninstall"))
    ok(setup(image, "--init-system", "systemd"))
    assert (image / "etc/systemd/system/walt-logs.service").is_file()


def test_upstream_systemd_dir_option_places_units_and_enable_links(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    ok(setup(image, "--systemd-dir", "/lib/systemd/system"))
    for unit in UNITS:
        assert (image / "lib/systemd/system" / unit).is_file()
        link = image / "lib/systemd/system/multi-user.target.wants" / unit
        assert os.readlink(link) == f"/lib/systemd/system/{unit}"
        assert not (image / "etc/systemd/system" / unit).exists()
    relative = setup(image, "--systemd-dir", "lib/systemd/system")
    assert relative.returncode == 1 and "--systemd-dir" in relative.stderr


def test_walt_monitor_is_a_legacy_name_setup_links(tmp_path: Path) -> None:
    from walt_node.commands import legacy_names

    assert legacy_names()["walt-monitor"] == "log-monitor"
    image = make_image(tmp_path / "image")
    script = image / "opt/walt-node/bin/walt-monitor"
    script.write_text(f"#!{IMAGE_WALT_NODE}\n")
    script.chmod(0o755)
    ok(setup(image))
    assert os.readlink(image / "usr/local/bin/walt-monitor") == "/opt/walt-node/bin/walt-monitor"


def test_hints_never_say_to_install_walt_node_from_pypi() -> None:
    """`pip install walt-node` gets upstream's package from PyPI, not this one."""
    texts = {path: path.read_text() for path in
             [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "walt_node").rglob("*.py")]}
    bad = [str(path) for path, text in texts.items()
           if "pip install walt-node" in text.replace("pip install walt-node==10.0", "")]
    assert not bad, f"bare 'pip install walt-node' (upstream's package on PyPI) in {bad}"


def test_missing_walt_node_hint_installs_the_built_wheel(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    done = subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node", "/srv/none/walt-node"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "python3 -m build" in done.stderr and "walt_node-*.whl" in done.stderr
