"""MONITOR requests of WalT's own walt-log-monitor script (docs/protocols.md §3): the
requester's FIFO gets a message and is closed, only after checking that it belongs to the
real owner of the requesting process; forged requests get nothing.  Real FIFOs, real
processes, a second user (nobody)."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from support.logs import DaemonProcess, LogServer
from support.wait import wait_until

from walt_node.logstreams import monitor_request
from walt_node.logstreams.monitor_request import MESSAGE, MonitorRequests
from walt_node.paths import Paths

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, a second user)")


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    (tmp_path / "tmp").mkdir()
    return Paths(root=tmp_path)


@pytest.fixture
def nobody_process() -> Iterator[int]:
    """A live process whose real uid is nobody's."""
    process = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                "--clear-groups", "sleep", "600"])
    # setpriv changes its uid after it started: wait for that
    assert wait_until(lambda: monitor_request.real_uid(process.pid) == NOBODY, 10, step=0.01)
    yield process.pid
    process.kill()
    process.wait()


def make_fifo(path: Path, uid: int = -1) -> Path:
    os.mkfifo(path, 0o600)
    if uid >= 0:
        os.chown(path, uid, uid)
    return path


def request(pid: int, uid: int) -> bytes:
    return b"MONITOR %d %d %d 24 80" % (pid, uid, uid)


def read_answer(fifo: Path, timeout: float = 10) -> bytes:
    """Open ``fifo`` as the requester does (after its request), read it to its end of file."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    poller = select.poll()
    poller.register(reader, select.POLLIN)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not poller.poll(max(0, deadline - time.monotonic()) * 1000):
                break
            chunk = os.read(reader, 4096)
            if not chunk:  # the answer closed it: the script's copy loop ends
                return data
            data += chunk
    finally:
        os.close(reader)
    raise AssertionError(f"no end of file on {fifo} within {timeout} s (read {data!r})")


def answered_or_refused(requests: MonitorRequests, answered: int = 0, refused: int = 0) -> bool:
    """Also waits for the answering threads to end: one still logging its refusal
    would otherwise log into the next test."""
    return wait_until(lambda: requests.answered >= answered
                      and sum(requests.counts.values()) >= refused
                      and not any(t.name.startswith("monitor-") for t in threading.enumerate()),
                      10, step=0.01)


def test_the_requester_gets_the_message_and_an_end_of_file(paths: Paths) -> None:
    fifo = make_fifo(paths.monitor_fifo(os.getpid(), "stdout"))
    requests = MonitorRequests(paths)
    requests.handle(request(os.getpid(), os.getuid()))  # before the FIFO has a reader, as upstream
    data = read_answer(fifo)
    assert data == MESSAGE
    assert b"walt-node log-monitor" in data and b"nothing was run" in data
    assert answered_or_refused(requests, answered=1)
    assert requests.answered == 1 and requests.counts == {}


def _held_reader(path: Path) -> int:
    """A reader that makes any (wrong) open for writing succeed at once."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def _assert_refused(requests: MonitorRequests, kind: str, reader: int) -> None:
    assert answered_or_refused(requests, refused=1), "the request was never handled"
    assert requests.counts == {kind: 1} and requests.answered == 0
    assert os.read(reader, 4096) == b"", "a forged request got something written"


@needs_root
def test_a_fifo_of_another_user_gets_nothing(paths: Paths) -> None:
    # a FIFO named after root's process (this one) but owned by nobody
    fifo = make_fifo(paths.monitor_fifo(os.getpid(), "stdout"), uid=NOBODY)
    reader = _held_reader(fifo)
    requests = MonitorRequests(paths)
    requests.handle(request(os.getpid(), 0))
    _assert_refused(requests, monitor_request.NOT_OWNER, reader)
    os.close(reader)


@needs_root
def test_a_process_of_another_user_gets_nothing(paths: Paths, nobody_process: int) -> None:
    # nobody's process, root's FIFO (a claim of uid 0, or of nobody's uid: both refused)
    fifo = make_fifo(paths.monitor_fifo(nobody_process, "stdout"))
    reader = _held_reader(fifo)
    for claimed_uid in (0, NOBODY):
        requests = MonitorRequests(paths)
        requests.handle(request(nobody_process, claimed_uid))
        _assert_refused(requests, monitor_request.NOT_OWNER, reader)
    os.close(reader)


@needs_root
def test_a_forged_uid_in_the_request_gets_nothing(paths: Paths, nobody_process: int) -> None:
    # everything belongs to nobody, but the request claims root
    fifo = make_fifo(paths.monitor_fifo(nobody_process, "stdout"), uid=NOBODY)
    reader = _held_reader(fifo)
    requests = MonitorRequests(paths)
    requests.handle(request(nobody_process, 0))
    _assert_refused(requests, monitor_request.NOT_OWNER, reader)
    os.close(reader)


def test_a_symbolic_link_is_not_followed(paths: Paths, tmp_path: Path) -> None:
    target = make_fifo(tmp_path / "elsewhere.fifo")
    paths.monitor_fifo(os.getpid(), "stdout").symlink_to(target)
    reader = _held_reader(target)
    requests = MonitorRequests(paths)
    requests.handle(request(os.getpid(), os.getuid()))
    _assert_refused(requests, monitor_request.NOT_FIFO, reader)
    os.close(reader)


def test_a_regular_file_is_not_written(paths: Paths) -> None:
    path = paths.monitor_fifo(os.getpid(), "stdout")
    path.write_bytes(b"")
    requests = MonitorRequests(paths)
    requests.handle(request(os.getpid(), os.getuid()))
    assert answered_or_refused(requests, refused=1)
    assert requests.counts == {monitor_request.NOT_FIFO: 1}
    assert path.read_bytes() == b""


def test_a_process_that_does_not_exist_gets_nothing(paths: Paths) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    fifo = make_fifo(paths.monitor_fifo(gone.pid, "stdout"))
    reader = _held_reader(fifo)
    requests = MonitorRequests(paths)
    requests.handle(request(gone.pid, os.getuid()))
    _assert_refused(requests, monitor_request.NO_PROCESS, reader)
    os.close(reader)


@pytest.mark.parametrize("line", [b"MONITOR", b"MONITOR 12", b"MONITOR x 0 0 24 80",
                                  b"MONITOR 0 0 0 24 80", b"MONITOR 1 0 0 24",
                                  b"MONITOR 99999999999999999999 0 0 1 1", b"MONITOR -1 0 0 24 80"])
def test_malformed_requests_are_refused(paths: Paths, line: bytes) -> None:
    requests = MonitorRequests(paths)
    requests.handle(line)  # refused at once, in the caller's thread
    assert requests.counts == {monitor_request.MALFORMED: 1}


def test_a_request_without_a_terminal_size_is_answered(paths: Paths) -> None:
    # upstream's script sends '$(stty size)', empty when its stdin is not a terminal
    fifo = make_fifo(paths.monitor_fifo(os.getpid(), "stdout"))
    requests = MonitorRequests(paths)
    requests.handle(b"MONITOR %d %d %d" % (os.getpid(), os.getuid(), os.getgid()))
    assert read_answer(fifo) == MESSAGE


def test_a_fifo_never_opened_is_given_up_and_handling_never_blocks(paths: Paths) -> None:
    make_fifo(paths.monitor_fifo(os.getpid(), "stdout"))
    requests = MonitorRequests(paths, reader_wait=0.3)
    for _ in range(monitor_request.MAX_ANSWERING + 3):
        requests.handle(request(os.getpid(), os.getuid()))  # returns at once: a worker waits
    # the extra requests are refused while the first ones wait for their reader
    assert requests.counts == {monitor_request.TOO_MANY: 3}
    assert answered_or_refused(requests, refused=monitor_request.MAX_ANSWERING + 3)
    assert requests.counts == {monitor_request.TOO_MANY: 3,
                               monitor_request.NO_READER: monitor_request.MAX_ANSWERING}


def test_refusals_are_logged_once_then_counted(paths: Paths, caplog) -> None:
    requests = MonitorRequests(paths)
    with caplog.at_level(logging.WARNING, logger=monitor_request.__name__):
        for _ in range(5):
            requests.handle(b"MONITOR nonsense")
    assert requests.counts == {monitor_request.MALFORMED: 5}
    assert [r.getMessage().count("malformed MONITOR request") for r in caplog.records] == [1]


# ------------------------------------------------------------------ in the daemon

@needs_root
def test_the_daemon_answers_a_genuine_request_and_refuses_a_forged_one(
        daemon: DaemonProcess, server: LogServer, tmp_path: Path, nobody_process: int) -> None:
    paths = Paths(root=tmp_path)
    genuine = make_fifo(paths.monitor_fifo(os.getpid(), "stdout"))
    forged = make_fifo(paths.monitor_fifo(nobody_process, "stdout"))  # root's FIFO, nobody's pid
    forged_reader = _held_reader(forged)
    with open(daemon.fifo, "wb") as fifo:
        fifo.write(request(nobody_process, 0) + b"\n" + request(os.getpid(), 0) + b"\n"
                   + b"LOG after monitor\n")
    assert read_answer(genuine) == MESSAGE
    assert server.wait_for(lambda lines: any(line.stream == "after" for line in lines), 10)
    assert wait_until(lambda: "MONITOR request not matching the owner" in daemon.log(), 10, 0.02)
    assert os.read(forged_reader, 4096) == b""
    os.close(forged_reader)
    assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("MONITOR request not matching the owner") == 2  # first one, then the total
    assert f"answered the MONITOR request of pid {os.getpid()}" in log
