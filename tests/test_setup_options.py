"""The opt-in parts of `walt-node setup` (WalT page features 2, 8 and 9): installed on
request, kept by later runs, removed when turned off and by --uninstall, and
seen by `walt-node check-image` as the feature they provide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_setup import IMAGE_WALT_NODE, make_image, ok, setup, snapshot

from walt_node.imagecheck import check_image

PTP_UNIT = "etc/systemd/system/walt-ptp.service"
PTP_LINK = "etc/systemd/system/multi-user.target.wants/walt-ptp.service"
DROPIN = "etc/systemd/timesyncd.conf.d/walt-node.conf"
SHELL_SCRIPTS = ("bin/walt-image-shell-start", "bin/walt-image-shell-shutdown")


def _executable(root: Path, path: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/bin/sh\n")
    target.chmod(0o755)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = make_image(tmp_path / "root")
    (root / "sbin").mkdir()
    (root / "sbin/init").symlink_to("/lib/systemd/systemd")
    for program in ("bin/sh", "usr/sbin/ptp4l", "lib/systemd/systemd-timesyncd"):
        _executable(root, program)
    (root / "lib/systemd/systemd").chmod(0o755)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True)
    (wants / "systemd-timesyncd.service").symlink_to("/lib/systemd/system/systemd-timesyncd.service")
    return root


def c_feature(root: Path, feature_id: str):
    return check_image(root).feature(feature_id)


def test_ptp_time_sync_is_installed_kept_turned_off_and_uninstalled(image: Path) -> None:
    before = snapshot(image)
    assert c_feature(image, "C2").status == "missing"
    ok(setup(image, "--time-sync", "ptp"))
    unit = (image / PTP_UNIT).read_text()
    assert f"ExecStart={IMAGE_WALT_NODE} ptp-slave -f /etc/walt/ptp4l.conf" in unit
    assert os.readlink(image / PTP_LINK) == "/etc/systemd/system/walt-ptp.service"
    config = (image / "etc/walt/ptp4l.conf").read_text()
    assert "domainNumber\t\t42" in config and "slaveOnly\t\t1" in config
    feature = c_feature(image, "C2")
    assert feature.status == "passes" and "walt-ptp.service" in feature.found, feature
    ok(setup(image))  # a later run (an upgrade) keeps it
    assert (image / PTP_LINK).is_symlink()
    ok(setup(image, "--time-sync", "none"))
    assert not (image / PTP_UNIT).exists() and not (image / "etc/walt/ptp4l.conf").exists()
    assert c_feature(image, "C2").status == "missing"
    ok(setup(image, "--time-sync", "ptp"))
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_ntp_time_sync_lets_the_server_fill_in_its_address(image: Path) -> None:
    before = snapshot(image)
    ok(setup(image, "--time-sync", "ntp"))
    assert "NTP=%(server_ip)s" in (image / DROPIN).read_text()
    spec = json.loads((image / "etc/walt/image.spec").read_text())
    assert spec["templates"] == ["/" + DROPIN]
    feature = c_feature(image, "C2")
    assert feature.status == "passes" and "NTP" in feature.found, feature
    ok(setup(image, "--time-sync", "none"))  # no spec naming a file that is gone
    assert not (image / DROPIN).exists() and not (image / "etc/walt/image.spec").exists()
    ok(setup(image, "--time-sync", "ntp"))
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_turning_ntp_off_gives_the_image_its_own_spec_back(image: Path) -> None:
    spec = image / "etc/walt/image.spec"
    spec.parent.mkdir(parents=True)
    original = '{"templates": ["/etc/motd"], "maintainer": "kept"}\n'
    spec.write_text(original)
    ok(setup(image, "--time-sync", "ntp"))
    assert json.loads(spec.read_text())["templates"] == ["/etc/motd", "/" + DROPIN]
    ok(setup(image, "--time-sync", "none"))
    assert spec.read_text() == original


def test_time_sync_needs_its_daemon_in_the_image(image: Path) -> None:
    (image / "usr/sbin/ptp4l").unlink()
    done = setup(image, "--time-sync", "ptp")
    assert done.returncode == 1
    assert "/usr/sbin/ptp4l is not in the image" in done.stderr and "apt-get install linuxptp" in done.stderr
    assert not (image / PTP_UNIT).exists()


def test_cpuinfo_captured_on_a_node_is_installed_as_etc_cpuinfo(image: Path, tmp_path: Path) -> None:
    node = tmp_path / "node"
    (node / "proc").mkdir(parents=True)
    (node / "proc/cpuinfo").write_bytes(Path("/proc/cpuinfo").read_bytes())
    captured = tmp_path / "model.cpuinfo"
    subprocess.run([sys.executable, "-m", "walt_node", "cpuinfo", "--output", str(captured)],
                   env={**os.environ, "WALT_NODE_ROOT": str(node)}, check=True, timeout=60)
    assert captured.read_bytes() == (node / "proc/cpuinfo").read_bytes()
    before = snapshot(image)
    assert c_feature(image, "C8").status == "missing"
    ok(setup(image, "--cpuinfo", str(captured)))
    assert (image / "etc/cpuinfo").read_bytes() == captured.read_bytes()
    assert c_feature(image, "C8").status == "passes"
    ok(setup(image))
    assert (image / "etc/cpuinfo").exists()
    ok(setup(image, "--no-cpuinfo"))
    assert not (image / "etc/cpuinfo").exists()
    ok(setup(image, "--cpuinfo", str(captured)))
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_cpuinfo_that_is_not_one_is_refused(image: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus"
    bogus.write_text("model name: something\n")
    done = setup(image, "--cpuinfo", str(bogus))
    assert done.returncode == 1
    assert "does not look like /proc/cpuinfo" in done.stderr and "walt-node cpuinfo" in done.stderr
    assert not (image / "etc/cpuinfo").exists()


def test_image_shell_scripts_are_installed_executable_and_removed(image: Path) -> None:
    before = snapshot(image)
    assert c_feature(image, "C9").status == "missing"
    ok(setup(image, "--image-shell"))
    for script in SHELL_SCRIPTS:
        assert (image / script).stat().st_mode & 0o777 == 0o755
    assert "exec /sbin/init" in (image / SHELL_SCRIPTS[0]).read_text()
    assert c_feature(image, "C9").status == "passes"
    ok(setup(image, "--no-image-shell"))
    assert not any((image / script).exists() for script in SHELL_SCRIPTS)
    ok(setup(image, "--image-shell"))
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == before


def test_systemd_options_are_refused_on_a_busybox_image(tmp_path: Path) -> None:
    root = make_image(tmp_path / "root", init="busybox")
    done = setup(root, "--image-shell", "--init", "busybox")
    assert done.returncode == 1
    assert "--image-shell need a systemd image" in done.stderr
