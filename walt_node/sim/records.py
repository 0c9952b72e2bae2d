"""What the simulated server received: log lines and API calls.

Records live in memory (thread-safe) and, when a path is given, are appended
to a JSON-lines file flushed after every batch, so other processes (tests,
``walt-node sim show --follow``) can read them while the simulator runs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, NamedTuple, Optional, Sequence

from walt_node.files import open_for_append
from walt_node.text import printable


class LogRecord(NamedTuple):
    issuer: str
    stream: str
    ts: float
    line: str
    received: float


class ApiCall(NamedTuple):
    issuer: str
    api: str
    method: str
    args: tuple
    kwargs: dict


def format_realtime(record: LogRecord) -> str:
    """The `walt log show --realtime` layout: ``HH:MM:SS.ffffff issuer.stream -> line``, what
    nodes sent (a mote's output, say) with control characters escaped for the terminal."""
    clock = datetime.fromtimestamp(record.ts).strftime("%H:%M:%S.%f")
    return f"{clock} {printable(record.issuer)}.{printable(record.stream)} -> {printable(record.line)}"


_json_string = json.encoder.encode_basestring_ascii  # C-accelerated: log lines are many


def record_to_json(record: Any) -> str:
    if isinstance(record, LogRecord):
        return logs_to_jsonl([record])[:-1]
    data: Dict[str, Any] = {"kind": "api", **record._asdict()}
    # API arguments may hold values JSON lacks (bytes, sets): keep their repr
    return json.dumps(data, default=repr)


def logs_to_jsonl(records: Sequence[LogRecord]) -> str:
    """JSON lines for log records, built by hand: json.dumps of a dict per line would
    cost the logs port half its throughput. A receiver's batch shares issuer, stream
    and reception time, so their JSON is built once per run of identical objects."""
    parts: List[str] = []
    issuer = stream = received = None
    head = tail = ""
    for record in records:
        if record.issuer is not issuer or record.stream is not stream \
                or record.received is not received:
            issuer, stream, received = record.issuer, record.stream, record.received
            head = (f'{{"kind": "log", "issuer": {_json_string(issuer)}, '
                    f'"stream": {_json_string(stream)}, "ts": ')
            tail = f', "received": {received!r}}}\n'
        parts.append(f'{head}{record.ts!r}, "line": {_json_string(record.line)}{tail}')
    return "".join(parts)


def record_from_json(text: str) -> Optional[Any]:
    """One JSON line -> LogRecord / ApiCall; None for a line that is not a record."""
    try:
        data = json.loads(text)
        kind = data.pop("kind")
        if kind == "log":
            return LogRecord(**data)
        if kind == "api":
            data["args"] = tuple(data["args"])
            return ApiCall(**data)
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


class Records:
    def __init__(self, path: Optional[Path] = None, show_logs: Optional[IO[str]] = None):
        self._logs: List[LogRecord] = []
        self._calls: List[ApiCall] = []
        self._changed = threading.Condition()
        self._file: Optional[IO[str]] = None
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            try:
                self._file = open_for_append(self.path)  # never through a link another user planted
            except OSError as error:
                raise OSError(error.errno, f"cannot write the records file {self.path}: "
                                           f"{error.strerror}") from None
        self._show = show_logs

    def add_logs(self, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        with self._changed:
            self._logs.extend(records)
            if self._file is not None:
                self._file.write(logs_to_jsonl(records))
                self._file.flush()
            if self._show is not None:
                self._print(records)
            self._changed.notify_all()

    def _print(self, records: Sequence[LogRecord]) -> None:
        try:
            self._show.write("".join(format_realtime(r) + "\n" for r in records))
            self._show.flush()
        except (OSError, ValueError):  # the terminal or pipe went away: keep recording
            self._show = None

    def add_call(self, call: ApiCall) -> None:
        with self._changed:
            self._calls.append(call)
            if self._file is not None:
                self._file.write(record_to_json(call) + "\n")
                self._file.flush()
            self._changed.notify_all()

    def logs(self) -> List[LogRecord]:
        with self._changed:
            return list(self._logs)

    def calls(self) -> List[ApiCall]:
        with self._changed:
            return list(self._calls)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))
            return True

    def close(self) -> None:
        with self._changed:
            if self._file is not None:
                self._file.close()
                self._file = None


def follow_file(path: Path, follow: bool, out: IO[str] = sys.stdout,
                poll: float = 0.2, stop: Optional[threading.Event] = None) -> int:
    """Print the log records of a records file; with ``follow``, keep printing new ones."""
    count = 0
    stop = stop or threading.Event()
    with open(path, encoding="utf-8", errors="surrogateescape") as stream:
        pending = ""
        while True:
            chunk = stream.read()
            if chunk:
                pending += chunk
                lines = pending.split("\n")
                pending = lines.pop()  # a record still being written
                for line in lines:
                    record = record_from_json(line)
                    if isinstance(record, LogRecord):
                        out.write(format_realtime(record) + "\n")
                        count += 1
                out.flush()
            elif not follow or stop.wait(poll):
                return count
