"""walt-node lldp: real lldpd daemons in two network namespaces (one playing
the switch, one the node) and the loopback simulator receiving the reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
from support.idle import ON_X86_64, has_timeout, in_select
from support.netns import Netns, requires_netns, veth_link
from support.trickle import TrickleServer
from support.wait import wait_until

from walt_node.lldp import Neighbor, Reporter, parse_neighbors

SWITCH_MAC = "02:5a:11:22:33:44"
NODE_MAC = "52:54:00:12:34:56"
HOSTILE_PORT = "port'); import os; os.system('touch /tmp/pwned'); ('\"x"

requires_lldpd = pytest.mark.skipif(shutil.which("lldpd") is None or shutil.which("lldpcli") is None,
                                    reason="lldpd is not installed")


def walt_node(*args: str, env: dict, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walt_node", *args], env=env, timeout=timeout,
                          capture_output=True, text=True)


def start_lldpd(ns: Netns, ifname: str, sock: Path) -> None:
    # -d: stay in the foreground so cleanup can stop it; -O: ignore the host's lldpd.d
    ns.popen(["lldpd", "-d", "-u", str(sock), "-I", ifname, "-O", "/dev/null"])
    def answers() -> bool:
        return sock.exists() and subprocess.run(
            ["lldpcli", "-u", str(sock), "show", "configuration"], timeout=10,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0

    if not wait_until(answers, 10):
        pytest.fail(f"lldpd does not answer on its socket {sock}")


def lldpcli(sock: Path, *words: str) -> str:
    return subprocess.run(["lldpcli", "-u", str(sock), *words], check=True, timeout=10,
                          capture_output=True, text=True).stdout


@pytest.fixture
def socket_dir():
    # lldpd's own lldpcli (run as user _lldpd) must reach the socket: pytest's tmp dirs are 0700
    path = Path(tempfile.mkdtemp(prefix="walt-lldp-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lldp_link(socket_dir):
    """(switch socket, node socket, switch ifname) for a switch/node veth link with lldpd on both ends."""
    with veth_link(macs=(SWITCH_MAC, NODE_MAC)) as (switch, node, sw_if, node_if):
        sw_sock, node_sock = socket_dir / "switch.sock", socket_dir / "node.sock"
        start_lldpd(switch, sw_if, sw_sock)
        start_lldpd(node, node_if, node_sock)
        lldpcli(sw_sock, "configure", "lldp", "tx-interval", "1")
        lldpcli(sw_sock, "configure", "ports", sw_if, "lldp", "portidsubtype", "local", HOSTILE_PORT)
        yield sw_sock, node_sock, sw_if


def node_env(rpc_port: int) -> dict:
    return dict(os.environ, walt_server_ip="127.0.0.1", walt_server_rpc_port=str(rpc_port),
                PYTHONPATH=str(Path(__file__).resolve().parents[1]))


def neighbors_json(node_sock: Path, env: dict) -> list:
    done = walt_node("lldp", "neighbors", "--json", "--lldpd-socket", str(node_sock), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def see_switch(node_sock: Path, env: dict, port: str) -> Callable[[], bool]:
    return lambda: any(n["port_id"] == port for n in neighbors_json(node_sock, env))


@pytest.fixture
def simulator(sim):
    """The shared loopback simulator (tests/conftest.py): node1 is 127.0.0.1, mac NODE_MAC."""
    return sim


def lldp_calls(sim) -> List[Tuple]:
    return [tuple(c.args) for c in sim.api_calls() if c.method == "report_lldp_neighbor"]


# ------------------------------------------------------------------ real lldpd

@pytest.mark.root
@requires_netns
@requires_lldpd
def test_neighbors_reads_real_lldpd_and_report_sends_exact_values(lldp_link, simulator):
    _, node_sock, _ = lldp_link
    env = node_env(simulator.rpc_port)
    assert wait_until(see_switch(node_sock, env, HOSTILE_PORT), 15), "node's lldpd never saw the switch"

    [seen] = neighbors_json(node_sock, env)
    assert seen["chassis_id"] == SWITCH_MAC and seen["chassis_id_type"] == "mac"
    assert seen["problem"] is None

    done = walt_node("lldp", "report", "--lldpd-socket", str(node_sock), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reported 1" in done.stdout
    calls = [c for c in simulator.api_calls() if c.method == "report_lldp_neighbor"]
    assert [(c.api, tuple(c.args)) for c in calls] == [("NSAPI", (SWITCH_MAC, HOSTILE_PORT))]
    assert isinstance(calls[0].args[1], str)
    assert not Path("/tmp/pwned").exists()


@pytest.mark.root
@requires_netns
@requires_lldpd
def test_watch_reports_changes_and_again_after_server_restart(lldp_link, simulator, tmp_path):
    sw_sock, node_sock, sw_if = lldp_link
    env = node_env(simulator.rpc_port)
    log = open(tmp_path / "watch.log", "w")
    watch = subprocess.Popen(
        [sys.executable, "-m", "walt_node", "lldp", "report", "--watch", "--interval", "0.3",
         "--refresh", "0", "--lldpd-socket", str(node_sock)], env=env, stdout=log, stderr=log)
    try:
        assert wait_until(lambda: (SWITCH_MAC, HOSTILE_PORT) in lldp_calls(simulator), 15)
        if ON_X86_64:  # nothing to do: asleep until lldpd or the server says something (no polling)
            seen: list = []
            assert wait_until(lambda: in_select(watch.pid, seen), 20, step=0.1), seen
            assert not has_timeout(seen), f"the watcher polls ({seen})"

        # the switch port changes: the new label is reported
        lldpcli(sw_sock, "configure", "ports", sw_if, "lldp", "portidsubtype", "local", "Gi1/0/7")
        assert wait_until(lambda: (SWITCH_MAC, "Gi1/0/7") in lldp_calls(simulator), 15)
        # the change is the marker: the unchanged neighbour had its chance to be reported again
        assert lldp_calls(simulator) == [(SWITCH_MAC, HOSTILE_PORT), (SWITCH_MAC, "Gi1/0/7")]

        # the server restarts (forgetting what it knew): its API session ends, so the
        # neighbour is reported again (periodic refresh is off: --refresh 0)
        simulator.stop()
        assert wait_until(lambda: "closed its API session" in (tmp_path / "watch.log").read_text(), 15)
        before = len(lldp_calls(simulator))
        simulator.start()
        assert wait_until(lambda: len(lldp_calls(simulator)) > before, 15)
        assert lldp_calls(simulator)[-1] == (SWITCH_MAC, "Gi1/0/7")
        assert watch.poll() is None, "the watcher died"
    finally:
        watch.terminate()
        watch.wait(timeout=10)
        log.close()


@pytest.mark.root
@requires_netns
@requires_lldpd
def test_report_skips_and_counts_a_neighbour_whose_chassis_is_not_a_mac(lldp_link, simulator):
    sw_sock, node_sock, _ = lldp_link
    env = node_env(simulator.rpc_port)
    lldpcli(sw_sock, "configure", "system", "chassisid", "not-a-mac")
    assert wait_until(lambda: any(n["chassis_id"] == "not-a-mac"
                                  for n in neighbors_json(node_sock, env)), 15)
    done = walt_node("lldp", "report", "--lldpd-socket", str(node_sock), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "reported 0" in done.stdout and "skipped 1" in done.stdout
    assert "chassis id is not a MAC (type 'local')" in done.stdout
    assert lldp_calls(simulator) == []


@pytest.mark.root
@requires_netns
@requires_lldpd
def test_report_timeout_bounds_the_whole_report_against_a_trickling_server(lldp_link):
    """The server answers a byte every 0.2 s: no read ever times out, but --timeout 1
    bounds the whole report (connect, session, call), so the report gives up while the
    server is still trickling."""
    _, node_sock, _ = lldp_link
    assert wait_until(see_switch(node_sock, node_env(1), HOSTILE_PORT), 15)
    reply = b"10\n" + b"('RESULT', None)" + b" " * 40 + b"\n"
    with TrickleServer(reply, interval=0.2) as server:
        done = walt_node("lldp", "report", "--lldpd-socket", str(node_sock), "--timeout", "1",
                         env=node_env(server.port), timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "no answer in time" in done.stderr
        assert server.accepted >= 1 and server.wait_all_finished()
        assert server.completed == 0, f"the report waited for the whole trickle: {server.sent}"


@pytest.mark.root
@requires_netns
@requires_lldpd
def test_neighbors_table_shows_what_the_switch_announces_escaped(lldp_link):
    sw_sock, node_sock, _ = lldp_link
    env = node_env(1)
    lldpcli(sw_sock, "configure", "system", "hostname", "sw\x1b[2J\x1b]0;owned\x07")
    assert wait_until(lambda: any("owned" in n["system_name"] for n in neighbors_json(node_sock, env)), 15)
    done = walt_node("lldp", "neighbors", "--lldpd-socket", str(node_sock), env=env)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "sw\\x1b[2J\\x1b]0;owned\\x07" in done.stdout


def test_report_without_lldpd_says_so(tmp_path):
    env = node_env(1)
    done = walt_node("lldp", "neighbors", "--lldpd-socket", str(tmp_path / "nothing.sock"), env=env)
    assert done.returncode == 1
    assert "is lldpd running?" in done.stderr


def test_report_without_lldpcli_names_the_package(tmp_path):
    env = dict(node_env(1), PATH=str(tmp_path))
    done = walt_node("lldp", "report", env=env)
    assert done.returncode == 1
    assert "lldpcli was not found: install lldpd" in done.stderr


# ------------------------------------------------------- reporter state logic

def neighbor(port: str = "Gi1", chassis: str = SWITCH_MAC, kind: str = "mac",
             interface: str = "eth0") -> Neighbor:
    return Neighbor(interface, chassis, kind, port, "local")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_reporter_reports_new_and_changed_only_and_retries_failures():
    sent: List[Tuple[str, str]] = []
    failing = {"on": False}

    def report(mac: str, port: str) -> None:
        if failing["on"]:
            raise ConnectionError("server down")
        sent.append((mac, port))

    clock = FakeClock()
    reporter = Reporter(report, refresh=100, clock=clock)
    assert len(reporter.process([neighbor()]).reported) == 1
    assert len(reporter.process([neighbor()]).unchanged) == 1
    failing["on"] = True
    outcome = reporter.process([neighbor("Gi2")])
    assert [n.port_id for n, _ in outcome.failed] == ["Gi2"]
    failing["on"] = False
    assert [n.port_id for n in reporter.process([neighbor("Gi2")]).reported] == ["Gi2"]
    clock.now = 150
    assert [n.port_id for n in reporter.process([neighbor("Gi2")]).reported] == ["Gi2"]
    assert sent == [(SWITCH_MAC, "Gi1"), (SWITCH_MAC, "Gi2"), (SWITCH_MAC, "Gi2")]


def test_reporter_reports_a_neighbour_again_when_it_comes_back():
    sent: List[Tuple[str, str]] = []
    reporter = Reporter(lambda mac, port: sent.append((mac, port)), refresh=None)
    reporter.process([neighbor()])
    reporter.process([])
    reporter.process([neighbor()])
    assert sent == [(SWITCH_MAC, "Gi1")] * 2


def test_reporter_skips_and_counts_unusable_neighbours():
    reporter = Reporter(lambda mac, port: None)
    outcome = reporter.process([neighbor(chassis="sw1", kind="local"), neighbor(port=""),
                                neighbor(chassis="02:AA:BB:CC:DD:EE")])
    assert [n.switch_mac for n in outcome.reported] == ["02:aa:bb:cc:dd:ee"]
    assert sorted(reason for _, reason in outcome.skipped) == [
        "chassis id is not a MAC (type 'local')", "no port id"]
    assert "skipped 2" in outcome.summary() and reporter.skipped_total == 2


def test_parse_neighbors_handles_the_empty_document_and_watch_sections():
    assert parse_neighbors({"lldp": [{}]}) == []
    chassis = [{"id": [{"type": "mac", "value": SWITCH_MAC}]}]
    port = [{"id": [{"type": "ifname", "value": "ge-0/0/1"}]}]
    event = {"lldp-added": [{"interface": [{"name": "eth0", "chassis": chassis, "port": port}]}]}
    [parsed] = parse_neighbors(event, "lldp-added")
    assert (parsed.interface, parsed.switch_mac, parsed.port_id) == ("eth0", SWITCH_MAC, "ge-0/0/1")
