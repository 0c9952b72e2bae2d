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
from typing import Dict, Tuple

import pytest
from support.upstream_node import REPO, UPSTREAM_LINKS, build_dist, install_upstream, upstream_wheel_dir
from test_setup import IMAGE_WALT_NODE, UNITS, WALT_NODE, make_image, ok, setup, snapshot

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


# --- upgrading an image that runs upstream walt-node 10.0 ------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="upstream's setup runs in a mount namespace")
LOCAL_BIN = "usr/local/bin"


def walt_links(image: Path) -> Dict[str, str]:
    local_bin = image / LOCAL_BIN
    if not local_bin.is_dir():
        return {}
    return {entry.name: os.readlink(entry) for entry in local_bin.iterdir() if entry.is_symlink()}


def give_image_commands(image: Path, *names: str) -> None:
    """More commands in the image's walt-node venv (make_image has three)."""
    for name in names:
        script = image / "opt/walt-node/bin" / name
        script.write_text(f"#!{IMAGE_WALT_NODE}\n")
        script.chmod(0o755)


def setup_with(image: Path, walt_node: str, *args: str) -> str:
    """setup of the image tree with another walt-node executable than make_image's."""
    return ok(subprocess.run([WALT_NODE, "setup", "--prefix", str(image), "--walt-node", walt_node, *args],
                             capture_output=True, text=True, timeout=60))


@pytest.fixture
def upstream_image(tmp_path: Path) -> Tuple[Path, Path]:
    """An image with upstream walt-node 10.0 installed by its own setup; (root, its venv)."""
    image = make_image(tmp_path / "image")
    venv = install_upstream(image)
    links = walt_links(image)
    assert sorted(links) == sorted(UPSTREAM_LINKS), links
    assert "walt-logs-daemon $DAEMON_ARGS" in (image / "etc/systemd/system/walt-logs.service").read_text()
    return image, venv


@needs_root
def test_upgrade_replaces_upstream_files_without_force(upstream_image) -> None:
    image, venv = upstream_image
    give_image_commands(image, "walt-logs-daemon", "walt-monitor")
    out = ok(setup(image))

    unit = (image / "etc/systemd/system/walt-logs.service").read_text()
    assert f"ExecStart={IMAGE_WALT_NODE} services $DAEMON_ARGS" in unit
    assert "EnvironmentFile=-/etc/default/walt-logs" in unit
    assert os.readlink(image / "etc/systemd/system/multi-user.target.wants/walt-logs.service") == \
        "/etc/systemd/system/walt-logs.service"
    links = walt_links(image)
    # upstream's names that walt-node has now lead to it; walt-python3, and the commands
    # this image's walt-node lacks (serial autolog, kexec reboot), are gone: no dead link
    assert links == {name: f"/opt/walt-node/bin/{name}" for name in
                     ("walt-node", "walt-node-setup", "walt-log-monitor", "walt-logs-daemon", "walt-monitor")}
    assert "removed upstream walt-node's /usr/local/bin/walt-python3" in out
    assert "Nothing was changed" not in out

    ok(setup(image, "--uninstall"))
    assert walt_links(image) == {}
    assert not os.path.lexists(image / "etc/systemd/system/walt-logs.service")
    assert not os.path.lexists(image / "etc/systemd/system/multi-user.target.wants/walt-logs.service")


@needs_root
def test_upgrade_of_upstream_venv_by_pip_takes_its_links_over(upstream_image) -> None:
    """pip installed walt-node over upstream's in the same venv: the links already lead to
    our programs; setup takes them over, so --uninstall removes them."""
    image, venv = upstream_image
    venv_bin = image / str(venv).lstrip("/") / "bin"
    for name in ("walt-node", "walt-node-setup", "walt-logs-daemon", "walt-log-monitor", "walt-monitor",
                 "walt-serial-autolog", "walt-ipxe-kexec-reboot"):
        (venv_bin / name).unlink(missing_ok=True)
        (venv_bin / name).write_text(f"#!{venv}/bin/python3\nimport sys\n"
                                     "from walt_node.cli import legacy_main\nsys.exit(legacy_main())\n")
        (venv_bin / name).chmod(0o755)
    out = setup_with(image, f"{venv}/bin/walt-node")
    assert "took over upstream walt-node's /usr/local/bin/walt-logs-daemon" in out
    wants = "/etc/systemd/system/multi-user.target.wants/walt-logs.service"
    assert f"took over upstream walt-node's {wants}" in out
    assert sorted(walt_links(image)) == sorted({*UPSTREAM_LINKS, "walt-node"} - {"walt-python3"})
    ok(setup(image, "--uninstall"))
    assert walt_links(image) == {}
    assert not os.path.lexists(image / "etc/systemd/system/multi-user.target.wants/walt-logs.service")


@needs_root
def test_upgrade_after_upstream_venv_was_removed_clears_dead_links(upstream_image) -> None:
    image, venv = upstream_image
    shutil.rmtree(image / str(venv).lstrip("/"))
    ok(setup(image))
    links = walt_links(image)
    assert links and all((image / target.lstrip("/")).exists() for target in links.values()), links
    assert "walt-python3" not in walt_links(image) and "walt-logs-daemon" not in walt_links(image)


@needs_root
def test_upgrade_to_the_debian_layout_removes_every_upstream_link(upstream_image) -> None:
    """Commands in /usr/bin (the .deb): upstream's links in /usr/local/bin would shadow them."""
    image, _ = upstream_image
    (image / "usr/bin").mkdir(parents=True)
    shutil.copy2(image / "opt/walt-node/bin/walt-node", image / "usr/bin/walt-node")
    setup_with(image, "/usr/bin/walt-node")
    assert walt_links(image) == {}
    assert "ExecStart=/usr/bin/walt-node services" in (
        image / "etc/systemd/system/walt-logs.service").read_text()


@needs_root
def test_upgrade_dry_run_names_upstream_files_and_changes_nothing(upstream_image) -> None:
    image, _ = upstream_image
    before = snapshot(image)
    out = ok(setup(image, "--dry-run"))
    assert "would upgrade file /etc/systemd/system/walt-logs.service" in out
    assert "would remove /usr/local/bin/walt-python3" in out
    assert snapshot(image) == before


@needs_root
def test_upstream_unit_in_another_systemd_dir_is_removed(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    install_upstream(image, "--systemd-dir", "/lib/systemd/system")
    assert (image / "lib/systemd/system/walt-logs.service").is_file()
    ok(setup(image))
    assert not os.path.lexists(image / "lib/systemd/system/walt-logs.service")
    assert not os.path.lexists(image / "lib/systemd/system/multi-user.target.wants/walt-logs.service")
    assert (image / "etc/systemd/system/walt-logs.service").is_file()


def test_image_own_command_of_an_upstream_name_is_still_protected(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    own = image / LOCAL_BIN / "walt-log-monitor"
    own.parent.mkdir(parents=True)
    elsewhere = image / "srv/tools/bin/walt-log-monitor"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("#!/bin/sh\necho the image's own monitor\n")
    own.symlink_to("/srv/tools/bin/walt-log-monitor")
    refused = setup(image)
    assert refused.returncode == 1 and "/usr/local/bin/walt-log-monitor" in refused.stderr


# --- /etc/default/walt-logs ------------------------------------------------------------

def test_daemon_args_of_etc_default_reach_the_daemon_through_the_unit(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    (image / "etc/default").mkdir()
    (image / "etc/default/walt-logs").write_text('# settings\nDAEMON_ARGS="--spool-size 16M"\n')
    ok(setup(image))
    unit = (image / "etc/systemd/system/walt-logs.service").read_text()
    assert "EnvironmentFile=-/etc/default/walt-logs" in unit and "services $DAEMON_ARGS" in unit


@pytest.mark.parametrize("line", ['DAEMON_ARGS="--no-such-option"', "DAEMON_ARGS=--spool-size"])
def test_daemon_args_the_daemon_refuses_stop_setup_before_any_change(tmp_path: Path, line: str) -> None:
    image = make_image(tmp_path / "image")
    (image / "etc/default").mkdir()
    (image / "etc/default/walt-logs").write_text(line + "\n")
    before = snapshot(image)
    refused = setup(image)
    assert refused.returncode == 1
    assert "/etc/default/walt-logs" in refused.stderr and "DAEMON_ARGS" in refused.stderr
    assert snapshot(image) == before


def test_every_unit_skips_containers(tmp_path: Path) -> None:
    """`walt image shell` boots systemd in podman: no walt-node service may start there."""
    image = make_image(tmp_path / "image")
    ok(setup(image))
    for unit in UNITS:
        text = (image / "etc/systemd/system" / unit).read_text()
        unit_section = text.split("[Service]")[0]
        assert "\nConditionVirtualization=!container\n" in unit_section, unit
