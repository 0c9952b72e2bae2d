"""Parsing of the requests written to the logs FIFO (docs/protocols.md §3).

The parser works on raw chunks as read from the FIFO (up to a megabyte at a
time) and turns them into protocol-form lines (``<ts> <text>``, §2) grouped
per stream.  The text of a line is kept byte for byte: it is whatever follows
the separator space, with runs of spaces, tabs, backslashes and literal
``\\n`` sequences untouched.

Malformed input never raises: each kind is counted (see :attr:`FifoParser.counts`)
and the first occurrence of a kind is handed to ``report`` so the daemon can
log it once.  Lines that can be repaired (invalid UTF-8, NUL bytes, overlong
lines) are still delivered, repaired and marked; the others are skipped.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional

DEFAULT_MAX_LINE = 64 * 1024

# kinds of malformed input, as shown in the daemon's log
EMPTY = "empty line"
UNKNOWN = "unknown request verb"
BAD_TS = "bad timestamp in TSLOG"
NO_STREAM = "missing or invalid stream name"
BAD_UTF8 = "invalid UTF-8 (delivered with U+FFFD replacements)"
NUL = "NUL bytes (delivered with U+FFFD replacements)"
OVERLONG = "overlong line (delivered truncated)"
UNTERMINATED = "unterminated line, ended by the next request (delivered as it was)"
MONITOR = "MONITOR request refused (use walt-node's walt-log-monitor)"

REPLACEMENT = "\ufffd".encode()
# how every request starts: a read that begins with one starts a new request
REQUEST_STARTS = (b"LOG ", b"TSLOG ", b"MONITOR")

Batches = Dict[bytes, List[bytes]]
Reporter = Callable[[str, bytes], None]


def _ignore(kind: str, sample: bytes) -> None:
    pass


class FifoParser:
    """Incremental parser: feed it chunks, get protocol lines per stream.

    ``feed`` returns ``{stream name (bytes): [block]}`` where a block is
    protocol lines ``b"<ts> <text>\\n..."``, in arrival order per stream.  ``LOG`` lines are
    stamped with the time of the read that brought their end.
    """

    def __init__(self, max_line: int = DEFAULT_MAX_LINE,
                 clock: Callable[[], float] = time.time,
                 report: Reporter = _ignore,
                 on_monitor: Optional[Callable[[bytes], None]] = None):
        if max_line < 64:
            raise ValueError(f"maximum line length {max_line} is too small: give --max-line "
                             "at least 64 (bytes)")
        self.max_line = max_line
        self.clock = clock
        self.report = report
        self.on_monitor = on_monitor  # MONITOR requests go there (else: counted as malformed)
        self.counts: Dict[str, int] = {}
        self.valid_lines = 0
        self._partial = b""
        self._discarding = False  # inside the rest of an overlong line
        self._streams: Dict[bytes, bool] = {}  # stream name -> is valid (cache)
        self._marker = b" [walt-node: line truncated, longer than %d bytes]" % max_line

    # ------------------------------------------------------------------ input
    def feed(self, chunk: bytes) -> Batches:
        batches: Batches = {}
        if ((self._partial or self._discarding) and chunk.startswith(REQUEST_STARTS)
                and not self._continues_tslog(chunk)):
            chunk = self._end_unterminated(chunk)
        if self._discarding:
            end = chunk.find(b"\n")
            if end < 0:
                return batches
            chunk = chunk[end + 1:]
            self._discarding = False
        if self._partial:
            chunk = self._partial + chunk
        lines = chunk.split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self.max_line:
            # never buffer an endless line: deliver its head, skip the rest up to its \n
            lines.append(self._partial[:self.max_line])
            self._partial = b""
            self._discarding = True
        stamp = b"%.6f " % self.clock()
        clean = chunk.isascii() and b"\0" not in chunk
        if clean and self._single_stream_fast_path(chunk, len(lines), stamp, batches):
            return batches
        self._parse_lines(lines, stamp, clean, batches)
        for stream, parsed in batches.items():
            parsed.append(b"")
            batches[stream] = [b"\n".join(parsed)]
        return batches

    def _single_stream_fast_path(self, chunk: bytes, count: int, stamp: bytes,
                                 batches: Batches) -> bool:
        """The common heavy case, a chunk of ``LOG`` lines of one stream (a
        program piped into walt-log-cat, an echo loop), converted with a few
        whole-buffer operations instead of a Python loop per line."""
        if count == 0 or not chunk.startswith(b"LOG "):
            return False
        space = chunk.find(b" ", 4)
        if space < 0:
            return False
        stream = chunk[4:space]
        end = chunk.rfind(b"\n") + 1
        body = b"\n" + chunk[:end]
        prefix = b"\n" + chunk[:space + 1]
        if body.count(prefix) != count or not self._valid_stream(stream) or self._has_long_line(body):
            return False
        batches[stream] = [body.replace(prefix, b"\n" + stamp)[1:]]
        self.valid_lines += count
        return True

    def _has_long_line(self, body: bytes) -> bool:
        """Every line < max_line iff every window of max_line/2 bytes holds a newline."""
        window = self.max_line // 2
        for start in range(0, len(body) - window + 1, window):
            if body.find(b"\n", start, start + window) < 0:
                return True
        return False

    def _end_unterminated(self, chunk: bytes) -> bytes:
        """The line left unterminated by the last read ends where this read begins.

        Each write of at most PIPE_BUF bytes lands whole in the FIFO, and a
        request starts with its verb: a read that begins with a verb most likely
        begins another write, maybe by another user.  Gluing it to the leftover
        would let that leftover's writer capture the line (``LOG prank `` then
        someone's ``LOG experiment ...``) or make it vanish (the skipped rest of
        an overlong line).  The leftover is delivered on its own instead."""
        self._malformed(UNTERMINATED, self._partial or b"(the rest of an overlong line)")
        self._discarding = False
        partial, self._partial = self._partial, b""
        return partial + b"\n" + chunk if partial else chunk

    def _continues_tslog(self, chunk: bytes) -> bool:
        """``TS`` left over, then ``LOG <timestamp> ...``: one TSLOG request cut by
        a read after its first two bytes (only a write larger than PIPE_BUF can be
        cut), not a new request."""
        if self._partial != b"TS":
            return False
        end = chunk.find(b" ", 4)
        if end < 0 and b"\n" not in chunk:  # the read ended inside the stamp: what came is its start
            return chunk[4:].replace(b".", b"", 1).isdigit() or chunk[4:] in (b"", b".")
        return self._timestamp(chunk[4:end] if end >= 0 else chunk[4:]) is not None

    def pending_bytes(self) -> int:
        """Bytes of an incomplete last line waiting for its end."""
        return len(self._partial)

    def finish(self) -> Batches:
        """End of input: an unterminated last line is still delivered."""
        if not self._partial:
            return {}
        partial, self._partial = self._partial, b""
        return self.feed(partial + b"\n")

    # ------------------------------------------------------------------ lines
    def _parse_lines(self, lines: List[bytes], stamp: bytes, clean: bool, batches: Batches) -> None:
        """The general path: one tight loop (locals, no call per valid line)."""
        max_line = self.max_line
        get = batches.get
        valid = 0
        for line in lines:
            if line.startswith(b"LOG "):
                parts = line.split(b" ", 2)
                ts = stamp
                text = parts[2] if len(parts) == 3 else b""
            elif line.startswith(b"TSLOG "):
                parts = line.split(b" ", 3)
                if len(parts) < 3:
                    self._malformed(NO_STREAM, line)
                    continue
                raw_ts = parts[1]
                # a plain decimal goes through as written; anything else is checked
                if len(raw_ts) <= 24 and raw_ts.replace(b".", b"", 1).isdigit():
                    ts = raw_ts + b" "
                else:
                    ts = self._timestamp(raw_ts)
                    if ts is None:
                        self._malformed(BAD_TS, line)
                        continue
                del parts[1]
                text = parts[2] if len(parts) == 3 else b""
            else:
                self._other(line)
                continue
            stream = parts[1]
            out = get(stream)
            if out is None:
                if not self._valid_stream(stream):
                    self._malformed(NO_STREAM, line)
                    continue
                out = batches[stream] = []
            if len(line) >= max_line:
                self._malformed(OVERLONG, line)
                text = text[:max_line] + self._marker
            if not clean:
                text = self._repair(text)
            out.append(ts + text)
            valid += 1
        self.valid_lines += valid

    def _timestamp(self, raw: bytes) -> Optional[bytes]:
        try:
            value = float(raw)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        return b"%.6f " % value

    def _valid_stream(self, stream: bytes) -> bool:
        known = self._streams.get(stream)
        if known is None:
            try:
                name = stream.decode("utf-8")
            except UnicodeDecodeError:
                name = ""
            known = bool(name) and name.isprintable()
            if known:
                if len(self._streams) >= 10_000:
                    self._streams.clear()  # a cache: stream names come and go
                self._streams[stream] = known
        return known

    def _repair(self, text: bytes) -> bytes:
        if b"\0" in text:
            self._malformed(NUL, text)
            text = text.replace(b"\0", REPLACEMENT)
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            self._malformed(BAD_UTF8, text)
            text = text.decode("utf-8", errors="replace").encode("utf-8")
        return text

    def _other(self, line: bytes) -> None:
        if not line:
            return  # a separator: walt-node's writers start each write with a newline
        if not line.strip():
            self._malformed(EMPTY, line)
        elif line.startswith(b"MONITOR ") or line == b"MONITOR":
            if self.on_monitor is not None:
                self.on_monitor(line)
            else:
                self._malformed(MONITOR, line)
        else:
            self._malformed(UNKNOWN, line)

    def _malformed(self, kind: str, sample: bytes) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count == 1:
            self.report(kind, sample[:120])
