#!/usr/bin/env python3
"""Startup cost of /bin/blink and of a kexec dry run, against ``python3 -c pass``.

The WalT server runs /bin/blink on every ``walt node blink`` and walt-reboot
on every reboot, so their start matters.  Commands are run interleaved (one of
each per round) so machine load affects them alike; the script prints the
median wall time of each and its ratio to the bare interpreter.

    .venv/bin/python benchmarks/startup.py [--runs 15]

The kexec dry run talks to a loopback simulator serving the test fixture
images (tests/data/ipxe) and downloads their small kernel and initrd.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def fake_led_tree(root: Path) -> Path:
    led = root / "sys" / "class" / "leds" / "ACT"
    led.mkdir(parents=True)
    show_as_kernel(led)
    (led / "brightness").write_text("0\n")
    return led


def show_as_kernel(led: Path) -> None:
    """Rewrite ``trigger`` as sysfs shows it: every trigger, the current one bracketed."""
    current = (led / "trigger").read_text().strip() if (led / "trigger").exists() else "mmc0"
    current = current.split("[", 1)[-1].split("]", 1)[0] if "[" in current else current
    words = [f"[{t}]" if t == current else t for t in ("none", "mmc0", "timer", "heartbeat")]
    (led / "trigger").write_text(" ".join(words) + "\n")


def timed(argv: List[str], env: Dict[str, str], ok_codes=(0,)) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok_codes:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    args = parser.parse_args()

    from test_kexec_lib import Recorder, fixture_simulator, prepare_node_root

    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp, fixture_simulator() as sim:
        tmp_path = Path(tmp)
        blink_root = tmp_path / "blink-root"
        led = fake_led_tree(blink_root)
        node_root = prepare_node_root(tmp_path / "node-root", sim)
        recorder = Recorder(tmp_path)  # nothing may run for real, even by mistake
        env = {**os.environ, **recorder.env}
        blink_env = {**env, "WALT_NODE_ROOT": str(blink_root)}
        node_env = {**env, "WALT_NODE_ROOT": str(node_root)}
        commands = {
            "python3 -c pass": ([python, "-c", "pass"], env),
            "bin/blink 1": ([python, str(REPO / "bin" / "blink"), "1"], blink_env),
            "bin/blink 0": ([python, str(REPO / "bin" / "blink"), "0"], blink_env),
            "walt-node ipxe-kexec-reboot --dry-run": (
                [python, "-m", "walt_node", "ipxe-kexec-reboot", "--dry-run"], node_env),
        }
        times: Dict[str, List[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (argv, command_env) in commands.items():
                times[name].append(timed(argv, command_env))
                show_as_kernel(led)  # a file does not update itself like sysfs
        if recorder.argvs():
            raise SystemExit(f"unexpected program runs: {recorder.argvs()}")

    base = statistics.median(times["python3 -c pass"])
    print(f"{args.runs} interleaved runs each; median wall time, ratio to 'python3 -c pass'")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:<40} {median * 1000:7.1f} ms   x{median / base:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
