"""`walt-node journal-forward`: forward the journal of chosen systemd units to log streams.

Configuration: one file (``/etc/walt/journal-forward.conf``), lines
``<unit> <stream>``.  Each journal entry written by one of these units
(``_SYSTEMD_UNIT``) becomes lines of its stream, stamped with the journal's
own time (``__REALTIME_TIMESTAMP``).  After each delivered batch the entry's
cursor is saved, so a restarted forwarder resumes right after it.

Two journal readers, same behaviour: the ``systemd`` Python module
(``pip install systemd-python`` in walt-node's venv) when importable, else
``journalctl -o json`` in a child process.
"""

from __future__ import annotations

import json
import logging
import os
import select
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from walt_node import runner
from walt_node.config import ConfigError, meaningful_lines, read_text
from walt_node.errors import WaltNodeError
from walt_node.files import write_atomically
from walt_node.service import ProblemCounter, StopFlag

log = logging.getLogger(__name__)


CHECKPOINT_ENTRIES = 1000  # save the cursor at least this often while busy
IDLE_WAIT = 0.5  # a quiet journal for this long triggers a checkpoint
# While the journal stays quiet the wait doubles up to this: an idle forwarder wakes
# about once a minute instead of twice a second (a checkpoint that could not be
# saved is retried at the same pace).
MAX_QUIET_WAIT = 64.0


def quiet_waits() -> Iterator[float]:
    """How long to wait for the next entry, one quiet period after the other."""
    wait = IDLE_WAIT
    while True:
        yield wait
        wait = min(wait * 2, MAX_QUIET_WAIT)
FLUSH_TIMEOUT = 30.0
START_POINTS = ("boot", "all", "now")
SOURCES = ("auto", "python", "journalctl")
EXIT_TEMPORARY_FAILURE = 75  # EX_TEMPFAIL: systemd restarts the unit (status 1 means "fix the config")


# ------------------------------------------------------------------ configuration

def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


def parse_config(text: str, where: str) -> Dict[str, str]:
    """``<unit> <stream>`` lines -> {unit: stream}; errors name the file and line."""
    routes: Dict[str, str] = {}
    for number, line, raw in meaningful_lines(text):
        fields = line.split()
        if len(fields) != 2:
            raise ConfigError(f"{where}:{number}: expected '<unit> <stream>', got {raw!r}")
        unit, stream = unit_name(fields[0]), fields[1]
        if not stream.isprintable():
            raise ConfigError(f"{where}:{number}: control characters in stream name {stream!r}")
        if unit in routes:
            raise ConfigError(f"{where}:{number}: unit '{unit}' is already forwarded to "
                              f"stream '{routes[unit]}'; keep one line per unit")
        routes[unit] = stream
    if not routes:
        raise ConfigError(f"{where}: no unit to forward; add lines '<unit> <stream>'")
    return routes


def load_config(path: Path) -> Dict[str, str]:
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: create it with lines '<unit> <stream>' "
                          "(e.g. 'ssh sshd-log')") from None
    return parse_config(text, str(path))


# ------------------------------------------------------------------ entries

@dataclass(frozen=True)
class Entry:
    cursor: str
    unit: str
    ts: float
    message: str


class MalformedEntry(ValueError):
    pass


def message_text(value) -> str:
    """journalctl's MESSAGE: a string, or an array of bytes when not valid UTF-8."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", errors="replace")
    raise MalformedEntry(f"MESSAGE of unexpected type {type(value).__name__}")


def entry_from_json(line: str) -> Entry:
    """One line of ``journalctl -o json``."""
    try:
        data = json.loads(line)
    except ValueError as error:
        raise MalformedEntry(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise MalformedEntry("not a JSON object")
    try:
        cursor = data["__CURSOR"]
        ts = int(data["__REALTIME_TIMESTAMP"]) / 1e6
    except KeyError as error:
        raise MalformedEntry(f"field {error} missing") from None
    except (TypeError, ValueError):
        raise MalformedEntry(f"bad __REALTIME_TIMESTAMP {data['__REALTIME_TIMESTAMP']!r}") from None
    unit = data.get("_SYSTEMD_UNIT") or ""
    return Entry(str(cursor), str(unit), ts, message_text(data.get("MESSAGE")))


def entry_from_reader(data: dict) -> Entry:
    """One entry of ``systemd.journal.Reader`` (values already converted to Python types)."""
    try:
        cursor = data["__CURSOR"]
        ts = data["__REALTIME_TIMESTAMP"].timestamp()
    except KeyError as error:
        raise MalformedEntry(f"field {error} missing") from None
    except AttributeError:
        raise MalformedEntry(f"bad __REALTIME_TIMESTAMP {data['__REALTIME_TIMESTAMP']!r}") from None
    return Entry(str(cursor), str(data.get("_SYSTEMD_UNIT") or ""), ts, message_text(data.get("MESSAGE")))


# ------------------------------------------------------------------ cursor

class CursorFile:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> Optional[str]:
        try:
            cursor = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return cursor or None

    def save(self, cursor: str) -> None:
        # write then rename: a crash leaves the old cursor or the new one, never half of one
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, cursor + "\n")

    def forget(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------ forwarding

class Forwarder:
    """Sends entries of the routed units as log lines; saves the cursor once they are delivered.

    ``emit(stream, text, ts)`` queues a line; ``flush()`` returns True once every
    queued line is delivered (or safely spooled).
    """

    def __init__(self, routes: Dict[str, str], emit: Callable[[str, str, float], None],
                 flush: Callable[[], bool], cursor_file: CursorFile, problems: ProblemCounter):
        self.routes = routes
        self.emit = emit
        self.flush = flush
        self.cursor_file = cursor_file
        self.problems = problems
        self.last_cursor: Optional[str] = None  # read but not yet saved
        self.since_checkpoint = 0
        self.lines_sent = 0

    def handle(self, entry: Entry) -> None:
        stream = self.routes.get(entry.unit)
        if stream is not None:
            for text in entry.message.split("\n"):
                self.emit(stream, text, entry.ts)
                self.lines_sent += 1
        self.last_cursor = entry.cursor
        self.since_checkpoint += 1
        if self.since_checkpoint >= CHECKPOINT_ENTRIES:
            self.checkpoint()

    def checkpoint(self) -> None:
        if self.last_cursor is None:
            return
        if not self.flush():
            # not saved: after a restart these entries are sent again rather than lost
            self.problems.report("delivery not confirmed", "the cursor was not saved")
            return
        self.cursor_file.save(self.last_cursor)
        self.last_cursor = None
        self.since_checkpoint = 0


# ------------------------------------------------------------------ journal readers

class JournalUnavailable(WaltNodeError):
    pass


class CursorRejected(WaltNodeError):
    pass


# A reader yields entries, and None whenever the journal has been quiet for a while.
EntryStream = Iterator[Optional[Entry]]


def read_with_journalctl(units: Sequence[str], cursor: Optional[str], start: str,
                         files: Sequence[Path], follow: bool, problems: ProblemCounter,
                         stop: Optional[StopFlag] = None) -> EntryStream:
    argv = journalctl_argv(units, cursor, start, files, follow)
    log.debug("running %s", " ".join(argv))
    # stderr in a file: a pipe nobody reads while following could fill up and block journalctl
    # (a memory file: the tempfile module and what it imports stay out of the resident process)
    with os.fdopen(os.memfd_create("journalctl-stderr", os.MFD_CLOEXEC), "w+b") as errors:
        try:
            process = runner.start(argv, stdout=runner.PIPE, stderr=errors)
        except runner.CommandMissing:
            raise JournalUnavailable("journalctl was not found on PATH (install it, or the systemd Python "
                                     "module: pip install systemd-python in walt-node's venv)") from None
        try:
            received = yield from _journalctl_entries(process, problems, stop)
            if stop is not None and stop.is_set():
                return
            status = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()
        if status != 0:
            errors.seek(0)
            error = errors.read().decode(errors="replace").strip()
            if cursor and received == 0 and "cursor" in error.lower():
                raise CursorRejected(error)
            raise JournalUnavailable(f"journalctl failed (status {status}): {error}")


def _journalctl_entries(process: runner.Process, problems: ProblemCounter, stop: Optional[StopFlag]):
    """Entries from journalctl's output (None when quiet) until its end or ``stop``;
    returns how many lines it read."""
    assert process.stdout is not None
    pending = b""
    received = 0
    waits = quiet_waits()
    waited = [process.stdout] + ([stop] if stop is not None else [])
    while True:
        ready, _, _ = select.select(waited, [], [], next(waits))
        if stop is not None and stop in ready:
            return received
        if not ready:
            yield None
            continue
        waits = quiet_waits()
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            received += 1
            yield _parsed(line.decode("utf-8", errors="replace"), problems)
    if pending:
        received += 1
        yield _parsed(pending.decode("utf-8", errors="replace"), problems)
    return received


def _parsed(line: str, problems: ProblemCounter) -> Optional[Entry]:
    if not line.strip():
        return None
    try:
        return entry_from_json(line)
    except MalformedEntry as error:
        problems.report("malformed journal entry", f"{error}: {line[:200]!r}")
        return None


def journalctl_argv(units: Sequence[str], cursor: Optional[str], start: str,
                    files: Sequence[Path], follow: bool) -> List[str]:
    argv = ["journalctl", "--output=json", "--all", "--no-pager", "--quiet", "--lines=all"]
    argv += [f"--file={path}" for path in files]
    if follow:
        argv.append("--follow")
    if cursor:
        argv.append(f"--after-cursor={cursor}")
    elif start == "boot":
        argv.append("--boot")
    elif start == "now":
        argv[argv.index("--lines=all")] = "--lines=0"
    # matches on one field are OR-ed: entries of any of the units
    argv += [f"_SYSTEMD_UNIT={unit}" for unit in units]
    return argv


def read_with_python_module(units: Sequence[str], cursor: Optional[str], start: str,
                            files: Sequence[Path], follow: bool,
                            problems: ProblemCounter, stop: Optional[StopFlag] = None) -> EntryStream:
    try:
        from systemd import journal
    except ImportError:
        raise JournalUnavailable("the systemd Python module is not installed "
                                 "(pip install systemd-python in walt-node's venv)") from None
    reader = journal.Reader(files=[str(f) for f in files]) if files else journal.Reader()
    try:
        for unit in units:
            reader.add_match(_SYSTEMD_UNIT=unit)  # same field: OR-ed
        _position(reader, cursor, start)
        waits = quiet_waits()
        while True:
            for data in iter(reader.get_next, {}):
                waits = quiet_waits()
                try:
                    yield entry_from_reader(data)
                except MalformedEntry as error:
                    problems.report("malformed journal entry", str(error))
            yield None
            if not follow or (stop is not None and stop.is_set()):
                return
            # a stop is seen after this wait: at most MAX_QUIET_WAIT seconds later
            reader.wait(next(waits))
    finally:
        reader.close()


def _position(reader, cursor: Optional[str], start: str) -> None:
    if cursor:
        try:
            reader.seek_cursor(cursor)
        except (OSError, ValueError) as error:
            raise CursorRejected(str(error)) from None
        first = reader.get_next()
        if first.get("__CURSOR") != cursor:
            # the saved entry is gone (journal rotated): start just before what follows it
            reader.get_previous()
        return
    if start == "boot":
        reader.this_boot()
        reader.seek_head()
    elif start == "now":
        reader.seek_tail()
        reader.get_previous()  # after seek_tail, step back so get_next() returns new entries only
    else:
        reader.seek_head()


READERS = {"python": read_with_python_module, "journalctl": read_with_journalctl}


def choose_source(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return "journalctl"
    return "python"


# ------------------------------------------------------------------ command

def forward(forwarder: Forwarder, entries: EntryStream) -> None:
    for entry in entries:
        if entry is None:
            forwarder.checkpoint()
        else:
            forwarder.handle(entry)
    forwarder.checkpoint()
