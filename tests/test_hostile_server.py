"""A misbehaving WalT server: trickling replies, huge files and bodies.

Every network step has one deadline for the whole step, and what a server can
make the node allocate is bounded. The trickling server sends a byte every
0.2 s for 20 s: a client bounded per read would wait for all of it; a client
bounded per step hangs up while bytes are still coming, which the server
records (no timing is measured).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path
from typing import Iterator

import pytest
from support.trickle import TrickleServer

from walt_node.bounds import LIMITS
from walt_node.protocols import (
    ApiSession,
    ReplyTooLarge,
    ServerUnreachable,
    WebApi,
    fake_tftp_get,
    http_get,
    nbd_export_info,
)
from walt_node.sim.sample import make_node_root

HOST = "127.0.0.1"
MAC = "52:54:00:12:34:56"
HTTP_REPLY = (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
              + b'{"nodes": [], "padding": "' + b"x" * 40 + b'"}')


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    with TrickleServer(HTTP_REPLY, interval=0.2) as server:
        yield server


def gave_up_while_trickling(server: TrickleServer) -> None:
    """The client ended every connection before the server had sent its whole reply."""
    assert server.accepted >= 1
    assert server.wait_all_finished(), "the server still trickles to a client that should be gone"
    assert server.completed == 0, f"a client waited for the whole trickled reply: {server.sent}"


# ------------------------------------------------------------ one step, one deadline

def test_fake_tftp_is_bounded_as_a_whole_step(trickle) -> None:
    with pytest.raises(ServerUnreachable, match="no answer in time"):
        fake_tftp_get(HOST, trickle.port, MAC, "/start.ipxe", timeout=1)
    gave_up_while_trickling(trickle)


def test_api_session_is_bounded_as_a_whole_step(trickle) -> None:
    with pytest.raises(ServerUnreachable, match="no answer in time"):
        ApiSession(HOST, trickle.port, "NSAPI", timeout=1).open()
    gave_up_while_trickling(trickle)


def test_http_request_is_bounded_as_a_whole_step(trickle) -> None:
    with pytest.raises(ServerUnreachable, match="no answer in time"):
        WebApi(HOST, trickle.port, timeout=1).nodes(MAC)
    gave_up_while_trickling(trickle)


def test_nbd_handshake_is_bounded_as_a_whole_step(trickle) -> None:
    with pytest.raises(ServerUnreachable):
        nbd_export_info(HOST, "swap-16G", port=trickle.port, timeout=1)
    gave_up_while_trickling(trickle)


def test_ipxe_plan_timeout_bounds_the_whole_command(trickle, tmp_path: Path) -> None:
    """The issue's case: web API and API port both trickle; --timeout 1 ends it all."""
    root = make_node_root(tmp_path / "root", server_ip=HOST, logs_port=trickle.port,
                          rpc_port=trickle.port, http_port=trickle.port, mac=MAC)
    env = {key: value for key, value in os.environ.items() if not key.startswith("walt_")}
    env["WALT_NODE_ROOT"] = str(root)
    done = subprocess.run([sys.executable, "-m", "walt_node", "ipxe-plan", "--timeout", "1"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot ask the server" in done.stderr
    gave_up_while_trickling(trickle)


# ------------------------------------------------------------ sizes a server can impose

class OneReplyServer:
    """Serves ``head`` then ``body_size`` bytes (made on the fly) to one connection."""

    def __init__(self, head: bytes, body_size: int):
        self.head, self.body_size = head, body_size
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        chunk = b"\0" * (1 << 20)
        with conn:
            try:
                conn.sendall(self.head)
                while self.sent < self.body_size:
                    size = min(len(chunk), self.body_size - self.sent)
                    conn.sendall(chunk[:size])
                    self.sent += size
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(65536):  # what the client sent: closing unread data resets
                    pass
            except OSError:
                pass  # the client refused the rest

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def tftp_head(size: int) -> bytes:
    return b"READY\nOK\n%d\n" % size


def test_fake_tftp_download_is_one_buffer_of_the_file_size() -> None:
    """Linear, not quadratic: the download lands in one buffer allocated once, so the
    memory peak is the file plus a bounded margin (buffer concatenation peaks at twice
    the file and copies it once per chunk). benchmarks/downloads.py shows the speed."""
    size = 64 << 20
    server = OneReplyServer(tftp_head(size), size)
    tracemalloc.start()
    try:
        data = fake_tftp_get(HOST, server.port, MAC, "/initrd", timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        server.close()
    assert len(data) == size and not any(data[:: 1 << 20])
    assert peak < size + (4 << 20), f"peak {peak >> 20} MiB for a {size >> 20} MiB file"


def test_fake_tftp_refuses_a_file_over_the_bound_before_allocating_it() -> None:
    announced = 1 << 40  # 1 TiB
    server = OneReplyServer(tftp_head(announced), 0)
    before = LIMITS.counts.get("fake TFTP file over the size bound", 0)
    try:
        with pytest.raises(ReplyTooLarge, match=f"announces {announced} bytes"):
            fake_tftp_get(HOST, server.port, MAC, "/initrd", timeout=10, max_size=1 << 20)
    finally:
        server.close()
    assert LIMITS.counts["fake TFTP file over the size bound"] == before + 1


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-length"])
def test_http_body_over_the_bound_is_refused(announce: bool) -> None:
    size = 64 << 20
    head = b"HTTP/1.0 200 OK\r\n" + (b"Content-Length: %d\r\n" % size if announce else b"") + b"\r\n"
    server = OneReplyServer(head, size)
    before = LIMITS.counts.get("HTTP body over the size bound", 0)
    try:
        with pytest.raises(ReplyTooLarge, match="more than 1048576"):
            http_get(f"http://{HOST}:{server.port}/boot/x", timeout=10, max_size=1 << 20)
    finally:
        server.close()
    assert server.sent < size  # refused early: the rest was never read
    assert LIMITS.counts["HTTP body over the size bound"] == before + 1
