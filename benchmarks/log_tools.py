"""Cost of the log tools, measured side by side on this machine (not a test).

    .venv/bin/python benchmarks/log_tools.py [--lines N]

- walt-log-monitor: wall time and CPU of a command printing N lines, run
  directly and under the monitor (lines delivered to a simulator);
- walt-log-monitor: total time on a command that prints nothing, next to the
  bare interpreter + CLI start-up (`walt-node --version`) and to a script
  sending the same two lines with the logs API;
- walt-serial-autolog: mote lines per second through a pty pair, CPU per line;
- journal-forward: journal entries per second, journalctl reader vs the
  systemd Python module (when an interpreter here has it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from walt_node.sim import Simulator  # noqa: E402
from walt_node.sim.sample import make_node_root, sample_config  # noqa: E402

BIN = Path(sys.executable).parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(action: Callable[[], None]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of the children it waited for)."""
    cpu, start = children_cpu(), time.perf_counter()
    action()
    return time.perf_counter() - start, children_cpu() - cpu


def wait_lines(sim: Simulator, count: int, timeout: float = 300) -> None:
    sim.wait_for_logs(lambda recs: len(recs) >= count, timeout=timeout)


def bench_monitor(sim: Simulator, lines: int) -> List[str]:
    script = f"seq 1 {lines}"  # direct: the command's own cost, the floor
    direct_wall, direct_cpu = measure(lambda: subprocess.run(
        ["sh", "-c", script], stdout=subprocess.DEVNULL, check=True))
    before = len(sim.log_records())

    def monitored() -> None:
        subprocess.run([str(BIN / "walt-log-monitor"), "sh", "-c", script],
                       stdout=subprocess.DEVNULL, check=True)
        wait_lines(sim, before + lines + 2)
    monitor_wall, monitor_cpu = measure(monitored)
    # baseline: the interpreter and the CLI alone
    startup_cli, _ = measure(lambda: subprocess.run([str(BIN / "walt-node"), "--version"],
                                                    stdout=subprocess.DEVNULL, check=True))
    startup_monitor, _ = measure(lambda: subprocess.run([str(BIN / "walt-log-monitor"), "true"],
                                                        stdout=subprocess.DEVNULL, check=True))
    # baseline: the same two lines (START, END) through the logs API from a bare script
    api_script = "from walt_node import log; log.echo('s', 'START'); log.echo('s', 'END'); log.flush(10)"
    startup_api, _ = measure(lambda: subprocess.run([sys.executable, "-c", api_script], check=True))
    return [
        f"walt-log-monitor, {lines} lines: direct {direct_wall:.3f} s, monitored {monitor_wall:.3f} s "
        f"(until all lines reached the server) = {monitor_wall / direct_wall:.1f}x; "
        f"{lines / monitor_wall:,.0f} lines/s",
        f"  CPU of the monitor and its command: {monitor_cpu:.2f} s "
        f"= {monitor_cpu / lines * 1e6:.1f} s per million lines (command alone: {direct_cpu:.3f} s)",
        f"walt-log-monitor on 'true' (START/END delivered): {startup_monitor * 1000:.0f} ms; "
        f"'walt-node --version': {startup_cli * 1000:.0f} ms ({startup_monitor / startup_cli:.1f}x); "
        f"a script sending the same 2 lines with the logs API: {startup_api * 1000:.0f} ms "
        f"({startup_monitor / startup_api:.1f}x)",
    ]


def bench_serial(sim: Simulator, lines: int) -> List[str]:
    master, slave = os.openpty()
    before = len(sim.log_records())
    tool = subprocess.Popen([str(BIN / "walt-serial-autolog"), os.ttyname(slave)],
                            stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it open and configure the line
    payload = b"LOGSTART\nLOGDEF bench D: , {0} {1} at {site}\nLOGVAR site lab\n" + b"".join(
        b"D:%d,%d\n" % (i, i * 7) for i in range(lines))
    start = time.perf_counter()
    cpu_before = children_cpu()
    view = memoryview(payload)
    while view:
        view = view[os.write(master, view[:4096]):]
    wait_lines(sim, before + lines)
    elapsed = time.perf_counter() - start
    os.close(master)
    tool.wait(timeout=60)
    os.close(slave)
    cpu = children_cpu() - cpu_before
    return [f"walt-serial-autolog, {lines} mote lines through a pty: {lines / elapsed:,.0f} lines/s, "
            f"{cpu / lines * 1e6:.1f} CPU-s per million lines"]


def write_journal(path: Path, entries: int) -> None:
    base = int(time.time() * 1e6) - 3600_000_000
    export = bytearray()
    for i in range(entries):
        export += (f"__REALTIME_TIMESTAMP={base + i}\n__MONOTONIC_TIMESTAMP={i + 1}\n"
                   f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT=bench.service\n"
                   f"MESSAGE=entry {i} of the benchmark\n\n").encode()
    remote = "/lib/systemd/systemd-journal-remote"
    subprocess.run([remote, f"--output={path}", "-"], input=bytes(export), check=True,
                   capture_output=True)


def bench_journal(sim: Simulator, root: Path, entries: int) -> List[str]:
    if not os.path.exists("/lib/systemd/systemd-journal-remote") or not shutil.which("journalctl"):
        return ["journal-forward: skipped (needs journalctl and systemd-journal-remote)"]
    journal = root / "bench.journal"
    write_journal(journal, entries)
    (root / "etc/walt/journal-forward.conf").write_text("bench bench-journal\n")
    results = []
    for source in ("journalctl", "python"):
        python = sys.executable if source == "journalctl" else "/usr/bin/python3"
        probe = subprocess.run([python, "-c", "import systemd.journal"], capture_output=True)
        if source == "python" and probe.returncode != 0:
            results.append("journal-forward (python module): skipped, no interpreter has it")
            continue
        cursor = root / f"cursor-{source}"
        before = len(sim.log_records())
        argv = [python, "-m", "walt_node", "journal-forward", "--source", source, "--start", "all",
                f"--file={journal}", "--no-follow", f"--cursor-file={cursor}"]

        def forward(argv: List[str] = argv, expected: int = before + entries) -> None:
            subprocess.run(argv, check=True, capture_output=True,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
            wait_lines(sim, expected)
        wall, cpu = measure(forward)
        results.append(f"journal-forward ({source}), {entries} entries: {entries / wall:,.0f} entries/s, "
                       f"{cpu / entries * 1e6:.1f} CPU-s per million entries")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as base:
        base_path = Path(base)
        with Simulator(sample_config(base_path / "sim"), host="127.0.0.1") as sim:
            root = make_node_root(base_path / "root", server_ip=sim.host, logs_port=sim.logs_port,
                                  rpc_port=sim.rpc_port, http_port=sim.http_port)
            os.environ["WALT_NODE_ROOT"] = str(root)
            report = bench_monitor(sim, args.lines)
            report += bench_serial(sim, args.lines)
            report += bench_journal(sim, root, args.lines)
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
