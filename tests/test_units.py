"""The systemd units of units/: kill switches, restart policy, ordering, and
`systemd-analyze verify` on the units exactly as setup installs them."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from walt_node.cli import COMMANDS
from walt_node.install.environment import data_dir
from walt_node.install.installer import Installer
from walt_node.install.plan import Target, build_plan
from walt_node.paths import Paths

UNITS_DIR = Path(__file__).resolve().parent.parent / "units"
UNIT_FILES = sorted(UNITS_DIR.glob("*.service"))
EXPECTED = {"walt-logs.service", "walt-nbd-swap.service"}
# the resident walt-logs unit runs these; each one's kill switch is honoured by the process
RESIDENT_SERVICES = ("walt-logs", "walt-mdns", "walt-lldp-report", "walt-journal-forward")
HOST_WALT_NODE = str(Path(sys.prefix) / "bin" / "walt-node")  # exists: verify checks ExecStart


def parse(path: Path) -> Dict[str, Dict[str, List[str]]]:
    """Unit file -> {section: {key: [values, in order]}} (keys may repeat in units)."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current: Dict[str, List[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def test_the_expected_units_ship_with_the_package() -> None:
    assert {path.name for path in UNIT_FILES} == EXPECTED
    assert {path.name for path in (data_dir() / "units").glob("*.service")} == EXPECTED


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_every_unit_has_its_kill_switch_install_target_and_placeholder(path: Path) -> None:
    unit = parse(path)
    name = path.name[: -len(".service")]
    if name == "walt-logs":  # `walt-node services` checks one switch per service (test_services.py)
        assert "ConditionPathExists" not in unit["Unit"]
        text = path.read_text()
        assert all(service in text for service in RESIDENT_SERVICES)  # documented in the unit
    else:
        assert unit["Unit"]["ConditionPathExists"][0] == f"!/etc/walt/{name}.disabled"
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    exec_start = unit["Service"]["ExecStart"][0]
    assert exec_start.lstrip("-").startswith("@WALT_NODE@ ")


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_every_unit_runs_an_existing_walt_node_command(path: Path) -> None:
    service = parse(path)["Service"]
    for key in ("ExecStart", "ExecStop"):
        for line in service.get(key, []):
            command = shlex.split(line.lstrip("-"))[1]
            assert command in COMMANDS, f"{path.name} {key} runs unknown 'walt-node {command}'"


@pytest.mark.parametrize("path", UNIT_FILES, ids=lambda p: p.name)
def test_daemons_restart_without_looping_forever_and_wait_for_the_network(path: Path) -> None:
    unit = parse(path)
    service = unit["Service"]
    if service.get("Type") == ["oneshot"]:
        return  # covered by the swap test
    assert service["Restart"][0] in ("always", "on-failure")
    # a crash loop is slowed down, and given up unless the unit says never to
    assert int(service["RestartSec"][0]) >= 2
    interval = int(unit["Unit"]["StartLimitIntervalSec"][0])
    if interval:  # bursts of restarts fit in the interval, so the limit can trigger
        assert int(unit["Unit"]["StartLimitBurst"][0]) * int(service["RestartSec"][0]) < interval
    after = " ".join(unit["Unit"]["After"])
    assert "network-online.target" in after or "network.target" in after


def test_resident_services_are_notify_with_watchdog_and_unsandboxed_tmp() -> None:
    unit = parse(UNITS_DIR / "walt-logs.service")
    service = unit["Service"]
    assert service["Type"] == ["notify"]
    assert int(service["WatchdogSec"][0]) > 0
    # exit 0 by itself only when every service is switched off; never given up otherwise
    assert service["Restart"] == ["on-failure"]
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"]
    assert service["ExecStart"] == ["@WALT_NODE@ services $DAEMON_ARGS"]
    assert "MALLOC_ARENA_MAX=1" in service["Environment"]  # its threads share one malloc arena
    # monitored commands use FIFOs in the real /tmp and write anywhere
    for option in ("PrivateTmp", "ProtectSystem", "ProtectHome"):
        assert option not in service


def test_resident_services_follow_lldpd_journald_and_avahi() -> None:
    """The LLDP reporter needs lldpd, the journal forwarder journald; the mDNS publisher
    must see avahi-daemon already running to stand aside for it."""
    unit = parse(UNITS_DIR / "walt-logs.service")["Unit"]
    after = " ".join(unit["After"]).split()
    assert {"lldpd.service", "systemd-journald.service", "avahi-daemon.service"} <= set(after)
    assert "lldpd.service" in " ".join(unit["Wants"]).split()


def test_nbd_swap_never_fails_nor_holds_the_boot() -> None:
    service = parse(UNITS_DIR / "walt-nbd-swap.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"][0].startswith("-")  # failure ignored
    assert int(service["TimeoutStartSec"][0]) <= 60
    assert "ProtectSystem" not in service and "PrivateDevices" not in service


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Install with setup's own code into a temporary root, then verify those files."""
    root = tmp_path / "root"
    root.mkdir()
    target = Target("systemd", HOST_WALT_NODE, sys.executable, [])
    Installer(Paths(root), print).install(build_plan(target, data_dir()), "systemd", [])
    installed = sorted((root / "etc/systemd/system").glob("*.service"))
    assert {p.name for p in installed} == EXPECTED
    done = subprocess.run(["systemd-analyze", "verify", *map(str, installed)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """Guard for the test above: a bad value only warns (status 0), hence its empty-stderr check."""
    broken = tmp_path / "walt-broken.service"
    text = (UNITS_DIR / "walt-logs.service").read_text().replace("@WALT_NODE@", HOST_WALT_NODE)
    broken.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          text=True, timeout=120)
    assert "sometimes" in done.stderr


def test_unit_files_parse_as_ini() -> None:
    for path in UNIT_FILES:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(path.read_text(), source=path.name)
        assert parser.has_section("Service")
