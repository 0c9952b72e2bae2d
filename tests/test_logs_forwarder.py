"""The forwarder alone, in-process, with real sockets on loopback."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path
from typing import Callable

import pytest
from support.logs import LogServer

from walt_node.logstreams.forwarder import SERVER_READ, Forwarder, grid_cell, next_write
from walt_node.logstreams.spool import Spool


def pump_until(forwarder: Forwarder, done: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        forwarder.pump()
        if done():
            return True
        poller = select.poll()
        for fd, mask in forwarder.poll_fds():
            poller.register(fd, mask)
        poller.poll(10)
    return done()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_backoff_grows_and_is_bounded() -> None:
    port = closed_port()
    now = [1000.0]  # the forwarder's clock: each retry is due when the test says so
    forwarder = Forwarder(lambda: ("127.0.0.1", port), None, retry_min=0.01, retry_max=0.08,
                          clock=lambda: now[0])
    forwarder.add("s", b"1.0 x\n")
    delays = []
    for _ in range(8):
        link = forwarder.links["s"]
        now[0] = max(now[0], link.retry_at)
        assert pump_until(forwarder, lambda f=link.failures, link=link: link.failures > f)  # refused
        delays.append(round(link.retry_at - now[0], 6))
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.08]
    assert forwarder.busy()


def test_no_spool_bounds_memory_and_says_how_many_were_dropped() -> None:
    server = LogServer().start()
    port = server.port
    server.crash()
    forwarder = Forwarder(lambda: ("127.0.0.1", port), None, memory_limit=10_000,
                          retry_min=0.01, retry_max=0.05)
    for i in range(2000):
        forwarder.add("s", b"1.0 line-%04d\n" % i)
        forwarder.pump()
    server = LogServer(port=port).start()
    try:
        assert pump_until(forwarder, lambda: not forwarder.busy())
        assert server.wait_for(lambda r: any(x.text == b"line-1999" for x in r), 5)
        texts = [x.text for x in server.records()]
        [notice] = [t for t in texts if b"were dropped" in t]
        dropped = int(notice.split(b"] ")[1].split()[0])
        kept = [t for t in texts if t.startswith(b"line-")]
        assert dropped + len(kept) == 2000
        assert kept == [b"line-%04d" % i for i in range(2000 - len(kept), 2000)]
    finally:
        server.crash()


def test_idle_close_and_reconnect(tmp_path: Path) -> None:
    server = LogServer().start()
    spool = Spool(tmp_path, "daemon").open()
    forwarder = Forwarder(lambda: ("127.0.0.1", server.port), spool, idle_close=0.2,
                          resend_window=0.05)
    try:
        forwarder.add("s", b"1.0 first\n")
        assert pump_until(forwarder, lambda: not forwarder.links)  # closed, then forgotten
        assert server.wait_for(lambda r: server.closed_properly.get(1) is True, 5)
        forwarder.add("s", b"2.0 second\n")
        assert pump_until(forwarder, lambda: not forwarder.busy())
        assert server.wait_for(lambda r: len(r) == 2, 5)
        assert [(x.ts, x.text, x.conn) for x in server.records()] == [(1.0, b"first", 1),
                                                                       (2.0, b"second", 2)]
    finally:
        spool.close()
        server.crash()


def test_the_grid_step_fits_in_one_segment_and_divides_a_server_read() -> None:
    assert grid_cell(65483) == SERVER_READ  # loopback
    assert grid_cell(1448) == grid_cell(1436) == 1024  # Ethernet, with and without timestamps
    assert grid_cell(536) == 512
    assert all(SERVER_READ % grid_cell(mss) == 0 for mss in range(1, 70000, 37))


@pytest.mark.parametrize("cell", [SERVER_READ, 1024])
def test_writes_are_whole_lines_and_never_cross_a_step(cell: int) -> None:
    """docs/protocols.md §11: a WalT 10 server decodes each 8 KiB read alone. Writes of
    whole lines, padded (zeros before a stamp) up to the next step of the grid when
    more lines wait, are read whole even by a server that is behind; the stamps keep
    their values."""
    lines = [b"%.6f %s\n" % (1700000000.5 + n, "é中😀".encode() * (n % 40)) for n in range(400)]
    out = bytearray(b"".join(lines))
    received, unread, start = b"", cell - 700, 0  # bytes already written since the last step
    while start < len(out):
        write, carried = next_write(out, start, False, cell - unread, cell)
        assert write.endswith(b"\n") and unread + len(write) <= cell
        if start + carried < len(out):
            assert unread + len(write) == cell  # more waits: filled up to the step
        unread = (unread + len(write)) % cell
        received += write
        start += carried
    stamps = [float(line.split(b" ", 1)[0]) for line in received.splitlines()]
    texts = [line.split(b" ", 1)[1] for line in received.splitlines()]
    assert stamps == [float(line.split(b" ", 1)[0]) for line in lines]
    assert texts == [line.split(b" ", 1)[1][:-1] for line in lines]


def test_a_line_longer_than_a_read_is_cut_between_characters() -> None:
    line = b"1.5 " + "€".encode() * 5000 + b"\n"
    out, pieces, midline, start = bytearray(line), [], False, 0
    assert next_write(out, 0, False, SERVER_READ - 100) == (b"", 0)  # waits for a new step
    while start < len(out):
        write, carried = next_write(out, start, midline, SERVER_READ)
        assert write == bytes(out[start:start + carried]) and len(write) <= SERVER_READ
        write.decode()  # whole characters: a server decoding this read alone accepts it
        midline = not write.endswith(b"\n")
        pieces.append(write)
        start += carried
    assert b"".join(pieces) == line and len(pieces) == 2


def test_connections_are_bounded_least_recently_used_idle_closed_first(tmp_path: Path) -> None:
    server = LogServer().start()
    forwarder = Forwarder(lambda: ("127.0.0.1", server.port), None, max_connections=2)
    open_counts = []

    def delivered(count: int) -> Callable[[], bool]:
        def check() -> bool:
            open_counts.append(sum(link.sock is not None for link in forwarder.links.values()))
            return len(server.records()) >= count
        return check

    forwarder.add("a", b"1.0 a1\n")
    assert pump_until(forwarder, delivered(1))
    forwarder.add("b", b"1.0 b1\n")
    assert pump_until(forwarder, delivered(2))
    forwarder.add("a", b"1.0 a2\n")  # a is now used more recently than b
    assert pump_until(forwarder, delivered(3))
    for stream in "cde":
        forwarder.add(stream, b"1.0 %s1\n" % stream.encode())
    assert pump_until(forwarder, delivered(6))
    assert max(open_counts) <= 2
    by_stream = {}
    for line in server.records():
        by_stream.setdefault(line.stream, []).append(line.text)
    assert by_stream == {"a": [b"a1", b"a2"], "b": [b"b1"], "c": [b"c1"], "d": [b"d1"], "e": [b"e1"]}
    # b (least recently used) was closed properly, with CLOSE, to make room for c
    assert server.wait_for(lambda r: server.closed_properly.get(2) is True, 5)
    forwarder.shutdown(2)


def test_streams_holding_lines_are_bounded_and_new_ones_are_counted(tmp_path: Path,
                                                                     caplog) -> None:
    """Any local user can name new streams; each costs memory and spool files. Beyond
    ``max_streams`` streams holding undelivered lines (server away), a new stream's
    lines are dropped, counted and logged once; the streams held lose nothing, and
    once they are delivered new streams are taken again."""
    server = LogServer().start()
    port = server.port
    server.crash()
    spool = Spool(tmp_path, "daemon").open()
    forwarder = Forwarder(lambda: ("127.0.0.1", port), spool, max_streams=8,
                          retry_min=0.01, retry_max=0.05)
    try:
        for n in range(20):
            forwarder.add(f"user-{n}", b"1.0 line of %d\n2.0 more\n" % n)
            forwarder.pump()
        assert len(forwarder.links) == 8
        assert forwarder.refused_lines == 12 * 2
        assert len([r for r in caplog.records if "are dropped and counted" in r.message]) == 1
        server = LogServer(port=port).start()
        assert pump_until(forwarder, lambda: not forwarder.busy())
        assert server.wait_for(lambda r: len(r) == 16, 5)
        assert sorted(x.text for x in server.records() if x.text.startswith(b"line")) == \
            sorted(b"line of %d" % n for n in range(8))
        forwarder.add("late", b"3.0 taken again\n")
        assert pump_until(forwarder, lambda: not forwarder.busy())
        assert server.wait_for(lambda r: any(x.text == b"taken again" for x in r), 5)
    finally:
        spool.close()
        server.crash()
