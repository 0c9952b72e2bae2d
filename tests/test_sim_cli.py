"""`walt-node sim` as users run it: a separate process, a state file, control
commands, records read by `walt-node sim show`."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from support.users import run_as_other_user
from support.wait import wait_until

from walt_node.protocols import LogStream, fake_tftp_get, get_device_info, report_lldp_neighbor
from walt_node.sim import SimConfig, SimConfigError
from walt_node.sim.sample import DEFAULT_IMAGE, NODE_MAC, OTHER_IMAGE, sample_kernel, write_boot_dir

HOST = "127.0.0.1"
REALTIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{6}) (\S+)\.(\S+) -> (.*)$")


def walt_node(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walt_node", *args], capture_output=True,
                          text=True, timeout=timeout)


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 15) -> None:
    assert wait_until(lambda: path.exists() or proc.poll() is not None, timeout), \
        f"{path} not written within {timeout}s"
    assert proc.poll() is None, f"simulator exited {proc.returncode}: {proc.stderr.read()}"


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> Tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Dict]:
    """`walt-node sim` with the sample platform, records and --show-logs."""
    state_file, records = tmp_path / "state.json", tmp_path / "records.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "walt_node", "sim", "--state-file", str(state_file),
         "--records", str(records), "--show-logs"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(state_file, proc)
        yield {"proc": proc, "state_file": state_file, "records": records,
               "state": json.loads(state_file.read_text())}
    finally:
        stop(proc, signal.SIGKILL)


def test_state_file_names_live_ports(sim_process: Dict) -> None:
    state = sim_process["state"]
    assert state["host"] == HOST and state["pid"] == sim_process["proc"].pid
    assert state["records"] == str(sim_process["records"])
    info = get_device_info(HOST, state["rpc_port"], NODE_MAC)
    assert info["name"] == "node1"
    assert fake_tftp_get(HOST, state["logs_port"], NODE_MAC, "/start.ipxe").startswith(b"#!ipxe")


def test_records_show_and_clean_exit(sim_process: Dict) -> None:
    state, records = sim_process["state"], sim_process["records"]
    stamp = time.time() - 60
    with LogStream(HOST, state["logs_port"], "exp") as stream:
        stream.send([(stamp, "hello from the node"), (stamp + 0.5, "second")])
    report_lldp_neighbor(HOST, state["rpc_port"], "aa:bb:cc:dd:ee:ff", "7")
    assert wait_until(lambda: records.read_text().count("\n") >= 3, 10)
    kinds = [json.loads(line) for line in records.read_text().splitlines()]
    logs = [k for k in kinds if k["kind"] == "log"]
    assert [(k["issuer"], k["stream"], k["line"]) for k in logs] == [
        ("node1", "exp", "hello from the node"), ("node1", "exp", "second")]
    assert logs[0]["ts"] == pytest.approx(stamp, abs=1e-6) and logs[0]["received"] > stamp
    (api,) = [k for k in kinds if k["kind"] == "api"]
    assert api == {"kind": "api", "issuer": "node1", "api": "NSAPI",
                   "method": "report_lldp_neighbor", "args": ["aa:bb:cc:dd:ee:ff", "7"], "kwargs": {}}

    shown = walt_node("sim", "show", "--records", str(records))
    assert shown.returncode == 0, shown.stderr
    expected_clock = datetime.fromtimestamp(stamp).strftime("%H:%M:%S.%f")
    assert shown.stdout.splitlines() == [f"{expected_clock} node1.exp -> hello from the node",
                                         f"{datetime.fromtimestamp(stamp + 0.5):%H:%M:%S.%f} "
                                         "node1.exp -> second"]

    code, out, err = stop(sim_process["proc"])
    assert code == 0, err
    assert "listening on 127.0.0.1" in out and str(state["logs_port"]) in out
    assert f"{expected_clock} node1.exp -> hello from the node" in out  # --show-logs
    assert not sim_process["state_file"].exists()


def test_bind_and_conf_through_control_endpoint(sim_process: Dict) -> None:
    state, state_file = sim_process["state"], str(sim_process["state_file"])
    done = walt_node("sim", "bind", "--state-file", state_file, NODE_MAC, OTHER_IMAGE)
    assert done.returncode == 0, done.stderr
    assert fake_tftp_get(HOST, state["logs_port"], NODE_MAC, "/kernel") == \
        sample_kernel(OTHER_IMAGE)
    done = walt_node("sim", "conf", "--state-file", state_file, NODE_MAC, "kexec.allow", "false")
    assert done.returncode == 0, done.stderr
    done = walt_node("sim", "conf", "--state-file", state_file, NODE_MAC, "note", "free text")
    assert done.returncode == 0, done.stderr
    conf = get_device_info(HOST, state["rpc_port"], NODE_MAC)["conf"]
    assert conf["kexec.allow"] is False and conf["note"] == "free text"

    bad = walt_node("sim", "bind", "--state-file", state_file, NODE_MAC, "no/such:image")
    assert bad.returncode == 1 and "unknown image 'no/such:image'" in bad.stderr
    bad = walt_node("sim", "bind", "--state-file", state_file, "02:00:00:00:00:09", OTHER_IMAGE)
    assert bad.returncode == 1 and "unknown node mac" in bad.stderr


def test_show_follow_prints_new_lines(sim_process: Dict) -> None:
    state = sim_process["state"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "walt_node", "sim", "show", "--records",
         str(sim_process["records"]), "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # a first line shown proves the follower reached the end of the file...
        with LogStream(HOST, state["logs_port"], "live", timestamps=False) as stream:
            stream.send([(0, "already there")])
        assert REALTIME.match(_readline_with_timeout(follower, 10)).groups()[3] == "already there"
        # ...so this one can only be shown by following
        with LogStream(HOST, state["logs_port"], "live", timestamps=False) as stream:
            stream.send([(0, "arrives later")])
        line = _readline_with_timeout(follower, 10)
        match = REALTIME.match(line)
        assert match and match.groups()[1:] == ("node1", "live", "arrives later")
    finally:
        code, _, err = stop(follower, signal.SIGINT)
    assert code in (0, 130), err


def _readline_with_timeout(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError("no line printed in time")
    return proc.stdout.readline().rstrip("\n")


def test_control_errors_are_clear(tmp_path: Path) -> None:
    missing = walt_node("sim", "bind", "--state-file", str(tmp_path / "nope.json"), NODE_MAC, OTHER_IMAGE)
    assert missing.returncode == 1 and "cannot read state file" in missing.stderr
    (tmp_path / "bad.json").write_text("[]")
    bad = walt_node("sim", "conf", "--state-file", str(tmp_path / "bad.json"), NODE_MAC, "k", "v")
    assert bad.returncode == 1 and "not a walt-node sim state file" in bad.stderr
    show = walt_node("sim", "show", "--records", str(tmp_path / "none.jsonl"))
    assert show.returncode == 1 and "no records file" in show.stderr


def _start(args: List[str], tmp_path: Path) -> Tuple[subprocess.Popen, Dict]:
    state_file = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-m", "walt_node", "sim", "--state-file",
                             str(state_file), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(state_file, proc)
    return proc, json.loads(state_file.read_text())


def test_config_file_and_flags(tmp_path: Path) -> None:
    write_boot_dir(tmp_path / "img-a" / "boot", "me/a:latest", model="rpi-3-b")
    write_boot_dir(tmp_path / "img-b" / "boot", "me/b:v2", model="rpi-3-b")
    config = {"nodes": [{"mac": "AA-BB-CC-00-00-01", "name": "rpi1", "ip": "127.0.0.1",
                         "model": "rpi-3-b", "image": "me/a:latest", "conf": {"kexec.allow": False}}],
              "images": [{"fullname": "me/a:latest", "id": "aaa", "boot_dir": "img-a/boot"}]}
    (tmp_path / "platform.json").write_text(json.dumps(config))
    proc, state = _start(["--config", str(tmp_path / "platform.json"),
                          "--image", f"fullname=me/b:v2,id=bbb,boot_dir={tmp_path}/img-b/boot",
                          "--node", "mac=aa:bb:cc:00:00:02,name=rpi2,ip=127.0.0.9,model=rpi-3-b,"
                                    "image=me/b:v2"], tmp_path)
    try:
        info = get_device_info(HOST, state["rpc_port"], "aa:bb:cc:00:00:01")
        assert info["name"] == "rpi1" and info["conf"] == {"kexec.allow": False}
        assert fake_tftp_get(HOST, state["logs_port"], "aa:bb:cc:00:00:02", "/kernel") == \
            sample_kernel("me/b:v2")
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert "node rpi2 mac aa:bb:cc:00:00:02" in out


def test_fixed_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    proc, state = _start([], tmp_path)
    try:
        busy = walt_node("sim", "--logs-port", str(state["logs_port"]))
        assert busy.returncode == 1
        assert f"cannot listen on 127.0.0.1:{state['logs_port']}" in busy.stderr
    finally:
        assert stop(proc, signal.SIGINT)[0] == 0


@pytest.mark.parametrize("config, message", [
    ("{not json", "not valid JSON"),
    ('{"nodes": [], "imgs": []}', "unknown top-level key(s) imgs"),
    ('{"nodes": [{"mac": "xx", "name": "n", "ip": "1.2.3.4", "model": "m", "image": "a/b:c"}]}',
     "'xx' is not a MAC address"),
    ('{"nodes": [{"mac": "02:00:00:00:00:01", "name": "n", "ip": "1.2.3.4", "model": "m", '
     '"image": "a/b:c"}]}', "bound to image 'a/b:c', which is not in the images list"),
    ('{"images": [{"fullname": "a/b:c", "id": "1"}]}', "boot_dir"),
    ('{"images": [{"fullname": "noslash", "id": "1", "boot_dir": "."}]}', "user/name:tag"),
    ('{"nodes": [{"mac": "02:00:00:00:00:01", "colour": "red"}]}', "unknown key(s) colour"),
])
def test_bad_config_is_refused_with_the_field_named(tmp_path: Path, config: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(config)
    with pytest.raises(SimConfigError) as error:
        SimConfig.load(path)
    assert message in str(error.value)
    done = walt_node("sim", "--config", str(path))
    assert done.returncode == 1 and message in done.stderr


def test_bad_flags_are_refused(tmp_path: Path) -> None:
    done = walt_node("sim", "--node", "mac=02:00:00:00:00:01,oops")
    assert done.returncode == 1 and "'oops' is not key=value" in done.stderr
    done = walt_node("sim", "--http-port", "99999")
    assert done.returncode == 2 and "'99999' is not a port number" in done.stderr
    done = walt_node("sim", "--records", str(tmp_path / "no-such-dir" / "r.jsonl"))
    assert done.returncode == 1 and "cannot write the records file" in done.stderr


def test_help_lists_actions() -> None:
    done = walt_node("sim", "--help")
    assert done.returncode == 0
    for word in ("bind", "conf", "show", "--state-file", "--records", "--show-logs", "--host"):
        assert word in done.stdout


@pytest.mark.root
def test_records_are_never_appended_through_a_link_another_user_planted(
        users_directory: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's data\n")
    records = users_directory / "sim.jsonl"
    run_as_other_user(lambda: os.symlink(victim, records))
    done = walt_node("sim", "--records", str(records))
    assert done.returncode == 1
    assert f"cannot write the records file {records}: {records} is a symbolic link" in done.stderr
    assert victim.read_text() == "root's data\n"


# ------------------------------------------------------------ hostile pickles

def _nested_key(depth: int) -> bytes:
    """A dict whose key is a tuple nested ``depth`` deep: hashing it recurses in C."""
    return (b"\x80\x04" + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * depth
            + pickle.NONE + pickle.SETITEM + pickle.STOP)


def _recursive_list() -> bytes:
    loop: list = []
    loop.append(loop)
    return pickle.dumps({"node_mac": loop, "path": "/kernel"}, protocol=4)


def _tftp_status(port: int, payload: bytes) -> str:
    with socket.create_connection((HOST, port), timeout=15) as sock:
        sock.sendall(b"12\n")
        reader = sock.makefile("rb")
        reader.readline()  # ready
        sock.sendall(payload)
        return reader.readline().decode(errors="replace")


@pytest.mark.parametrize("payload, refusal", [
    (_nested_key(1_000_000), "pickle nested too deep: more than 100 levels"),
    (_nested_key(101), "pickle nested too deep"),
    (_recursive_list(), "a container filled after being used"),
], ids=["million-deep-key", "just-too-deep", "recursive"])
def test_nested_pickles_are_refused_and_the_simulator_lives(sim_process: Dict, payload: bytes,
                                                            refusal: str) -> None:
    """A tuple nested a million deep used as a dict key killed the simulator (SIGSEGV)."""
    port = sim_process["state"]["logs_port"]
    status = _tftp_status(port, payload)
    assert status.startswith("ERROR") and refusal in status, status
    assert sim_process["proc"].poll() is None
    assert fake_tftp_get(HOST, port, NODE_MAC, "/kernel", timeout=10) == sample_kernel(DEFAULT_IMAGE)
    stderr = stop(sim_process["proc"])[2]
    assert stderr.count("pickle nested too deep") <= 1  # logged once, then counted


def test_nesting_up_to_the_bound_is_accepted(sim_process: Dict) -> None:
    request = {"node_mac": NODE_MAC, "path": "/kernel", "extra": _nested_value(98)}
    status = _tftp_status(sim_process["state"]["logs_port"], pickle.dumps(request, protocol=4))
    assert status == "OK\n"


def _nested_value(depth: int) -> object:
    value: object = ()
    for _ in range(depth):
        value = [value]
    return value
