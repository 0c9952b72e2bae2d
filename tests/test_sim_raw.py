"""The simulator against an independent raw-socket client written from
docs/protocols.md, mostly with malformed input: it must answer like a server
(close, or a non-RESULT status) and keep serving everybody else."""

from __future__ import annotations

import ast
import json
import os
import pickle
import socket
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, List, Optional

import pytest
from support.wait import wait_until

from walt_node.sim import Simulator
from walt_node.sim.sample import (
    DEFAULT_IMAGE,
    NODE_MAC,
    NODE_NAME,
    OTHER_IMAGE,
    sample_config,
    sample_kernel,
)

HOST = "127.0.0.1"
TIMEOUT = 5.0


class Raw:
    """A bare client: bytes out, lines/bytes in, every read with a timeout."""

    def __init__(self, port: int, source: Optional[str] = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((HOST, port))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; partial {self.buffer[:100]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def closed_by_server(self) -> bool:
        """True if the server closes the connection (reads EOF) within the timeout."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def assert_logs_port_alive(sim: Simulator) -> None:
    raw = Raw(sim.logs_port)
    count = len(sim.log_records())
    raw.send(b"REQ_NEW_INCOMING_LOGS\nalive\nNO_TIMESTAMPS\nstill alive\nCLOSE\n")
    records = sim.wait_for_logs(lambda recs: len(recs) > count, timeout=TIMEOUT)
    assert records[-1].line == "still alive"
    raw.close()


def api_session(sim: Simulator, api: str = "NSAPI", request: bytes = b"REQ_API_SESSION") -> Raw:
    raw = Raw(sim.rpc_port)
    raw.send(request + b"\n" + api.encode() + b"\n")
    assert raw.line() == b"10.0"
    return raw


def call(raw: Raw, line: str) -> Any:
    raw.send(line.encode() + b"\n")
    return ast.literal_eval(raw.line().decode())


# ---------------------------------------------------------------- logs port

@pytest.mark.parametrize("first", [b"GARBAGE\n", b"\xff\xfe\x00\n", b"99\n", b"\n",
                                   b"x" * (2 << 20)])
def test_unknown_or_garbage_request_is_closed(sim: Simulator, first: bytes) -> None:
    raw = Raw(sim.logs_port)
    try:
        raw.send(first)
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: fine
    assert raw.closed_by_server()
    assert sim.log_records() == []
    assert_logs_port_alive(sim)


def test_numeric_request_and_unknown_timestamp_mode(sim: Simulator) -> None:
    """As on a WalT 10 server: any mode but NO_TIMESTAMPS means stamps inside; a
    carriage return is part of the line, so "CLOSE\\r" is no CLOSE (and not a number)."""
    raw = Raw(sim.logs_port)
    raw.send(b"0\ns\nSOMETIMES_TIMESTAMPS\n123 x\nCLOSE\n")
    (record,) = sim.wait_for_logs(lambda recs: len(recs) >= 1)
    assert (record.line, record.ts) == ("x", record.received)  # 123: too old, replaced
    assert raw.closed_by_server()
    raw = Raw(sim.logs_port)
    raw.send(b"0\nnumeric\nTIMESTAMPS_INSIDE\n%.6f via zero\r\nCLOSE\r\n" % time.time())
    assert raw.closed_by_server()
    assert len(sim.log_records()) == 1  # that read was refused whole


def test_line_without_valid_stamp_closes_the_stream(sim: Simulator) -> None:
    raw = Raw(sim.logs_port)
    raw.send(b"REQ_NEW_INCOMING_LOGS\ns\nTIMESTAMPS_INSIDE\nnot-a-number hello\n")
    assert raw.closed_by_server()
    assert sim.log_records() == []


def test_lenient_sim_keeps_a_line_without_valid_stamp_whole(tmp_path: Path) -> None:
    with Simulator(sample_config(tmp_path), lenient_logs=True) as sim:
        line_without_valid_stamp_is_kept_whole(sim)


def line_without_valid_stamp_is_kept_whole(sim: Simulator) -> None:
    raw = Raw(sim.logs_port)
    raw.send(b"REQ_NEW_INCOMING_LOGS\ns\nTIMESTAMPS_INSIDE\nnot-a-number hello\nnan x\n\nCLOSE\n")
    records = sim.wait_for_logs(lambda recs: len(recs) >= 3)
    assert [r.line for r in records] == ["not-a-number hello", "x", ""]
    assert all(r.ts == r.received for r in records)


def test_huge_log_line_is_truncated_and_stream_continues(sim: Simulator) -> None:
    raw = Raw(sim.logs_port)
    raw.send(b"REQ_NEW_INCOMING_LOGS\nbig\nNO_TIMESTAMPS\n" + b"A" * (3 << 20) + b"\nafter\nCLOSE\n")
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    assert records[0].line.startswith("A" * 1000) and "truncated" in records[0].line
    assert len(records[0].line) < (1 << 20) + 100
    assert records[1].line == "after"


def test_unterminated_last_line_is_kept_before_disconnection(sim: Simulator) -> None:
    raw = Raw(sim.logs_port)
    raw.send(b"REQ_NEW_INCOMING_LOGS\ns\nNO_TIMESTAMPS\ncomplete\npartial")
    sim.wait_for_logs(lambda recs: len(recs) >= 1)
    raw.close()
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    # as a WalT 10 server does: the marker is appended to the unterminated line
    assert [r.line for r in records] == ["complete", "partial<disconnected!>"]


def test_issuer_is_source_ip_when_no_node_has_it(sim: Simulator) -> None:
    raw = Raw(sim.logs_port, source="127.0.0.2")
    raw.send(b"REQ_NEW_INCOMING_LOGS\nsensor\nNO_TIMESTAMPS\nfrom elsewhere\nCLOSE\n")
    (record,) = sim.wait_for_logs(lambda recs: len(recs) >= 1)
    assert (record.issuer, record.stream) == ("127.0.0.2", "sensor")
    Raw(sim.logs_port).send(b"0\nsensor\nNO_TIMESTAMPS\nfrom node\nCLOSE\n")
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    assert records[1].issuer == NODE_NAME


def test_many_lines_in_tiny_and_huge_chunks(sim: Simulator) -> None:
    lines = [f"line {i} " + "x" * (i % 50) for i in range(20000)]
    payload = b"".join(b"%.6f %s\n" % (time.time(), t.encode()) for t in lines)
    raw = Raw(sim.logs_port)
    raw.send(b"0\nbulk\nTIMESTAMPS_INSIDE\n")
    for i in range(0, 300):  # first part split at awkward places, byte by byte
        raw.send(payload[i:i + 1])
    raw.send(payload[300:] + b"CLOSE\n")
    records = sim.wait_for_logs(lambda recs: len(recs) >= len(lines), timeout=20)
    assert [r.line for r in records] == lines


# --------------------------------------------------------------- fake TFTP

def tftp(sim: Simulator, payload: bytes) -> Raw:
    raw = Raw(sim.logs_port)
    raw.send(b"12\n")
    raw.line()  # ready
    raw.send(payload)
    return raw


def test_fake_tftp_valid_request(sim: Simulator) -> None:
    raw = tftp(sim, pickle.dumps({"node_mac": NODE_MAC, "path": "/kernel"}, protocol=4))
    assert raw.line() == b"OK"
    size = int(raw.line())
    assert raw.exactly(size) == sample_kernel(DEFAULT_IMAGE)


class Exploit:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_fake_tftp_refuses_pickled_code(sim: Simulator, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    raw = tftp(sim, pickle.dumps(Exploit(canary), protocol=4))
    status = raw.line()
    assert status != b"OK" and b"refused" in status
    assert not canary.exists()
    assert_logs_port_alive(sim)


@pytest.mark.parametrize("payload", [
    b"this is not a pickle\n.",
    pickle.dumps(["node_mac", "path"], protocol=4),
    pickle.dumps({"node_mac": 42, "path": "/kernel"}, protocol=4),
    pickle.dumps({"node_mac": NODE_MAC, "path": "/../../../../etc/passwd"}, protocol=4),
    # BINUNICODE8 announcing a 2**60-byte string: must not be believed
    b"\x80\x04\x8d" + struct.pack("<Q", 1 << 60) + b"abc",
    # BYTEARRAY8 (an out-of-band buffer opcode) announcing 2**40 bytes: refused before allocating
    b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b"abc",
])
def test_fake_tftp_bad_requests_get_a_status_line(sim: Simulator, payload: bytes) -> None:
    raw = tftp(sim, payload)
    status = raw.line()
    assert status != b"OK" and status.startswith(b"ERROR")
    assert_logs_port_alive(sim)


def test_fake_tftp_follows_bind_done_during_run(sim: Simulator) -> None:
    sim.bind(NODE_MAC, OTHER_IMAGE)
    raw = tftp(sim, pickle.dumps({"node_mac": NODE_MAC.upper(), "path": "kernel"}, protocol=4))
    assert raw.line() == b"OK"
    assert raw.exactly(int(raw.line())) == sample_kernel(OTHER_IMAGE)


# ------------------------------------------------------------- API sessions

def test_api_numeric_request_and_shell_style_close(sim: Simulator) -> None:
    raw = api_session(sim, request=b"10")
    reply = call(raw, repr(("API_CALL", "sync_clock", (), {})))
    assert reply[0] == "RESULT" and isinstance(reply[1], int)  # the next whole second
    raw.send(b"('CLOSE')\n")  # the shell client's spelling: a plain string
    assert raw.closed_by_server()


@pytest.mark.parametrize("line", [
    "this is not python",
    "('API_CALL', 'sync_clock', (), {}",
    "__import__('os').system('touch {canary}')",
    "('API_CALL', 'sync_clock', (), {}) + ()",
    "[" * 100000 + "]" * 100000,
    "('API_CALL', 'sync_clock', (), {1: 2})",
    "('SOMETHING_ELSE',)",
    "42",
    "   ",
])
def test_bad_api_lines_end_the_session(sim: Simulator, tmp_path: Path, line: str) -> None:
    """As on a WalT 10 server: a request that is not an API call ends the session."""
    canary = tmp_path / "pwned"
    raw = api_session(sim)
    raw.send((line.format(canary=canary) if "{canary}" in line else line).encode() + b"\n")
    assert raw.closed_by_server()
    assert not canary.exists()
    assert call(api_session(sim), repr(("API_CALL", "sync_clock", (), {})))[0] == "RESULT"


@pytest.mark.parametrize("line, error", [
    ("('API_CALL', 'no_such_method', (), {})", "AttributeError"),
    ("('API_CALL', 'sync_clock', (1, 2), {})", "TypeError"),
    ("('API_CALL', 'report_lldp_neighbor', ('only one',), {})", "TypeError"),
])
def test_failing_calls_answer_an_exception_and_session_continues(
        sim: Simulator, line: str, error: str) -> None:
    raw = api_session(sim)
    raw.send(line.encode() + b"\n")
    reply = raw.line().decode()
    assert reply.startswith(f"('RESULT', {error}(") and reply.endswith(")")
    assert call(raw, repr(("API_CALL", "sync_clock", (), {})))[0] == "RESULT"
    raw.send(b"('CLOSE',)\n")
    assert raw.closed_by_server()


def test_huge_api_line_ends_session_cleanly(sim: Simulator) -> None:
    raw = api_session(sim)
    try:
        raw.send(b"'" + b"x" * (3 << 20))
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert raw.closed_by_server()
    assert call(api_session(sim), repr(("API_CALL", "sync_clock", (), {})))[0] == "RESULT"


def test_unknown_api_name_is_closed(sim: Simulator) -> None:
    raw = Raw(sim.rpc_port)
    raw.send(b"REQ_API_SESSION\nROOTAPI\n")
    assert raw.closed_by_server()
    raw = Raw(sim.rpc_port)
    raw.send(b"REQ_NEW_INCOMING_LOGS\n")
    assert raw.closed_by_server()


def test_pickle4_mode(sim: Simulator, tmp_path: Path) -> None:
    raw = api_session(sim, "VSAPI")
    raw.send(repr(("SET_MODE", "pickle4")).encode() + b"\n")
    raw.send(pickle.dumps(("API_CALL", "get_device_info", (NODE_MAC,), {}), protocol=4))
    unpickler = pickle.Unpickler(raw.sock.makefile("rb"))
    status, info = unpickler.load()
    assert status == "RESULT" and info["name"] == NODE_NAME
    canary = tmp_path / "pwned"
    raw.send(pickle.dumps(Exploit(canary), protocol=4))
    assert raw.closed_by_server()  # refused: the session ends
    assert not canary.exists()


def test_api_calls_are_recorded_with_issuer(sim: Simulator) -> None:
    raw = api_session(sim)
    call(raw, repr(("API_CALL", "report_lldp_neighbor", ("aa:bb:cc:dd:ee:ff",),
                    {"sw_port_lldp_label": "port 3"})))
    (recorded,) = sim.api_calls()
    assert recorded == (NODE_NAME, "NSAPI", "report_lldp_neighbor", ("aa:bb:cc:dd:ee:ff",),
                        {"sw_port_lldp_label": "port 3"})


# ----------------------------------------------------------------- http port

def http(sim: Simulator, path: str, body: Optional[bytes] = None) -> tuple:
    request = urllib.request.Request(f"http://{HOST}:{sim.http_port}{path}", data=body,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_http_errors(sim: Simulator) -> None:
    assert http(sim, "/api/v1/nodes?mac=zz")[0] == 400
    assert http(sim, "/api/v1/nodes?mac=1&mac=2")[0] == 400
    assert http(sim, "/api/v2/whatever")[0] == 404
    assert http(sim, "/boot/kernel")[0] == 400  # node_ip is required
    assert http(sim, "/boot/%2e%2e/%2e%2e/other/boot/pc-x86-64/kernel?node_ip=127.0.0.1")[0] == 404
    assert http(sim, "/boot/kernel?node_ip=127.0.0.1")[0] == 200


def test_http_listing_without_filter(sim: Simulator) -> None:
    status, body = http(sim, "/api/v1/images")
    data = json.loads(body)
    assert status == 200 and data["num_images"] == 2 == len(data["images"])
    data = json.loads(http(sim, "/api/v1/nodes")[1])
    assert data["num_nodes"] == 1 and data["nodes"][0]["name"] == NODE_NAME


def test_control_endpoint(sim: Simulator) -> None:
    assert http(sim, "/_sim/bind", json.dumps({"mac": NODE_MAC, "image": OTHER_IMAGE}).encode())[0] == 200
    assert sim.inventory.node_by_mac(NODE_MAC).image == OTHER_IMAGE
    status, body = http(sim, "/_sim/bind", json.dumps({"mac": NODE_MAC, "image": "a/b:c"}).encode())
    assert status == 404 and b"a/b:c" in body
    assert http(sim, "/_sim/bind", b"{not json")[0] == 400
    assert http(sim, "/_sim/conf", json.dumps({"mac": NODE_MAC}).encode())[0] == 400
    assert http(sim, "/_sim/conf", json.dumps({"mac": NODE_MAC, "key": "k", "value": [1]}).encode())[0] == 200
    assert sim.inventory.node_by_mac(NODE_MAC).conf == {"k": [1]}


def test_close_leaves_no_simulator_threads(tmp_path: Path) -> None:
    import threading

    from walt_node.sim.sample import sample_config

    before = set(threading.enumerate())  # other tests' simulators may still be running
    with Simulator(sample_config(tmp_path)) as sim:
        idle = [Raw(sim.logs_port), api_session(sim), Raw(sim.rpc_port)]
        idle[0].send(b"0\nidle\nNO_TIMESTAMPS\nwaiting\n")
        sim.wait_for_logs(lambda recs: len(recs) >= 1)
    def alive() -> List[str]:
        return [t.name for t in set(threading.enumerate()) - before if t.name.startswith("sim-")]

    assert wait_until(lambda: not alive(), 5), alive()
    assert all(raw.closed_by_server() for raw in idle)
