"""The on-disk spool: order, prepend, size limit with notices, adoption of dead
owners' trees (and not of live ones), segments cut short by a crash."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from support.logs import fill_disk, small_disk

from walt_node.logstreams.spool import MAX_APPENDING, Spool


def drain(spool: Spool, stream: str) -> bytes:
    data = b""
    while spool.has(stream):
        data += spool.read(stream, 1000)
    return data


def lines(first: int, count: int, ts: int = 1700000000) -> bytes:
    return b"".join(b"%d.0 line-%05d\n" % (ts + i, i) for i in range(first, first + count))


def test_append_prepend_and_read_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon").open()
    spool.append("s", lines(10, 10))
    spool.append("s", lines(20, 5))
    spool.prepend("s", lines(0, 10))
    spool.append("other", b"1.0 x\n")
    assert drain(spool, "s") == lines(0, 25)
    assert drain(spool, "other") == b"1.0 x\n"
    assert spool.total == 0 and not spool.streams()
    spool.close()


def test_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon").open()
    spool.append("a b/c", lines(0, 100))  # any stream name maps to a safe directory
    spool.close()
    again = Spool(tmp_path, "daemon").open()
    assert again.streams() == ["a b/c"]
    assert drain(again, "a b/c") == lines(0, 100)


def test_segment_cut_short_by_a_crash_keeps_its_last_line_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon").open()
    spool.append("s", b"1.0 complete\n1.0 half a li")
    spool.close()
    again = Spool(tmp_path, "daemon").open()
    assert drain(again, "s") == b"1.0 complete\n1.0 half a li\n"


def test_full_spool_replaces_oldest_lines_with_a_notice(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon", max_bytes=64 * 1024).open()
    total = 20_000
    spool.append("s", lines(0, total))
    assert spool.total <= 64 * 1024
    data = drain(spool, "s").splitlines()
    notices = [line for line in data if b"were dropped here" in line]
    kept = [line for line in data if b"line-" in line]
    dropped = sum(int(n.split(b"] ")[1].split()[0]) for n in notices)
    assert dropped + len(kept) == total and dropped == spool.dropped_lines
    assert kept == lines(total - len(kept), len(kept)).splitlines()  # the newest are kept
    assert data[0].startswith(b"1700000000.000000 [walt-node]"), "stamped like the first dropped line"


def test_refuses_a_tree_in_use(tmp_path: Path) -> None:
    first = Spool(tmp_path, "daemon").open()
    with pytest.raises(OSError, match="in use by another process"):
        Spool(tmp_path, "daemon").open()
    first.close()


def test_adopts_dead_owners_only(tmp_path: Path) -> None:
    dead = Spool(tmp_path, "api-1").open()
    dead.append("s", lines(0, 3))
    dead.close()  # its lock is free: like a process that died
    alive = Spool(tmp_path, "api-2").open()
    alive.append("s", lines(3, 3))
    daemon = Spool(tmp_path, "daemon").open()
    daemon.append("s", lines(6, 3))
    assert daemon.adopt() == 1
    assert not (tmp_path / "api-1").exists() and (tmp_path / "api-2").exists()
    assert drain(daemon, "s") == lines(0, 3) + lines(6, 3), "adopted segments sort by creation time"
    alive.close(remove_if_empty=False)
    assert daemon.adopt() == 1
    assert drain(daemon, "s") == lines(3, 3)


def test_lock_is_a_real_flock(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon").open()
    fd = os.open(tmp_path / "daemon.lock", os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)
    spool.close()


def test_too_small_a_limit_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--spool-size"):
        Spool(tmp_path, "daemon", max_bytes=1000)


def test_any_stream_name_gets_a_short_directory(tmp_path: Path) -> None:
    """A local user picks stream names: a long non-ASCII one must not make the
    directory name too long (it once switched the whole spool off)."""
    long_name = "\u00e9t\u00e9 " * 200
    spool = Spool(tmp_path, "api-1").open()
    spool.append(long_name, lines(0, 3))
    spool.append("short", lines(3, 1))
    assert all(len(path.name) <= 100 for path in (tmp_path / "api-1").iterdir())
    spool.close()
    again = Spool(tmp_path, "api-1").open()  # the name comes back after a restart
    assert sorted(again.streams()) == sorted([long_name, "short"])
    again.close()
    daemon = Spool(tmp_path, "daemon").open()  # and after adoption
    assert daemon.adopt() == 2
    assert drain(daemon, long_name) == lines(0, 3) and drain(daemon, "short") == lines(3, 1)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_thousands_of_streams_keep_few_files_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "daemon").open()
    before = open_fds()
    for round_ in range(2):  # appending again after its file was closed continues it
        for number in range(2000):
            spool.append(f"s{number}", lines(round_, 1))
        assert open_fds() - before <= MAX_APPENDING
    assert len(list(tmp_path.rglob("*.seg"))) == 2000, "one segment per stream, not per append"
    assert all(drain(spool, f"s{number}") == lines(0, 2) for number in range(2000))
    spool.close()


def test_a_full_disk_leaves_the_spool_as_it_was_and_space_coming_back_is_used(
        tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "256k") as disk:
        spool = Spool(disk / "spool", "daemon").open()
        spool.append("s", lines(0, 100))
        filler = fill_disk(disk, leave=0)
        stored = 100
        with pytest.raises(OSError, match="No space left"):
            for start in range(100, 100_000, 500):  # until the disk is full for real
                spool.append("s", lines(start, 500))
                stored += 500
        with pytest.raises(OSError, match="No space left"):
            spool.prepend("other", lines(0, 5000))
        filler.unlink()  # space comes back
        spool.append("s", lines(stored, 10))
        spool.prepend("other", lines(0, 5))
        assert drain(spool, "s") == lines(0, stored + 10), "no duplicate, no cut line"
        assert drain(spool, "other") == lines(0, 5)
        spool.close()
