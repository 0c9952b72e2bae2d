"""walt-serial-autolog reads a mote as WalT 10.0's own reader does (docs/protocols.md §3, §11).

Each transcript goes, line by line with the same timestamps, through upstream's
``SensorLogsMonitor`` (tests/conformance/upstream_autolog.py, in the upstream
venv) and through walt-node's ``LineReader`` + ``MoteProtocol`` + debug copies;
the ``TSLOG`` requests and the copies must be the same.  Where upstream
crashes, walt-node reports the line and goes on: what it sends must then be
what upstream sends without that line.  The few documented differences are
asserted on their own at the end.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from support.upstream import Upstream

from walt_node.logstreams.serial import Copies, LineReader, MoteProtocol
from walt_node.service import ProblemCounter

DRIVER = Path(__file__).parent / "upstream_autolog.py"
Transcript = List[bytes]


class UpstreamAutolog:
    def __init__(self, upstream: Upstream):
        env = dict(os.environ, PYTHONIOENCODING="utf-8")  # upstream decodes with stdout's encoding
        self.process = subprocess.Popen([str(upstream.python), str(DRIVER)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)

    def run(self, lines: Transcript, stamps: List[float]) -> Dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        job = {"lines": [base64.b64encode(line).decode() for line in lines], "ts": stamps}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, "the upstream autolog driver died"
        return json.loads(answer)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def upstream_autolog(upstream: Upstream) -> Iterator[UpstreamAutolog]:
    driver = UpstreamAutolog(upstream)
    yield driver
    driver.close()


def ours(lines: Transcript, stamps: List[float], copies_dir: Path) -> Dict:
    """walt-node's reader on the same lines: the requests it makes, its copies, its reports."""
    problems = ProblemCounter(logging.getLogger("test-serial-upstream"))
    copies = Copies(copies_dir, problems)
    requests: List[str] = []

    def emit(stream: str, text: str, ts: float) -> None:
        requests.append(f"TSLOG {ts:f} {stream} {text}")
        copies.sent(stream, text, ts)

    protocol = MoteProtocol(emit, problems)

    def on_line(line: str, ts: float) -> None:
        copies.read(line)
        protocol.line(line, ts)

    reader = LineReader(on_line, problems)
    for line, ts in zip(lines, stamps):
        reader.feed(line, ts)
    reader.finish(stamps[-1] if stamps else 0.0)
    copies.close()
    return {"requests": requests, "in": (copies_dir / "in.log").read_bytes().decode(),
            "out": (copies_dir / "out.log").read_bytes().decode(), "problems": dict(problems.counts)}


def stamps_for(lines: Transcript) -> List[float]:
    return [1700000000.0 + 0.25 * i for i in range(len(lines))]


def lines_of(text: str) -> Transcript:
    """The mote's lines as it sends them: up to and with each \\n (a last one may lack it)."""
    return re.findall(rb"[^\n]*\n|[^\n]+$", text.encode())


# transcripts on which upstream runs to the end
SAME = {
    "basic": "bootloader v1.2\r\nT:0 before LOGSTART\r\nLOGSTART\r\nLOGDEF temp T : {0} C\r\n"
             "T:21.5\r\nT:22\r\nnoise\r\n",
    "WalT's own example": "LOGSTART\nLOGDEF vizwalt ;T: : {nodeid}:TxStart:{}\n"
                          "LOGDEF vizwalt ;R : {nodeid}:RxStart\nLOGVAR nodeid af4e\n"
                          ";T:aabbccddeeff\n;R\n;T:gghhiijjkkll\n",
    "fields": "LOGSTART\nLOGDEF m M , {2}-{0}|{1}\nM,a,b,c\nM,,,\nM,x,y,z,extra\nMM,p,q,r\n",
    "several words of LOGVAR": "LOGSTART\nLOGDEF s P : {0} at {site} ({node-id})\n"
                               "LOGVAR site lab 2 north\nLOGVAR node-id n-7\nP:x\nLOGVAR site b\nP:y\n",
    "LOGSTART again": "LOGSTART\nLOGDEF s P : {0}{v}\nLOGVAR v !\nP:a\nLOGSTART\nP:b\n"
                      "LOGDEF r LOGS : restarted\nLOGSTART\n",
    "LOGSTART with words": "LOGDEF s P : {0}\nLOGSTART now please\nLOGDEF s P : {0}\nP:1\n",
    "blanks": "LOGSTART\n  LOGDEF \t s  P  :  {0}   C  \t \n\n   \n \tP:1  \r\nP:2\x0c\nP:3 \x1c\n",
    "format only of words": "LOGSTART\nLOGDEF e E :\nLOGDEF f F : fixed text\nE:1\nF\nF:2\n",
    "specs": "LOGSTART\nLOGDEF w W : [{0:>8}] [{0:^7}] [{0!r}] [{0:.2}] [{1:_<4}]\nW:ab:c\n",
    "auto numbering": "LOGSTART\nLOGDEF a A ; {} and {}\nA;1;2;3\n",
    "prefix is the whole line": "LOGSTART\nLOGDEF s END , done\nEND\nEND,x\nENDING,y\n",
    "long separator": "LOGSTART\nLOGDEF s S:: <-> {0}|{1}\nS::<->a<->b\nS::dropped<->a<->b\n",
    "nested prefixes": "LOGSTART\nLOGDEF short A : s{0}\nLOGDEF long AB : l{0}\nA:1\nAB:2\nABC:3\n",
    "unicode": "LOGSTART\nLOGDEF tempé Ť : {0}°C — {1}\nŤ:21,5:café ☃\n",
    "no newline at the end": "LOGSTART\nLOGDEF s P : {0}\nP:1\nP:last",
    "nothing but chatter": "booting\nLOGDEF s P : {0}\nP:1\n",
}


@pytest.mark.parametrize("name", sorted(SAME))
def test_same_log_lines_as_upstream(upstream_autolog: UpstreamAutolog, tmp_path: Path,
                                    name: str) -> None:
    lines = lines_of(SAME[name])
    stamps = stamps_for(lines)
    theirs = upstream_autolog.run(lines, stamps)
    assert theirs["crash"] is None, theirs["crash"]
    mine = ours(lines, stamps, tmp_path)
    assert mine["requests"] == theirs["requests"]
    assert (mine["in"], mine["out"]) == (theirs["in"], theirs["out"])
    assert mine["problems"] == ({"LOGVAR with more than one value word (only the first is kept)": 1}
                                if name == "several words of LOGVAR" else {})


def test_the_table_is_not_trivial(upstream_autolog: UpstreamAutolog) -> None:
    # every transcript but the chatter one makes upstream send lines
    sent = {name: upstream_autolog.run(lines_of(text), stamps_for(lines_of(text)))["requests"]
            for name, text in SAME.items()}
    assert [name for name, requests in sent.items() if not requests] == ["nothing but chatter"]
    assert sum(len(requests) for requests in sent.values()) >= 30


# transcripts on which upstream crashes (its process dies): walt-node skips the line
# (reporting it, count given here) and goes on
CRASHING = {
    "LOGDEF without a separator": ("LOGSTART\nLOGDEF s P\nLOGDEF s P : {0}\nP:1\n", 1),
    "LOGVAR without a value": ("LOGSTART\nLOGDEF s P : {0}{v}\nLOGVAR v\nLOGVAR v 1\nP:2\n", 1),
    "a missing field": ("LOGSTART\nLOGDEF s P : {0}-{1}\nP:1\nP:1:2\n", 1),
    "an unknown variable": ("LOGSTART\nLOGDEF s P : {0}{unit}\nP:1\nLOGVAR unit C\nP:2\n", 1),
    "a spec strings do not take": ("LOGSTART\nLOGDEF n N : {0:.2f}\nLOGDEF s P : {0}\nN:1.5\n"
                                   "P:ok\n", 1),
    "invalid UTF-8 in chatter": ("LOGSTART\nLOGDEF s P : {0}\n\udcff\udcfe noise\nP:ok\n", 0),
}


def _crash_free(upstream_autolog: UpstreamAutolog, lines: Transcript, stamps: List[float]
                ) -> Tuple[Dict, List[int]]:
    """Upstream's output once every line it crashes on is taken out (with its stamp)."""
    removed: List[int] = []
    index = list(range(len(lines)))
    while True:
        theirs = upstream_autolog.run([lines[i] for i in index], [stamps[i] for i in index])
        if theirs["crash"] is None:
            return theirs, removed
        removed.append(index.pop(theirs["crash"]["line"]))


@pytest.mark.parametrize("name", sorted(CRASHING))
def test_where_upstream_crashes_the_line_is_skipped_and_reported(
        upstream_autolog: UpstreamAutolog, tmp_path: Path, name: str) -> None:
    text, reported = CRASHING[name]
    lines = re.findall(rb"[^\n]*\n", text.encode("utf-8", "surrogateescape"))
    stamps = stamps_for(lines)
    assert upstream_autolog.run(lines, stamps)["crash"] is not None
    theirs, removed = _crash_free(upstream_autolog, lines, stamps)
    mine = ours(lines, stamps, tmp_path)
    assert mine["requests"] == theirs["requests"] and theirs["requests"]
    assert len(removed) == 1 and sum(mine["problems"].values()) == reported


def test_documented_difference_longest_prefix_instead_of_nearest(
        upstream_autolog: UpstreamAutolog, tmp_path: Path) -> None:
    # upstream tries only the alphabetically nearest prefix ('TA' for 'TB:1') and drops the line
    lines = lines_of("LOGSTART\nLOGDEF t T : t{0}\nLOGDEF ta TA : ta{0}\nTB:1\nTA:2\n")
    stamps = stamps_for(lines)
    theirs = upstream_autolog.run(lines, stamps)
    mine = ours(lines, stamps, tmp_path)
    assert [r.split(" ", 3)[3] for r in theirs["requests"]] == ["ta2"]
    assert [r.split(" ", 3)[3] for r in mine["requests"]] == ["t1", "ta2"]


def test_documented_difference_a_prefix_defined_again(upstream_autolog: UpstreamAutolog,
                                                      tmp_path: Path) -> None:
    lines = lines_of("LOGSTART\nLOGDEF old P : old{0}\nLOGDEF new P : new{0}\nP:1\n")
    stamps = stamps_for(lines)
    assert upstream_autolog.run(lines, stamps)["crash"]["error"].startswith("TypeError")
    assert [r.split(" ", 3)[3] for r in ours(lines, stamps, tmp_path)["requests"]] == ["new1"]
