"""walt-node's API session and fake TFTP clients against the real WalT 10.0 server classes
(docs/protocols.md §4, §6): the hub's ``APISessionManager`` running the main process'
NSAPI / VSAPI classes, and ``NodeFakeTFTPGet``, driven by upstream's event loop.
The simulator must answer the same request lines in the same shapes.
"""

from __future__ import annotations

import ast
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest
from support.upstream import Upstream, UpstreamServer

from walt_node.protocols import (
    ApiError,
    FileNotServed,
    fake_tftp_get,
    get_device_info,
    report_lldp_neighbor,
    sync_clock,
)
from walt_node.sim.sample import NODE_MAC

MAC = "52:54:00:aa:bb:cc"
DEVICE = {"name": "node1", "ip": "127.0.0.1", "model": "pc-x86-64", "type": "node",
          "image": "waltplatform/pc-x86-64-default:latest", "conf": {"kexec.allow": False}}
HOSTILE_LABEL = ("Gi1/0/1 ') ; __import__('os').system('touch /tmp/x') ; ('\n"
                 "\"\"\" \\' \\\\ {} %s \x00 é 😀 \udcff")


@pytest.fixture
def server(upstream: Upstream, tmp_path: Path) -> Iterator[UpstreamServer]:
    tftp = tmp_path / "tftp-root"
    (tftp / MAC / "tftp" / "boot").mkdir(parents=True)
    with UpstreamServer(upstream, tmp_path, tftp_root=tftp, devices={MAC: DEVICE}) as running:
        running.tftp_dir = tftp / MAC / "tftp"
        yield running


def test_report_lldp_neighbor_with_a_hostile_label_arrives_verbatim(server) -> None:
    assert report_lldp_neighbor(server.host, server.api_port, "aa:bb:cc:00:11:22",
                                HOSTILE_LABEL) is None
    assert server.wait_for(lambda: server.records("lldp"))
    (reported,) = server.records("lldp")
    assert (reported["sw_mac"], reported["label"]) == ("aa:bb:cc:00:11:22", HOSTILE_LABEL)
    assert reported["issuer"] == "127.0.0.1"
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < time.time() - 60


def test_sync_clock_gets_the_servers_next_second(server) -> None:
    before = time.time()
    answer = sync_clock(server.host, server.api_port)
    assert answer == int(answer) and before < answer <= time.time() + 0.01


def test_get_device_info_known_and_unknown(server) -> None:
    assert get_device_info(server.host, server.api_port, MAC) == DEVICE
    with pytest.raises(ApiError) as failure:  # upstream fails on an unknown device
        get_device_info(server.host, server.api_port, "02:00:00:00:00:99")
    assert failure.value.reply[0] == "RESULT" and "Error(" in failure.value.reply[1]
    calls = [(c["api"], c["method"], ast.literal_eval(c["args"])) for c in server.records("api")]
    assert calls == [("VSAPI", "get_device_info", (MAC,)),
                     ("VSAPI", "get_device_info", ("02:00:00:00:00:99",))]


def test_fake_tftp_file_arrives_byte_for_byte(server) -> None:
    content = os.urandom(300_000) + b"\n\x00\xff"
    (server.tftp_dir / "boot" / "kernel").write_bytes(content)
    assert fake_tftp_get(server.host, server.logs_port, MAC, "/boot/kernel") == content
    with pytest.raises(FileNotServed, match="NO SUCH FILE"):
        fake_tftp_get(server.host, server.logs_port, MAC, "/boot/missing")


# ------------------------------------------ the simulator answers in the same shapes

def exchange(port: int, api: str, lines: list) -> list:
    """Send request lines one at a time; the reply lines, None once the server closed."""
    replies: list = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        sock.sendall(b"REQ_API_SESSION\n%s\n" % api.encode())
        replies.append(reader.readline().decode().rstrip("\n"))
        for line in lines:
            try:
                sock.sendall(line.encode() + b"\n")
            except OSError:
                replies.append(None)
                continue
            reply = reader.readline()
            replies.append(reply.decode().rstrip("\n") if reply else None)
    return replies


def shape(reply: Optional[str]) -> object:
    """A reply's shape: None (session ended), the types of its literal, or a failed call."""
    if reply is None:
        return None
    try:
        value = ast.literal_eval(reply)
    except (ValueError, SyntaxError):  # ('RESULT', SomeError('...')): a failed call
        return ("RESULT", "an exception") if reply.startswith("('RESULT', ") else reply
    return tuple(type(v).__name__ for v in value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("api, mac", [("NSAPI", None), ("VSAPI", "known"), ("VSAPI", "unknown")])
def test_simulator_replies_in_the_shapes_of_the_real_hub(server, sim, api, mac) -> None:
    if api == "NSAPI":
        lines = [repr(("API_CALL", "sync_clock", (), {})),
                 repr(("API_CALL", "report_lldp_neighbor", ("aa:bb:cc:00:11:22", HOSTILE_LABEL), {})),
                 repr(("API_CALL", "no_such_method", (), {})),
                 repr(("API_CALL", "sync_clock", (), {})),
                 "this is not a request", repr(("API_CALL", "sync_clock", (), {}))]
    else:
        lines = [repr(("API_CALL", "get_device_info", (MAC if mac == "known" else "x",), {})),
                 repr(("NOT_A_CALL",))]
    real = exchange(server.api_port, api, lines)
    if mac == "known":  # the simulator knows its own sample node
        lines[0] = repr(("API_CALL", "get_device_info", (NODE_MAC,), {}))
    simulated = exchange(sim.rpc_port, api, lines)
    assert real[0] == simulated[0] == "10.0"
    assert [shape(r) for r in simulated[1:]] == [shape(r) for r in real[1:]]
    if api == "NSAPI":
        assert simulated[3] == real[3]  # the same words for an unknown method
