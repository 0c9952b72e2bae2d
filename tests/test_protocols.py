"""The protocol clients of walt_node.protocols against the loopback simulator."""

from __future__ import annotations

import ast
import pickle
import time
from pathlib import Path

import pytest
from support.wait import wait_until

from walt_node.protocols import (
    ApiError,
    ApiSession,
    FileNotServed,
    LogStream,
    ServerError,
    ServerUnreachable,
    WebApi,
    fake_tftp_get,
    get_device_info,
    report_lldp_neighbor,
    sync_clock,
)
from walt_node.sim import Simulator
from walt_node.sim.sample import (
    DEFAULT_IMAGE,
    DEFAULT_IMAGE_ID,
    NODE_IP,
    NODE_MAC,
    NODE_MODEL,
    NODE_NAME,
    OTHER_IMAGE,
    sample_config,
    sample_initrd,
    sample_kernel,
)

HOST = "127.0.0.1"
TEN_YEARS = 10 * 365 * 86400  # as the WalT 10 server counts them


def wait_idle(sim: Simulator, timeout: float = 5.0) -> None:
    """Wait until the simulator has finished with every connection."""
    assert wait_until(lambda: sim.live_connections() == 0, timeout), sim.live_connections()


# ------------------------------------------------------------------ logs

def test_log_stream_with_timestamps_keeps_stamps_and_order(sim: Simulator) -> None:
    now = time.time()
    lines = [(now - 3.25, "first"), (now - 2.5, "second line with spaces"), (now - 1, "é ✓ utf-8")]
    with LogStream(HOST, sim.logs_port, "experiment") as stream:
        stream.send(lines)
    records = sim.wait_for_logs(lambda recs: len(recs) >= 3)
    wait_idle(sim)
    records = sim.log_records()
    assert [r.line for r in records] == [text for _, text in lines]
    assert [r.ts for r in records] == pytest.approx([ts for ts, _ in lines], abs=1e-6)
    assert {(r.issuer, r.stream) for r in records} == {(NODE_NAME, "experiment")}
    assert all(r.received >= now for r in records)


def test_log_stream_without_timestamps_is_stamped_on_reception(sim: Simulator) -> None:
    before = time.time()
    with LogStream(HOST, sim.logs_port, "plain", timestamps=False) as stream:
        stream.send([(0.0, "one"), (0.0, "12.5 looks like a stamp but is text")])
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    after = time.time()
    assert [r.line for r in records] == ["one", "12.5 looks like a stamp but is text"]
    assert all(before <= r.ts <= after and r.ts == r.received for r in records)


def test_close_ends_stream_without_disconnection_record(sim: Simulator) -> None:
    with LogStream(HOST, sim.logs_port, "clean") as stream:
        stream.send([(time.time(), "bye")])
    sim.wait_for_logs(lambda recs: len(recs) >= 1)
    wait_idle(sim)
    assert [r.line for r in sim.log_records()] == ["bye"]


def test_connection_lost_without_close_records_disconnected(sim: Simulator) -> None:
    """docs/protocols.md §2: without CLOSE, the server adds ``<disconnected!>`` to the
    unterminated line; with stamps inside that is not a number, so (as on a WalT 10
    server) nothing more is stored. Without stamps it is recorded."""
    stream = LogStream(HOST, sim.logs_port, "broken").open()
    stream.send([(time.time(), "last words")])
    sim.wait_for_logs(lambda recs: len(recs) >= 1)
    stream.abort()
    wait_idle(sim)
    assert [r.line for r in sim.log_records()] == ["last words"]
    stream = LogStream(HOST, sim.logs_port, "broken2", timestamps=False).open()
    stream.send([(0.0, "last words")])
    sim.wait_for_logs(lambda recs: len(recs) >= 2)
    stream.abort()
    records = sim.wait_for_logs(lambda recs: len(recs) >= 3)
    assert [r.line for r in records[1:]] == ["last words", "<disconnected!>"]
    assert records[2].stream == "broken2" and records[2].issuer == NODE_NAME


@pytest.mark.parametrize("offset, corrected", [
    (+5.0, True),               # more than 1 s in the future
    (+0.5, False),              # slightly ahead: kept
    (-TEN_YEARS - 86400, True),  # more than ten years old
    (-TEN_YEARS + 86400, False),  # nine years and some: kept
])
def test_timestamp_correction(sim: Simulator, offset: float, corrected: bool) -> None:
    stamp = time.time() + offset
    with LogStream(HOST, sim.logs_port, "clock") as stream:
        stream.send([(stamp, "stamped")])
    (record,) = sim.wait_for_logs(lambda recs: len(recs) >= 1)
    if corrected:
        assert record.ts == record.received
        assert abs(record.ts - stamp) > 0.9
    else:
        assert record.ts == pytest.approx(stamp, abs=1e-6)


def test_invalid_utf8_closes_the_stream_unless_lenient(sim: Simulator, tmp_path: Path) -> None:
    """A WalT 10 server closes a stream whose read is not UTF-8 (docs/protocols.md §11);
    ``lenient_logs`` replaces the bad bytes instead."""
    with LogStream(HOST, sim.logs_port, "bytes") as stream:
        stream.send([(time.time(), "before")])
        sim.wait_for_logs(lambda recs: len(recs) >= 1)
        stream.send_raw(b"%.6f caf\xe9 \xff\xfe end\n" % time.time())
        wait_idle(sim)  # the simulator closed it
    assert [r.line for r in sim.log_records()] == ["before"]
    with Simulator(sample_config(tmp_path), host=HOST, lenient_logs=True) as lenient:
        with LogStream(HOST, lenient.logs_port, "bytes") as stream:
            stream.send_raw(b"%.6f caf\xe9 \xff\xfe end\n" % time.time())
            stream.send([(time.time(), "still fine")])
        records = lenient.wait_for_logs(lambda recs: len(recs) >= 2)
    assert records[0].line == "caf\ufffd \ufffd\ufffd end"
    assert records[1].line == "still fine"


def test_unacknowledged_drops_to_zero_once_delivered(sim: Simulator) -> None:
    with LogStream(HOST, sim.logs_port, "ack") as stream:
        stream.send([(time.time(), "x" * 1000)] * 100)
        sim.wait_for_logs(lambda recs: len(recs) >= 100)
        assert wait_until(lambda: stream.unacknowledged() == 0, 5), stream.unacknowledged()


def test_server_killing_connections_records_no_disconnection(sim: Simulator) -> None:
    stream = LogStream(HOST, sim.logs_port, "victim").open()
    stream.send([(time.time(), "before the crash")])
    sim.wait_for_logs(lambda recs: len(recs) >= 1)
    sim.kill_connections()
    wait_idle(sim)

    def refused() -> bool:  # the first writes may still be buffered by the kernel
        try:
            stream.send([(time.time(), "into the void")])
        except ServerUnreachable:
            return True
        return False

    assert wait_until(refused, 5)
    assert [r.line for r in sim.log_records()] == ["before the crash"]


def test_stop_start_keeps_ports_and_records(sim: Simulator) -> None:
    ports = (sim.logs_port, sim.rpc_port, sim.http_port)
    with LogStream(HOST, sim.logs_port, "s") as stream:
        stream.send([(time.time(), "before restart")])
    sim.wait_for_logs(lambda recs: len(recs) >= 1)
    sim.stop()
    with pytest.raises(ServerUnreachable):
        sync_clock(HOST, ports[1], timeout=2)
    with pytest.raises(ServerUnreachable):
        LogStream(HOST, ports[0], "s").open()
    sim.start()
    assert (sim.logs_port, sim.rpc_port, sim.http_port) == ports
    with LogStream(HOST, sim.logs_port, "s") as stream:
        stream.send([(time.time(), "after restart")])
    records = sim.wait_for_logs(lambda recs: len(recs) >= 2)
    assert [r.line for r in records] == ["before restart", "after restart"]
    assert WebApi(HOST, sim.http_port).node(NODE_MAC)["name"] == NODE_NAME


def test_concurrent_streams_keep_their_own_order(sim: Simulator) -> None:
    import threading

    def produce(index: int) -> None:
        with LogStream(HOST, sim.logs_port, f"s{index}") as stream:
            for start in range(0, 2000, 100):
                stream.send([(time.time(), f"{index}:{n}") for n in range(start, start + 100)])

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    records = sim.wait_for_logs(lambda recs: len(recs) >= 8 * 2000, timeout=30)
    wait_idle(sim)
    for index in range(8):
        lines = [r.line for r in records if r.stream == f"s{index}"]
        assert lines == [f"{index}:{n}" for n in range(2000)]
    assert len(sim.log_records()) == 8 * 2000  # and no <disconnected!>


# ------------------------------------------------------------ API sessions

def test_sync_clock_returns_server_time(sim: Simulator) -> None:
    before = time.time()
    server_time = sync_clock(HOST, sim.rpc_port)
    assert before <= server_time <= time.time()
    assert sim.api_calls()[-1][1:] == ("NSAPI", "sync_clock", (), {})


def test_report_lldp_neighbor_is_recorded(sim: Simulator) -> None:
    assert report_lldp_neighbor(HOST, sim.rpc_port, "aa:bb:cc:00:11:22", "Gi1/0/7") is None
    (call,) = sim.api_calls()
    assert call == (NODE_NAME, "NSAPI", "report_lldp_neighbor", ("aa:bb:cc:00:11:22", "Gi1/0/7"), {})


def test_hostile_string_round_trips_verbatim(sim: Simulator, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    hostile = (f"x') ; __import__('os').system('touch {canary}') ; ('\n"
               f"\"\"\" \\' \\\\ {{}} %s \x00 ✓ \udcff")
    report_lldp_neighbor(HOST, sim.rpc_port, "aa:bb:cc:00:11:22", hostile)
    with pytest.raises(ApiError):  # no such device: the call fails, as on a WalT 10 server
        get_device_info(HOST, sim.rpc_port, hostile)
    calls = sim.api_calls()
    assert calls[0].args == ("aa:bb:cc:00:11:22", hostile)
    assert calls[1].args == (hostile,)
    assert not canary.exists()


def test_get_device_info_reports_node_and_follows_conf(sim: Simulator) -> None:
    info = get_device_info(HOST, sim.rpc_port, NODE_MAC.upper())
    assert info is not None
    assert {k: info[k] for k in ("name", "ip", "model", "image")} == {
        "name": NODE_NAME, "ip": NODE_IP, "model": NODE_MODEL, "image": DEFAULT_IMAGE}
    assert {"netmask", "gateway"} <= set(info)
    assert info["conf"]["kexec.allow"] is True
    sim.set_conf(NODE_MAC, "kexec.allow", False)
    sim.bind(NODE_MAC, OTHER_IMAGE)
    info = get_device_info(HOST, sim.rpc_port, NODE_MAC)
    assert info["conf"]["kexec.allow"] is False and info["image"] == OTHER_IMAGE
    with pytest.raises(ApiError) as failure:  # a WalT 10 server fails on an unknown device
        get_device_info(HOST, sim.rpc_port, "02:00:00:00:00:99")
    assert failure.value.reply[0] == "RESULT" and "02:00:00:00:00:99" in failure.value.reply[1]


def test_unknown_method_fails_but_session_goes_on(sim: Simulator) -> None:
    with ApiSession(HOST, sim.rpc_port, "NSAPI") as session:
        assert session.server_version == "10.0"
        with pytest.raises(ApiError) as failure:
            session.call("format_disk", "/dev/sda")
        # a WalT 10 server answers ('RESULT', AttributeError(...)): an exception, no literal
        assert failure.value.reply == ("RESULT", "AttributeError(\"'NSAPI' object has no "
                                                 "attribute 'format_disk'\")")
        with pytest.raises(ApiError):
            session.call("sync_clock", "unexpected argument")
        assert isinstance(session.call("sync_clock"), int)  # the next whole second
    assert [c.method for c in sim.api_calls()] == ["format_disk", "sync_clock", "sync_clock"]


def test_api_of_other_kind_is_not_mixed(sim: Simulator) -> None:
    with ApiSession(HOST, sim.rpc_port, "VSAPI") as session, pytest.raises(ApiError):
        session.call("sync_clock")


def test_api_session_to_stopped_server_is_unreachable(sim: Simulator) -> None:
    port = sim.rpc_port
    sim.stop()
    with pytest.raises(ServerUnreachable, match=str(port)):
        get_device_info(HOST, port, NODE_MAC, timeout=2)


# ----------------------------------------------------------------- web API

def test_web_api_node_and_image_shapes(sim: Simulator) -> None:
    web = WebApi(HOST, sim.http_port)
    node = web.node(NODE_MAC)
    assert node == {"name": NODE_NAME, "model": NODE_MODEL, "virtual": False, "image": DEFAULT_IMAGE,
                    "booted": True, "ip": NODE_IP, "mac": NODE_MAC, "config": {"kexec.allow": True}}
    image = web.image(DEFAULT_IMAGE)
    assert image == {"fullname": DEFAULT_IMAGE, "user": "waltplatform", "id": DEFAULT_IMAGE_ID,
                     "in_use": True, "created": image["created"], "compatibility": [NODE_MODEL]}
    assert web.image(OTHER_IMAGE)["in_use"] is False
    sim.bind(NODE_MAC, OTHER_IMAGE)
    assert web.node(NODE_MAC)["image"] == OTHER_IMAGE
    assert web.image(OTHER_IMAGE)["in_use"] is True


def test_web_api_unknown_and_bad_queries(sim: Simulator) -> None:
    web = WebApi(HOST, sim.http_port)
    assert web.node("02:00:00:00:00:99") is None
    assert web.image("nobody/nothing:latest") is None
    with pytest.raises(ServerError, match="HTTP 400"):
        web.node("not-a-mac")


def test_boot_file_over_http_follows_rebind(sim: Simulator) -> None:
    web = WebApi(HOST, sim.http_port)
    assert web.boot_file("/kernel", NODE_IP) == sample_kernel(DEFAULT_IMAGE)
    assert web.boot_file("start.ipxe", NODE_IP).startswith(b"#!ipxe")
    sim.bind(NODE_MAC, OTHER_IMAGE)
    assert web.boot_file("/kernel", NODE_IP) == sample_kernel(OTHER_IMAGE)
    url = f"http://{HOST}:{sim.http_port}/boot/initrd?node_ip={NODE_IP}"
    assert web.url_get(url) == sample_initrd(OTHER_IMAGE)


def test_boot_file_over_http_missing_or_unknown_node(sim: Simulator) -> None:
    web = WebApi(HOST, sim.http_port)
    with pytest.raises(FileNotServed, match="404"):
        web.boot_file("/no-such-file", NODE_IP)
    with pytest.raises(FileNotServed, match="404"):
        web.boot_file("/kernel", "192.0.2.77")
    with pytest.raises(FileNotServed, match="404"):
        web.boot_file("/../../default/boot/pc-x86-64/kernel", NODE_IP)


def test_web_api_unreachable(sim: Simulator) -> None:
    port = sim.http_port
    sim.stop()
    with pytest.raises(ServerUnreachable):
        WebApi(HOST, port, timeout=2).node(NODE_MAC)


# --------------------------------------------------------------- fake TFTP

def test_fake_tftp_serves_the_currently_bound_image(sim: Simulator) -> None:
    data = fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/kernel")
    assert data == sample_kernel(DEFAULT_IMAGE)
    sim.bind(NODE_MAC, OTHER_IMAGE)
    assert fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/kernel") == \
        sample_kernel(OTHER_IMAGE)
    script = fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/start.ipxe")
    assert OTHER_IMAGE.encode() in script


def test_fake_tftp_binary_file_is_exact(sim: Simulator) -> None:
    payload = bytes(range(256)) * 4096 + b"\n\nOK\n"  # 1 MiB of every byte value
    image = sim.inventory.image(DEFAULT_IMAGE)
    (image.boot_dir / NODE_MODEL / "blob.bin").write_bytes(payload)
    assert fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/blob.bin") == payload


def test_fake_tftp_missing_file_and_unknown_node(sim: Simulator) -> None:
    with pytest.raises(FileNotServed):
        fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/no-such-file")
    with pytest.raises(FileNotServed):
        fake_tftp_get(HOST, sim.logs_port, "02:00:00:00:00:99", "/kernel")
    with pytest.raises(FileNotServed):
        fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/../../../other/boot/pc-x86-64/kernel")
    # the logs port still works afterwards
    assert fake_tftp_get(HOST, sim.logs_port, NODE_MAC, "/kernel") == sample_kernel(DEFAULT_IMAGE)



def test_sim_node_root_facts_lead_to_the_simulator(sim: Simulator, sim_node_root: Path) -> None:
    from walt_node.facts import NodeFacts

    node = NodeFacts()  # WALT_NODE_ROOT comes from the fixture
    server = node.server()
    assert (server.logs_port, server.rpc_port, server.http_port) == \
        (sim.logs_port, sim.rpc_port, sim.http_port)
    with LogStream(server.ip, server.logs_port, "facts") as stream:
        stream.send([(time.time(), f"image {node.image_id}")])
    (record,) = sim.wait_for_logs(lambda recs: len(recs) >= 1)
    assert record.line == f"image {DEFAULT_IMAGE_ID}"
    assert WebApi(server.ip, server.http_port).node(node.mac)["image"] == DEFAULT_IMAGE


# ------------------------------------- clients against a scripted raw server

class ScriptedServer:
    """Accepts one connection on loopback and plays ``script(conn, reader)`` to it,
    keeping what the client sent, so the clients' wire format is checked too."""

    def __init__(self, script):
        import socket
        import threading

        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn:
            self.script(conn, self._reader(conn))

    def _reader(self, conn):
        def read_line() -> bytes:
            while b"\n" not in self.received[self._pos:]:
                chunk = conn.recv(4096)
                if not chunk:
                    return b""
                self.received += chunk
            line, _, _ = self.received[self._pos:].partition(b"\n")
            self._pos += len(line) + 1
            return line
        self._pos = 0
        return read_line

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.listener.close()


def test_api_client_wire_format_and_problem_replies() -> None:
    def script(conn, read_line):
        assert read_line() == b"REQ_API_SESSION" and read_line() == b"NSAPI"
        conn.sendall(b"10\n")
        read_line()
        conn.sendall(b"('EXCEPTION', 'no such thing')\n")
        read_line()
        conn.sendall(b"this is not a literal\n")
        read_line()
        conn.sendall(b"'RESULT'\n")
        read_line()  # the client's CLOSE

    server = ScriptedServer(script)
    with ApiSession(HOST, server.port, "NSAPI", timeout=5) as session:
        with pytest.raises(ApiError) as failure:
            session.call("report_lldp_neighbor", "aa:bb", "it's \"quoted\"\n")
        assert failure.value.reply == ("EXCEPTION", "no such thing")
        with pytest.raises(ServerError, match="unreadable reply"):
            session.call("sync_clock")
        with pytest.raises(ServerError, match="unexpected reply"):
            session.call("sync_clock")
    server.close()
    lines = server.received.split(b"\n")
    assert ast.literal_eval(lines[2].decode()) == (
        "API_CALL", "report_lldp_neighbor", ("aa:bb", "it's \"quoted\"\n"), {})
    assert lines[-2] == b"('CLOSE',)"


def test_api_client_times_out_on_a_silent_server() -> None:
    def never_answer(conn, read_line) -> None:
        while conn.recv(4096):  # reads the request, says nothing, until the client hangs up
            pass

    server = ScriptedServer(never_answer)
    started = time.monotonic()
    with pytest.raises(ServerUnreachable, match="no answer in time"):
        sync_clock(HOST, server.port, timeout=0.5)
    assert time.monotonic() - started < 1.4
    server.close()


@pytest.mark.parametrize("answer, error", [
    (b"NOPE missing\n", FileNotServed),
    (b"OK\nabc\n", ServerError),
    (b"OK\n100\nonly a few bytes", ServerUnreachable),
])
def test_fake_tftp_client_bad_answers(answer: bytes, error: type) -> None:
    def script(conn, read_line):
        assert read_line() == b"12"
        conn.sendall(b"ready\n")
        request = pickle.loads(conn.recv(4096))
        assert request == {"node_mac": NODE_MAC, "path": "/start.ipxe"}
        conn.sendall(answer)

    server = ScriptedServer(script)
    with pytest.raises(error):
        fake_tftp_get(HOST, server.port, NODE_MAC, "/start.ipxe", timeout=5)
    server.close()


def test_log_stream_wire_format() -> None:
    def script(conn, read_line):
        while read_line() != b"CLOSE":
            pass

    server = ScriptedServer(script)
    with LogStream(HOST, server.port, "my stream") as stream:
        stream.send([(1700000000.123456, "a b"), (1700000001.0, "é")])
    server.close()
    assert server.received == ("REQ_NEW_INCOMING_LOGS\nmy stream\nTIMESTAMPS_INSIDE\n"
                               "1700000000.123456 a b\n1700000001.000000 é\nCLOSE\n").encode()
    with pytest.raises(ValueError):
        LogStream(HOST, server.port, "two\nlines")
