#!/usr/bin/env python3
"""Logs benchmark: walt-node's logs daemon vs upstream walt-node 10.0 vs a ceiling.

Run from the repository:  .venv/bin/python benchmarks/logs.py [--lines 200000]

Side by side, on this machine, in one run:

- end-to-end throughput FIFO -> server (lines/s): ``cat`` of N ``LOG`` lines
  of 60 bytes into the FIFO, until the server has received all of them;
- CPU seconds per million lines of the daemon and its children;
- latency FIFO write -> server receipt, p50 / p99, at 100 lines/s;
- the ceiling: ``cat`` of the same lines, already in protocol form, into a socket;
- the Python API: calls per second and how long ``log.echo`` blocks its caller;
- the same daemon with ``--unpaced-writes`` (1 MiB writes, as before the WalT 10
  precautions of docs/protocols.md §11), side by side: the cost of those precautions;
- against the real WalT 10 logs listener (the upstream classes run by
  tests/conformance/upstream_driver.py in the venv of scripts/upstream-venv.sh),
  ``--conformance-lines`` (default 1,000,000) lines of mixed ASCII and 2-, 3- and
  4-byte UTF-8, the listener's reads slowed (random 0-2 ms before each read) and
  the data arriving in Ethernet-sized segments, so that reads fall anywhere:
  lines lost, duplicates, streams the server closed, throughput.
  ``--breaking-check`` adds the same run with ``--unpaced-writes``: it must
  report lost lines (bounded by ``--breaking-timeout`` seconds, as it never
  gets through).
- this tree's daemon against the same daemon at ``--baseline REV``, alternately
  (by default the tree before the hostile-input bounds and the WalT 10
  precautions): what they cost on the hot path.

The server side is a counting server in this process: it receives in 1 MiB
chunks and counts newlines (it is far faster than any daemon measured).

Upstream (``walt-node==10.0`` from PyPI) is installed into a throwaway venv
under ``~/.cache/walt-node-bench`` (``--cache-dir``).  It hard-codes its FIFO
as /var/lib/walt/logs.fifo, so it runs in a private mount namespace (tmpfs on
/var/lib; needs root and ``unshare``); it forwards through ``walt-log-cat``,
a server-provided tool: the benchmark writes its own minimal one (§2 of the
protocol reference).  If upstream cannot be installed or run, the reason is
printed and the rest goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parent.parent
HEADER_LINES = 3  # REQ_NEW_INCOMING_LOGS, stream, TIMESTAMPS_INSIDE


# --------------------------------------------------------------- the server

class CountingServer:
    """Counts the log lines it receives (newlines in 1 MiB chunks), and for
    latency runs notes the receipt time of each ``lat <seq>`` line."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lines = 0
        self.connections = 0
        self.watch_latency = False
        self.receipts: Dict[int, int] = {}
        self._partial: Dict[socket.socket, bytes] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(0.2):
                if key.fileobj is self.listener:
                    conn, _ = self.listener.accept()
                    conn.setblocking(False)
                    self.connections += 1
                    self.lines -= HEADER_LINES
                    self._selector.register(conn, selectors.EVENT_READ)
                else:
                    self._receive(key.fileobj)  # type: ignore[arg-type]

    def _receive(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(conn)
            conn.close()
            return
        self.lines += data.count(b"\n")
        if self.watch_latency:
            now = time.monotonic_ns()
            text = self._partial.pop(conn, b"") + data
            *complete, rest = text.split(b"\n")
            self._partial[conn] = rest
            for line in complete:
                marker = line.find(b"lat ")
                if marker >= 0:
                    self.receipts[int(line[marker + 4:].split()[0])] = now

    def wait_lines(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.lines < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        return True

    def reset(self) -> None:
        self.lines = 0
        self.receipts = {}
        self._partial = {}

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.listener.close()


# --------------------------------------------------------------- processes

def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid``, its live descendants and its reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = fields
    family = {pid}
    grew = True
    while grew:
        grew = False
        for other, fields in stats.items():
            if other not in family and int(fields[1]) in family:
                family.add(other)
                grew = True
    total = 0
    for member in family:
        fields = stats.get(member)
        if fields:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / ticks


def wait_for_reader(fifo: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            time.sleep(0.05)
            continue
        os.close(fd)
        return
    raise RuntimeError(f"no reader on {fifo} after {timeout} s")


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    fifo: Path
    pid: int

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_ours(work: Path, port: int, *extra: str, name: str = "walt-node (this)",
               repo: Path = REPO) -> Daemon:
    root = work / ("ours" + "".join(extra).replace("-", "_") + ("" if repo == REPO else "_base"))
    env = dict(os.environ, WALT_NODE_ROOT=str(root), PYTHONPATH=str(repo))
    proc = subprocess.Popen([sys.executable, "-m", "walt_node", "logs-daemon",
                             "--server", f"127.0.0.1:{port}", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(work / "ours.log", "ab"))
    fifo = root / "var/lib/walt/logs.fifo"
    wait_for_reader(fifo)
    return Daemon(name, proc, fifo, proc.pid)


WALT_LOG_CAT = """\
#!{python}
# Minimal walt-log-cat for the benchmark (docs/protocols.md section 2):
# walt-log-cat [--ts] STREAM; stdin lines are '<ts> <text>' when --ts is given.
import os, socket, sys
host, port = os.environ["WALT_BENCH_LOGS"].rsplit(":", 1)
stream = sys.argv[-1]
mode = b"TIMESTAMPS_INSIDE" if "--ts" in sys.argv[1:-1] else b"NO_TIMESTAMPS"
sock = socket.create_connection((host, int(port)))
sock.sendall(b"REQ_NEW_INCOMING_LOGS\\n" + stream.encode() + b"\\n" + mode + b"\\n")
while True:
    data = os.read(0, 1 << 16)
    if not data:
        break
    sock.sendall(data)
sock.sendall(b"CLOSE\\n")
"""


def install_upstream(cache: Path) -> Path:
    venv = cache / "upstream-venv"
    daemon = venv / "bin/walt-logs-daemon"
    if not daemon.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        done = subprocess.run([str(venv / "bin/pip"), "install", "-q", "walt-node==10.0"],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not daemon.exists():
            raise RuntimeError("pip install walt-node==10.0 failed: " + done.stderr.strip()[-500:])
    return daemon


def start_upstream(work: Path, port: int, cache: Path) -> Daemon:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise RuntimeError("needs root and unshare (upstream's FIFO path is fixed: it runs in "
                           "a private mount namespace)")
    daemon = install_upstream(cache)
    tools = work / "tools"
    tools.mkdir(exist_ok=True)
    cat = tools / "walt-log-cat"
    cat.write_text(WALT_LOG_CAT.format(python=sys.executable))
    cat.chmod(0o755)
    env = dict(os.environ, PATH=f"{tools}:{os.environ.get('PATH', '')}",
               WALT_BENCH_LOGS=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    script = f"mount -t tmpfs tmpfs /var/lib && mkdir -p /var/lib/walt && exec {daemon}"
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(work / "upstream.log", "wb"))
    fifo = Path(f"/proc/{proc.pid}/root/var/lib/walt/logs.fifo")  # its view of the FIFO
    try:
        wait_for_reader(fifo)
    except RuntimeError:
        proc.kill()
        proc.wait(5)
        raise RuntimeError("upstream daemon did not open its FIFO: "
                           + (work / "upstream.log").read_text(errors="replace")[-500:]) from None
    return Daemon("upstream walt-node 10.0", proc, fifo, proc.pid)


# --------------------------------------------------------------- measures

@dataclass
class Result:
    name: str
    lines_per_s: Optional[float] = None
    cpu_per_million: Optional[float] = None
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    notes: List[str] = field(default_factory=list)


def throughput(daemon: Daemon, server: CountingServer, data_file: Path, count: int,
               timeout: float) -> Result:
    result = Result(daemon.name)
    server.reset()
    cpu_before = cpu_seconds(daemon.pid)
    started = time.monotonic()
    with open(daemon.fifo, "wb") as fifo:
        writer = subprocess.Popen(["cat", str(data_file)], stdout=fifo)
    ok = server.wait_lines(count, timeout)
    elapsed = time.monotonic() - started
    writer.wait(timeout)
    cpu = cpu_seconds(daemon.pid) - cpu_before
    if not ok:
        result.notes.append(f"only {server.lines} of {count} lines arrived within {timeout:g} s")
        count = max(server.lines, 1)
    result.lines_per_s = count / elapsed
    result.cpu_per_million = cpu / count * 1e6
    return result


def latency(daemon: Daemon, server: CountingServer, result: Result, count: int, rate: float) -> None:
    server.reset()
    server.watch_latency = True
    sent: Dict[int, int] = {}
    try:
        started = time.monotonic()
        with open(daemon.fifo, "wb", buffering=0) as fifo:
            for seq in range(count):
                delay = started + seq / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent[seq] = time.monotonic_ns()
                fifo.write(b"LOG latency lat %d\n" % seq)
        deadline = time.monotonic() + 10
        while len(server.receipts) < count and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.watch_latency = False
    delays = sorted((server.receipts[s] - sent[s]) / 1e6 for s in sent if s in server.receipts)
    if len(delays) < count:
        result.notes.append(f"latency: {count - len(delays)} of {count} lines never arrived")
    if delays:
        result.p50_ms = delays[len(delays) // 2]
        result.p99_ms = delays[min(len(delays) - 1, int(len(delays) * 0.99))]


def ceiling(server: CountingServer, proto_file: Path, count: int) -> Result:
    result = Result("ceiling: cat into a socket")
    server.reset()
    sock = socket.create_connection(("127.0.0.1", server.port))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    writer = subprocess.Popen(["cat", str(proto_file)], stdout=sock.fileno())
    ok = server.wait_lines(count, 60)
    elapsed = time.monotonic() - started
    writer.wait(10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sock.close()
    if not ok:
        result.notes.append("ceiling run incomplete")
    result.lines_per_s = count / elapsed
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.cpu_per_million = cpu / count * 1e6  # cat's own CPU
    return result


API_SCRIPT = """
import json, time
from walt_node import log
log.echo("api", "warm up")
assert log.flush(20)
calls = {calls}
clock = time.perf_counter_ns
durations = [0] * calls
started = clock()
for i in range(calls):
    before = clock()
    log.echo("api", "a line of an experiment log")
    durations[i] = clock() - before
elapsed = clock() - started
overhead = min(-clock() + clock() for _ in range(1000))
delivered = log.flush(120)
durations.sort()
print(json.dumps({{"calls_per_s": calls / elapsed * 1e9, "median_us": durations[calls // 2] / 1e3,
                   "p99_us": durations[int(calls * 0.99)] / 1e3, "timer_ns": overhead,
                   "delivered": delivered}}))
"""


def api_benchmark(work: Path, server: CountingServer, calls: int, via_fifo: bool) -> Dict[str, float]:
    root = work / ("ours" if via_fifo else "api-direct")
    env = dict(os.environ, WALT_NODE_ROOT=str(root), PYTHONPATH=str(REPO),
               walt_server_ip="127.0.0.1", walt_server_logs_port=str(server.port))
    server.reset()
    done = subprocess.run([sys.executable, "-c", API_SCRIPT.format(calls=calls)], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-500:])
    stats = json.loads(done.stdout)
    stats["received"] = server.wait_lines(calls + 1, 30)
    return stats


# --------------------------------------------------------------- report

def alternately(server: CountingServer, data_file: Path, count: int,
                starters: Dict[str, Callable[[], Daemon]]) -> Dict[str, Tuple[float, float]]:
    """Each daemon variant in turn, three times each (so that a change of the machine's
    load touches all of them alike): median lines/s and CPU s per million lines."""
    runs: Dict[str, List[Result]] = {kind: [] for kind in starters}
    for _ in range(3):
        for kind, start in starters.items():
            daemon = start()
            try:
                runs[kind].append(throughput(daemon, server, data_file, count, 120))
            finally:
                daemon.stop()
    return {kind: (sorted(r.lines_per_s or 0 for r in results)[1],
                   sorted(r.cpu_per_million or 0 for r in results)[1])
            for kind, results in runs.items()}


def print_alternated(title: str, medians: Dict[str, Tuple[float, float]], target: str) -> None:
    print(f"\n{title}, alternately, median of 3:")
    for kind, (rate, cpu) in medians.items():
        print(f"  {kind:10} {rate:>12,.0f} lines/s {cpu:>8.2f} CPU s / 1M lines")
    (first_rate, first_cpu), (second_rate, second_cpu) = medians.values()
    print(f"  throughput ratio: {ratio(first_rate, second_rate)}, CPU per line ratio: "
          f"{ratio(first_cpu, second_cpu)} ({target})")


def paced_vs_unpaced(work: Path, server: CountingServer, data_file: Path, count: int) -> None:
    """The cost of the WalT 10 precautions, to a server that reads fast."""
    medians = alternately(server, data_file, count, {
        "paced": lambda: start_ours(work, server.port),
        "unpaced": lambda: start_ours(work, server.port, "--unpaced-writes")})
    print_alternated("paced (default) vs --unpaced-writes (before)", medians,
                     "target: throughput >= 0.9x")


def against_baseline(work: Path, server: CountingServer, data_file: Path, count: int,
                     revision: str) -> None:
    """This tree's daemon against the same daemon at ``revision`` (for example the tree
    before the bounds of issue 11 and the WalT 10 precautions), to a fast server."""
    base = work / "baseline-tree"
    base.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "walt_node"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    medians = alternately(server, data_file, count, {
        "this tree": lambda: start_ours(work, server.port),
        revision: lambda: start_ours(work, server.port, repo=base)})
    print_alternated(f"this tree vs {revision}", medians,
                     "target: throughput >= 0.9x, the bounds cost nothing on the hot path")


# ------------------------------------------------ against the real WalT 10 listener

def mixed_texts(count: int) -> List[str]:
    """Numbered lines of ASCII and 2-, 3- and 4-byte UTF-8 characters (the same every run)."""
    import random

    rng = random.Random(1)
    alphabet = ["a", "b", " ", "é", "ж", "中", "€", "😀", "𝄞"]
    return [f"{number:07d} " + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
            for number in range(count)]


STALLED = 60.0  # seconds without a new line: what has not arrived by then is lost


def real_listener_run(work: Path, count: int, unpaced: bool, timeout: float) -> Dict[str, float]:
    """``count`` mixed lines through the daemon to the real listener, reads slowed."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.upstream import UpstreamServer, build_upstream

    run_dir = work / ("real-unpaced" if unpaced else "real-paced")
    run_dir.mkdir()
    texts = mixed_texts(count)
    data_file = run_dir / "lines.fifo-input"
    now = time.time()
    with open(data_file, "w", encoding="utf-8") as out:
        out.writelines(f"TSLOG {now:.6f} mixed {text}\n" for text in texts)
    # the whole burst is written at once, far faster than the slowed server reads:
    # the spool must hold it, or its bound (not the server) drops the oldest lines
    spool_mib = data_file.stat().st_size * 2 // 2**20 + 1
    with UpstreamServer(build_upstream(), run_dir, slow=0.002, mss=1448) as server:
        extra = ("--unpaced-writes",) if unpaced else ()
        daemon = start_ours(run_dir, server.logs_port, "--spool-size", f"{spool_mib}M", *extra)
        seen: set = set()
        received = 0
        started = time.monotonic()
        last_new = started
        try:
            with open(daemon.fifo, "wb") as fifo:
                writer = subprocess.Popen(["cat", str(data_file)], stdout=fifo)
            while len(seen) < count and time.monotonic() - started < timeout \
                    and time.monotonic() - last_new < STALLED:
                time.sleep(0.5)
                lines = server.lines()
                new = lines[received:]
                received = len(lines)
                if new:
                    before = len(seen)
                    seen.update(new)
                    if len(seen) > before:
                        last_new = time.monotonic()
            writer.wait(timeout)
        finally:
            daemon.stop()
        closed = [c for c in server.records("closed") if c["error"]]
    return {"lines_per_s": len(seen) / max(last_new - started, 1e-9), "lost": count - len(seen),
            "duplicates": received - len(seen), "closed": len(closed),
            "strangers": len(seen - set(texts))}


def print_real_table(rows: List[tuple], count: int) -> None:
    print(f"\nAgainst the real WalT 10 logs listener: {count:,} mixed UTF-8 lines written in one "
          "burst, reads slowed (0-2 ms) and segmented (1448 bytes); the daemon's spool holds "
          "the whole burst\n")
    print(f"{'':28} {'lines/s':>10} {'lost':>9} {'duplicates':>11} {'closed by server':>17}")
    for name, r in rows:
        print(f"{name:28} {r['lines_per_s']:>10,.0f} {r['lost']:>9,} {r['duplicates']:>11,} "
              f"{r['closed']:>17,}" + ("   (lines nobody wrote: drop notices?)" if r["strangers"] else ""))


def fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(a: Optional[float], b: Optional[float]) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.1f}x" if a >= b else f"{a / b:.3f}x"


def print_table(results: List[Result], count: int, line_bytes: int) -> None:
    print(f"\nFIFO -> server, {count} lines of {line_bytes} bytes; latency at 100 lines/s\n")
    print(f"{'':28} {'lines/s':>12} {'CPU s / 1M lines':>17} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r.name:28} {fmt(r.lines_per_s, ',.0f'):>12} {fmt(r.cpu_per_million, '.2f'):>17} "
              f"{fmt(r.p50_ms, '.3f'):>8} {fmt(r.p99_ms, '.3f'):>8}")
        for note in r.notes:
            print(f"    note: {note}")
    ours = results[0]
    others = {r.name: r for r in results[3:]}
    upstream = others.get("upstream walt-node 10.0")
    roof = others.get("ceiling: cat into a socket")
    print()
    if upstream and upstream.lines_per_s:
        print(f"throughput vs upstream: {ratio(ours.lines_per_s, upstream.lines_per_s)} "
              f"(target >= 25x)")
        print(f"CPU per line vs upstream: {ratio(ours.cpu_per_million, upstream.cpu_per_million)} "
              f"(target <= 0.1x)")
    if roof:
        print(f"throughput vs ceiling: {ratio(ours.lines_per_s, roof.lines_per_s)} of cat into a socket")
    print(f"latency p99: {fmt(ours.p99_ms, '.3f')} ms (target < 5 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--latency-lines", type=int, default=500)
    parser.add_argument("--api-calls", type=int, default=200_000)
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--conformance-lines", type=int, default=1_000_000,
                        help="lines sent to the real WalT 10 listener (0: skip that part)")
    parser.add_argument("--breaking-check", action="store_true",
                        help="also send them with --unpaced-writes: must report lost lines")
    parser.add_argument("--breaking-timeout", type=float, default=120.0)
    parser.add_argument("--baseline", default="2691bd3", metavar="REV",
                        help="also run the daemon of this git revision alternately with this "
                             "tree's, to a fast server (default: %(default)s, the tree before "
                             "issues 9 and 11; '' to skip)")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "walt-node-bench")
    args = parser.parse_args()
    line_bytes = 60
    work = Path(tempfile.mkdtemp(prefix="walt-logs-bench-"))
    server = CountingServer()
    try:
        data_file = work / "lines.fifo-input"
        mixed_file = work / "mixed.fifo-input"
        proto_file = work / "lines.protocol"
        pad = "x" * (line_bytes - len("LOG bench 0000000 \n"))
        with open(data_file, "w") as fifo_lines, open(proto_file, "w") as proto, \
                open(mixed_file, "w") as mixed:
            proto.write("REQ_NEW_INCOMING_LOGS\nbench\nTIMESTAMPS_INSIDE\n")
            for i in range(args.lines):
                fifo_lines.write(f"LOG bench {i:07d} {pad}\n")
                mixed.write(f"LOG bnch{i % 4} {i:07d} {pad}\n")  # same size, 4 streams
                proto.write(f"1700000000.000000 {i:07d} {pad}\n")
        results = []
        ours = start_ours(work, server.port)
        try:
            results.append(throughput(ours, server, data_file, args.lines, 120))
            latency(ours, server, results[-1], args.latency_lines, 100.0)
            mixed_result = throughput(ours, server, mixed_file, args.lines, 120)
            mixed_result.name = "  same, 4 streams mixed"
        finally:
            ours.stop()
        unpaced = start_ours(work, server.port, "--unpaced-writes",
                             name="  same, --unpaced-writes")
        try:
            unpaced_result = throughput(unpaced, server, data_file, args.lines, 120)
        finally:
            unpaced.stop()
        if args.skip_upstream:
            print("upstream: skipped (--skip-upstream)")
        else:
            try:
                upstream = start_upstream(work, server.port, args.cache_dir)
            except Exception as error:  # report and go on with the rest
                print(f"upstream walt-node 10.0 could not be run: {error}")
            else:
                try:
                    results.append(throughput(upstream, server, data_file, args.lines, 300))
                    latency(upstream, server, results[-1], args.latency_lines, 100.0)
                finally:
                    upstream.stop()
        results.append(ceiling(server, proto_file, args.lines))
        results.insert(1, mixed_result)
        results.insert(2, unpaced_result)
        print_table(results, args.lines, line_bytes)
        paced_vs_unpaced(work, server, data_file, args.lines)
        if args.baseline:
            against_baseline(work, server, data_file, args.lines, args.baseline)
        if args.conformance_lines:
            rows = [("walt-node (this)",
                     real_listener_run(work, args.conformance_lines, False, 3600))]
            if args.breaking_check:
                rows.append(("  same, --unpaced-writes",
                             real_listener_run(work, args.conformance_lines, True,
                                               args.breaking_timeout)))
            print_real_table(rows, args.conformance_lines)

        print(f"\nPython API (log.echo), {args.api_calls} calls; blocking time per call "
              "(includes ~timer_ns of clock overhead)")
        print(f"{'':28} {'calls/s':>12} {'median us':>10} {'p99 us':>8} {'timer ns':>9}")
        for via_fifo in (False, True):
            label = "echo, daemon on the FIFO" if via_fifo else "echo, direct to the server"
            try:
                daemon = start_ours(work, server.port) if via_fifo else None
                try:
                    stats = api_benchmark(work, server, args.api_calls, via_fifo)
                finally:
                    if daemon:
                        daemon.stop()
            except Exception as error:
                print(f"{label:28} failed: {error}")
                continue
            print(f"{label:28} {stats['calls_per_s']:>12,.0f} {stats['median_us']:>10.2f} "
                  f"{stats['p99_us']:>8.2f} {stats['timer_ns']:>9}"
                  + ("" if stats["received"] else "   (not all lines arrived!)"))
        print("\ntarget: median blocking < 10 us")
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
