"""Time sync with the WalT server as PTP master (`walt-node setup --time-sync ptp`).

A real ptp4l master (domain 42, as the WalT server) runs in one network
namespace; in the other, `walt-node ptp-slave` with the configuration setup
installs finds the interface that routes to the server from the node facts
and becomes ptp4l.  Both use software timestamps on a veth pair.  The slave
runs with --measure-only (ptp4l's free_running): both namespaces share this
machine's clock, which a test must not move.  The test waits for the slave's
servo to lock (state s2) and the measured offset to stay small.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from support.netns import requires_netns, veth_link

from walt_node.install.environment import data_dir
from walt_node.sim.sample import make_node_root

MASTER_IP, NODE_IP = "10.79.0.1", "10.79.0.2"
MASTER_CONFIG = """[global]
domainNumber 42
masterOnly 1
network_transport UDPv4
delay_mechanism E2E
time_stamping software
hybrid_e2e 1
logSyncInterval -3
verbose 1
use_syslog 0
"""
# ptp4l's periodic summary of the offsets it measured to the master, in ns
SUMMARY_RE = re.compile(r"rms\s+(\d+) max\s+(\d+) freq")
SLAVE_RE = re.compile(r"port 1: \w+ to UNCALIBRATED on RS_SLAVE")
CONVERGED_SUMMARIES = 2
MAX_OFFSET_NS = 100_000  # same clock on both sides: only the path's jitter remains
DEADLINE = 90.0

pytestmark = [requires_netns, pytest.mark.slow,
              pytest.mark.skipif(not Path("/usr/sbin/ptp4l").exists(),
                                 reason="needs linuxptp (.ci/apt-packages)")]


def read_until_converged(proc: subprocess.Popen, deadline: float) -> List[str]:
    """The slave's lines until it follows a master and ``CONVERGED_SUMMARIES`` summaries in
    a row show offsets below ``MAX_OFFSET_NS``, after a first one (ptp4l's warm-up)."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen: List[str] = []
    summaries: List[int] = []
    end = time.monotonic() + deadline
    while True:
        if not selector.select(max(0.0, end - time.monotonic())):
            raise AssertionError(f"no convergence within {deadline:.0f} s:\n" + "".join(seen[-30:]))
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("the slave exited:\n" + "".join(seen[-30:]))
        seen.append(line)
        match = SUMMARY_RE.search(line)
        if match:
            summaries.append(int(match.group(2)))
            tail = summaries[1:][-CONVERGED_SUMMARIES:]
            if len(tail) == CONVERGED_SUMMARIES and max(tail) < MAX_OFFSET_NS:
                return seen


def test_node_follows_a_domain_42_master_over_the_interface_to_the_server(tmp_path: Path) -> None:
    master_config = tmp_path / "master.conf"
    master_config.write_text(MASTER_CONFIG)
    node_root = make_node_root(tmp_path / "node", server_ip=MASTER_IP)
    env = {**os.environ, "WALT_NODE_ROOT": str(node_root)}
    slave_config = data_dir() / "optional/ptp4l.conf"  # what setup installs as /etc/walt/ptp4l.conf
    with veth_link((f"{MASTER_IP}/24", f"{NODE_IP}/24")) as (server, node, server_if, node_if):
        server.popen(["ptp4l", "-f", str(master_config), "-i", server_if])
        slave = node.popen([sys.executable, "-m", "walt_node", "ptp-slave", "-f", str(slave_config),
                            "--measure-only"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        lines = read_until_converged(slave, DEADLINE)
        # the process walt-node replaced itself with: ptp4l on the interface to the server
        argv = Path(f"/proc/{slave.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert any(SLAVE_RE.search(line) for line in lines), lines  # it took the master as its master
    # the program is found on PATH (a link to /usr/sbin/ptp4l when CI restricts PATH)
    assert Path(argv[0].decode()).resolve() == Path("/usr/sbin/ptp4l").resolve()
    assert [arg.decode() for arg in argv[1:]] == ["-f", str(slave_config), "-i", node_if,
                                                  "--free_running", "1"]


def test_without_a_route_to_the_server_it_says_so(tmp_path: Path) -> None:
    node_root = make_node_root(tmp_path / "node", server_ip="10.79.99.1")
    env = {**os.environ, "WALT_NODE_ROOT": str(node_root)}
    with veth_link(("10.79.1.1/24", "10.79.1.2/24")) as (_, node, _, _):
        done = node.run([sys.executable, "-m", "walt_node", "ptp-slave"], check=False, env=env)
    assert done.returncode == 1
    assert "no route to the WalT server 10.79.99.1" in done.stderr
