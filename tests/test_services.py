"""`walt-node services`: the long-running services in one process, each contained.

The supervisor is tested with real threads (a feature that raises, one that keeps
running); the resident process is run for real against the simulator, with a
recorder `journalctl` first on PATH whose process the test kills."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import List

import pytest
from support.netns import requires_netns, veth_link
from support.wait import wait_until

from walt_node.service import Feature, StopFlag, Supervisor
from walt_node.sim import Simulator

WALT_NODE = str(Path(sys.executable).parent / "walt-node")

# A journalctl that prints one entry of exp.service, then follows forever; each start
# appends its pid to $FAKE_JOURNAL_PIDS (exec keeps that pid for the sleep).
FAKE_JOURNALCTL = """#!/bin/sh
echo $$ >> "$FAKE_JOURNAL_PIDS"
printf '{"__CURSOR":"c%s","__REALTIME_TIMESTAMP":"1700000000000000",' $$
printf '"_SYSTEMD_UNIT":"exp.service","MESSAGE":"from the journal"}\\n'
exec sleep 3600
"""


# ------------------------------------------------------------------ the supervisor, in this process

class Crashing:
    """A feature that raises on its first ``crashes`` runs, then runs until stopped."""

    def __init__(self, crashes: int):
        self.crashes = crashes
        self.runs = 0
        self.steady = threading.Event()

    def run(self, stop: StopFlag) -> int:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash number {self.runs}")
        self.steady.set()
        stop.wait(None)
        return 0


class Steady:
    """A feature that counts its runs and works until stopped."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = threading.Event()

    def run(self, stop: StopFlag) -> int:
        self.runs += 1
        self.running.set()
        stop.wait(None)
        return 0


def test_a_raising_feature_is_logged_once_counted_and_restarted_while_the_others_run(
        caplog: pytest.LogCaptureFixture) -> None:
    stop = StopFlag()
    statuses: List[str] = []
    crashing, steady = Crashing(crashes=3), Steady()
    supervisor = Supervisor(stop, statuses.append, first_delay=0.01, max_delay=0.04)
    with caplog.at_level(logging.INFO, logger="walt_node.service"):
        supervisor.start(Feature("steady", steady.run))
        supervisor.start(Feature("crashing", crashing.run))
        assert crashing.steady.wait(10), "the crashing feature was not restarted"
        assert steady.running.is_set()
        stop.set()
        assert supervisor.join(10) == []
    assert crashing.runs == 4  # three crashes, three restarts
    assert steady.runs == 1  # never stopped by the other's crashes
    failures = [r for r in caplog.records if "crashing failed" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # logged once, then counted
    assert failures[0].exc_info is not None and "crash number 1" in failures[0].getMessage()
    assert supervisor.features[1].failures == 3
    assert any("crashing restarting after 3 failure(s)" in status for status in statuses)
    assert statuses[-1] == "STATUS=steady stopped; crashing stopped"


def test_a_feature_that_ends_with_status_0_stays_ended() -> None:
    stop = StopFlag()
    runs = []

    def stands_aside(_stop: StopFlag) -> int:
        runs.append(1)
        return 0

    statuses: List[str] = []
    supervisor = Supervisor(stop, statuses.append, first_delay=0.01)
    feature = Feature("aside", stands_aside)
    supervisor.start(feature)
    assert supervisor.join(10) == []  # ended without a stop request
    assert runs == [1] and feature.state == "ended" and feature.ready.is_set()
    assert statuses[-1] == "STATUS=aside ended"


def test_a_failing_status_is_restarted_with_doubling_delays() -> None:
    stop = StopFlag()
    delays: List[float] = []
    runs = []

    def fails(_stop: StopFlag) -> int:
        runs.append(1)
        if len(runs) == 5:
            stop.set()
        return 1

    supervisor = Supervisor(stop, lambda _message: None, first_delay=0.01, max_delay=0.04)
    real_wait = stop.wait

    def recording_wait(timeout):
        delays.append(timeout)
        return real_wait(timeout)
    stop.wait = recording_wait  # type: ignore[method-assign]
    supervisor.start(Feature("fails", fails))
    assert supervisor.join(10) == []
    assert [delay for delay in delays if delay] == [0.01, 0.02, 0.04, 0.04, 0.04]  # 0: is_set()
    assert supervisor.features[0].failures == 5


# ------------------------------------------------------------------ the resident process

@pytest.fixture
def fake_journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "journalctl"
    script.write_text(FAKE_JOURNALCTL)
    script.chmod(0o755)
    pids = tmp_path / "journalctl.pids"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_JOURNAL_PIDS", str(pids))
    return pids


def started_pids(pids: Path) -> List[int]:
    return [int(line) for line in pids.read_text().split()] if pids.exists() else []


def write_request(root: Path, request: bytes) -> None:
    fd = os.open(root / "var/lib/walt/logs.fifo", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, request)
    finally:
        os.close(fd)


def lines_of(sim: Simulator, stream: str) -> List[str]:
    return [r.line for r in sim.log_records() if r.stream == stream]


def start_services(tmp_path: Path) -> subprocess.Popen:
    errors = open(tmp_path / "services.err", "wb")
    return subprocess.Popen([WALT_NODE, "services"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=errors)


def stop_services(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_killed_feature_is_restarted_and_log_forwarding_never_stops(
        sim: Simulator, sim_node_root: Path, fake_journalctl: Path, tmp_path: Path) -> None:
    etc = sim_node_root / "etc/walt"
    (etc / "journal-forward.conf").write_text("exp experiment\n")
    for name in ("walt-mdns", "walt-lldp-report"):  # no multicast on this machine's LAN
        (etc / f"{name}.disabled").write_text("")
    process = start_services(tmp_path)
    stderr = tmp_path / "services.err"
    try:
        sim.wait_for_logs(lambda _: lines_of(sim, "experiment") == ["from the journal"], timeout=30)
        write_request(sim_node_root, b"LOG probe before the crash\n")
        sim.wait_for_logs(lambda _: lines_of(sim, "probe") == ["before the crash"])
        [first] = started_pids(fake_journalctl)

        os.kill(first, signal.SIGKILL)  # the journal feature's reader dies under it
        assert wait_until(lambda: len(started_pids(fake_journalctl)) == 2, 30), stderr.read_text()
        sim.wait_for_logs(lambda _: lines_of(sim, "experiment") == ["from the journal"] * 2, timeout=30)
        write_request(sim_node_root, b"LOG probe after the crash\n")
        sim.wait_for_logs(lambda _: lines_of(sim, "probe") == ["before the crash", "after the crash"])
        assert process.poll() is None  # one process all along
    finally:
        status = stop_services(process)
    log = stderr.read_text()
    assert status == 0, log
    failures = [line for line in log.splitlines() if "walt-journal-forward failed" in line]
    assert len(failures) == 1 and "journalctl failed (status -9)" in failures[0], log
    assert "walt-journal-forward restarts in 1 s; the other features keep running" in log
    assert "walt-logs failed" not in log


def test_kill_switches_turn_features_off_and_mdns_never_loads_zeroconf(
        sim: Simulator, sim_node_root: Path, tmp_path: Path) -> None:
    etc = sim_node_root / "etc/walt"
    for name in ("walt-mdns", "walt-lldp-report"):
        (etc / f"{name}.disabled").write_text("")
    process = start_services(tmp_path)
    stderr = tmp_path / "services.err"
    try:
        # the daemon says so once its FIFO is open for reading (it exists a moment before)
        assert wait_until(lambda: "walt_node.logstreams.daemon INFO: reading " in stderr.read_text(), 30), \
            stderr.read_text()
        write_request(sim_node_root, b"LOG probe only logs\n")
        sim.wait_for_logs(lambda _: lines_of(sim, "probe") == ["only logs"])
        maps = Path(f"/proc/{process.pid}/maps").read_text()
        children = [Path(task, "children").read_text().split()
                    for task in Path(f"/proc/{process.pid}/task").iterdir()]
    finally:
        status = stop_services(process)
    log = stderr.read_text()
    assert status == 0, log
    assert f"walt-mdns is off: {etc}/walt-mdns.disabled exists" in log
    assert f"walt-lldp-report is off: {etc}/walt-lldp-report.disabled exists" in log
    assert "walt-journal-forward is off: no " in log
    assert "zeroconf" not in maps  # the mDNS feature's modules are loaded only when it runs
    assert children == [[]] * len(children)  # no lldpcli, no journalctl


def test_with_every_service_switched_off_it_exits_0_saying_so(sim_node_root: Path) -> None:
    etc = sim_node_root / "etc/walt"
    for name in ("walt-logs", "walt-mdns", "walt-lldp-report", "walt-journal-forward"):
        (etc / f"{name}.disabled").write_text("")
    done = subprocess.run([WALT_NODE, "services"], capture_output=True, timeout=30)
    assert done.returncode == 0
    assert b"every service is switched off" in done.stderr
    assert not (sim_node_root / "var/lib/walt/logs.fifo").exists()


@pytest.mark.root
@requires_netns
def test_the_mdns_service_publishes_and_keeps_hosts_from_the_resident_process(tmp_path: Path) -> None:
    """Node a runs `walt-node services --mdns-hosts` (its other services switched off), node b
    the plain publisher, each in its own network namespace: b resolves a, and a's /etc/hosts
    gets b, from the mDNS thread of the resident process, which loaded zeroconf for it."""
    nodes = {"a": ("nodea", "10.78.0.1"), "b": ("nodeb", "10.78.0.2")}
    with veth_link((f"{nodes['a'][1]}/24", f"{nodes['b'][1]}/24")) as (left, right, _, _):
        envs, procs = {}, []
        for key, ns, argv in (("a", left, ["services", "--mdns-hosts"]), ("b", right, ["mdns", "publish"])):
            root = tmp_path / key
            (root / "etc/walt").mkdir(parents=True)
            (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n")
            for name in ("walt-logs", "walt-lldp-report"):
                (root / f"etc/walt/{name}.disabled").write_text("")
            envs[key] = dict(os.environ, WALT_NODE_ROOT=str(root), walt_node_hostname=nodes[key][0],
                             walt_node_model="pc-x86-64", walt_image_id="f00d",
                             walt_node_mac="52:54:00:00:00:0" + key)
            errors = open(tmp_path / f"{key}.err", "wb")
            procs.append(ns.popen([WALT_NODE, *argv], env=envs[key], stderr=errors))
        resident = procs[0]
        try:
            def b_resolves_a() -> bool:
                done = right.run([WALT_NODE, "mdns", "resolve", "nodea", "--timeout", "3"], env=envs["b"],
                                 check=False)
                return done.stdout == "10.78.0.1\n"
            assert wait_until(b_resolves_a, 30, step=0.5), (tmp_path / "a.err").read_text()
            hosts = tmp_path / "a/etc/hosts"
            assert wait_until(lambda: "10.78.0.2\tnodeb.local nodeb\n" in hosts.read_text(), 30), \
                hosts.read_text()
            maps = Path(f"/proc/{resident.pid}/maps").read_text()
            assert "zeroconf" in maps
            assert "libssl" not in maps  # asyncio's optional ssl stays out (no TLS here)
        finally:
            for proc in procs:
                stop_services(proc)
    log = (tmp_path / "a.err").read_text()
    assert resident.returncode == 0, log
    assert "walt-mdns failed" not in log
