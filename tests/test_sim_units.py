"""The simulator's line splitting and record files, under arbitrary chunking (hypothesis)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from walt_node.sim.records import (
    ApiCall,
    LogRecord,
    Records,
    follow_file,
    format_realtime,
    record_from_json,
    record_to_json,
)
from walt_node.sim.services import LogStreamReceiver

# text without line breaks, as one log line; any code point the client can encode
line_text = st.text(st.characters(exclude_characters="\n\r", exclude_categories=("Cs",)),
                    max_size=40)


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(line_text, max_size=30), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_any_chunking_gives_the_same_lines(lines, cuts) -> None:
    now = time.time()
    data = b"".join(b"%.6f %s\n" % (now - i, t.encode()) for i, t in enumerate(lines)) + b"CLOSE\n"
    records = Records()
    receiver = LogStreamReceiver("n", "s", True, records)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    closed = [receiver.feed(data[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]
    assert closed[-1] is True and not any(closed[:-1])
    got = records.logs()
    assert [r.line for r in got] == lines
    assert [r.ts for r in got] == [round(now - i, 6) for i in range(len(lines))]


@settings(max_examples=100, deadline=None)
@given(line=st.text(max_size=30), stream=st.text(min_size=1, max_size=10),
       ts=st.floats(0, 4e9), args=st.lists(st.one_of(st.text(), st.integers(), st.none())))
def test_records_round_trip_through_json_lines(line, stream, ts, args) -> None:
    record = LogRecord("node1", stream, ts, line, ts + 1)
    text = record_to_json(record)
    assert "\n" not in text
    assert record_from_json(text) == record
    call = ApiCall("node1", "NSAPI", "m", tuple(args), {"k": line})
    assert record_from_json(record_to_json(call)) == call


def test_records_file_and_show(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    shown = io.StringIO()
    records = Records(path, show_logs=shown)
    batch = [LogRecord("node1", "exp", 1700000000.25, "héllo", 1700000000.5),
             LogRecord("10.0.0.9", "other", 1700000001.0, "x", 1700000001.0)]
    records.add_logs(batch)
    records.add_call(ApiCall("node1", "VSAPI", "get_device_info", (b"raw",), {}))
    assert shown.getvalue().splitlines() == [format_realtime(r) for r in batch]
    assert format_realtime(batch[0]).endswith(" node1.exp -> héllo")
    # what a node (or a mote behind it) sent cannot drive the terminal or fake a line
    hostile = LogRecord("node1", "s\x1b[2J", 1700000000.0, "\x1b]0;title\x07a\nfake line", 1.0)
    assert format_realtime(hostile).endswith(" node1.s\\x1b[2J -> \\x1b]0;title\\x07a\\nfake line")
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds == ["log", "log", "api"]
    assert json.loads(path.read_text().splitlines()[2])["args"] == ["b'raw'"]
    (path.parent / "half.jsonl").write_text(path.read_text() + '{"kind": "log", "iss')
    out = io.StringIO()
    assert follow_file(path.parent / "half.jsonl", follow=False, out=out) == 2
    assert out.getvalue() == shown.getvalue()
    records.close()
