"""The simulator reads a log stream exactly as a WalT 10 server does (docs/protocols.md §11).

The same byte streams, cut into the same reads at random places, go to the
simulator's :class:`StrictLogStream` and to upstream's ``LogsStreamListener``
(tests/conformance/upstream_driver.py feed): the lines stored, their stamps (or
"replaced by the time of the read") and how the stream ended must be the same.
"""

from __future__ import annotations

import math
import time
from typing import Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.upstream import Upstream, UpstreamFeeder

from walt_node.sim.records import Records
from walt_node.sim.services import StrictLogStream

NOW = time.time()
stamps = st.one_of(
    st.sampled_from([b"%.6f" % (NOW - 100), b"%.3f" % (NOW - 3e7), b"%d" % (NOW - 5),
                     b"%.6f" % (NOW + 1000),            # ahead: replaced
                     b"%.6f" % (NOW - 11 * 365 * 86400),  # over ten years old: replaced
                     b"0001700000000.5", b"1_7e9", b"nan", b"-inf", b" 17e8", b"1.5\0",
                     b"", b"abc", b"CLOSE", b"\xc3\xa9", b"\xff"]),
    st.floats(allow_nan=False, min_value=NOW - 9 * 365 * 86400, max_value=NOW - 10)
    .map(lambda f: repr(f).encode()),
)
texts = st.lists(st.sampled_from([b"a", b" ", b"\xc3\xa9", b"\xe4\xb8\xad", b"\xf0\x9f\x98\x80",
                                  b"\0", b"\r", b"\t", b"CLOSE", b"\xff", b"\xe4\xb8"]),
                 max_size=12).map(b"".join)


@st.composite
def streams(draw) -> Tuple[str, List[bytes], bool]:
    mode = draw(st.sampled_from(["TIMESTAMPS_INSIDE", "NO_TIMESTAMPS"]))
    lines = draw(st.lists(st.tuples(stamps, texts), max_size=12))
    if mode == "TIMESTAMPS_INSIDE":
        body = b"".join(stamp + b" " + text + b"\n" for stamp, text in lines)
    else:
        body = b"".join(text + b"\n" for _, text in lines)
    ending = draw(st.sampled_from([b"CLOSE\n", b"", b"partial", b"CLOSE\nmore\n", b"CLOSE"]))
    data = body + ending
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=6))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)]) if b > a]
    eof = draw(st.booleans())
    return mode, chunks, eof


@pytest.fixture(scope="module")
def feeder(upstream: Upstream) -> Iterator[UpstreamFeeder]:
    running = UpstreamFeeder(upstream)
    yield running
    running.close()


def simulate(mode: str, chunks: List[bytes], eof: bool) -> Tuple[List, Optional[str], float]:
    records = Records()
    stream = StrictLogStream("node", "s", mode != "NO_TIMESTAMPS", records)
    now = time.time()
    ended = None
    for chunk in chunks + ([b""] if eof else []):
        ended = stream.read(chunk, now)
        if ended is not None:
            break
    return [[r.ts, r.line] for r in records.logs()], ended, now


def comparable(lines: List, now: float) -> List:
    """Stamps as the test wrote them, or 'now' where the server put the time of the read."""
    return [("nan" if math.isnan(ts) else "now" if ts == now else ts, text) for ts, text in lines]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_simulator_stores_and_closes_like_the_real_listener(feeder, stream) -> None:
    mode, chunks, eof = stream
    real = feeder.feed(mode, chunks, eof)
    lines, ended, now = simulate(mode, chunks, eof)
    assert comparable(lines, now) == comparable(real["lines"], real["now"])
    assert ended == real["closed"]


def test_a_character_cut_between_two_reads_closes_both(feeder) -> None:
    """The finding of the issue, on both: nothing of the cut read is stored."""
    chunks = [b"%.6f caf\xc3" % NOW, b"\xa9\n%.6f next\n" % NOW]
    real = feeder.feed("TIMESTAMPS_INSIDE", chunks, eof=False)
    lines, ended, _ = simulate("TIMESTAMPS_INSIDE", chunks, eof=False)
    assert real["closed"] == ended == "error"
    assert real["lines"] == lines == []


@pytest.mark.parametrize("stamp", [b"nan", b"-inf", b"1_7e9", b"0001700000000.5", b"1.5\0",
                                   b"%.6f" % (NOW + 1000), b"%.6f" % (NOW - 10 * 365 * 86400 - 60)])
def test_special_stamps_like_the_real_listener(feeder, stamp) -> None:
    chunks = [stamp + b" text\0\n" + b"%.6f ok\n" % NOW + b"CLOSE\n"]
    real = feeder.feed("TIMESTAMPS_INSIDE", chunks, eof=False)
    lines, ended, now = simulate("TIMESTAMPS_INSIDE", chunks, eof=False)
    assert comparable(lines, now) == comparable(real["lines"], real["now"])
    assert ended == real["closed"]
