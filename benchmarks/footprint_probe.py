#!/usr/bin/python3
"""Guest side of benchmarks/footprint.py: measures systemd units from inside the node.

Copied into the virtual node's image as /usr/local/sbin/footprint-probe and run
through the harness's root shell; standard library only; prints one JSON object.

  footprint-probe idle --window S UNIT...        CPU and context switches over S seconds
  footprint-probe load --fifo F --rate R --duration S --stream NAME UNIT...
                                                 PSS before/after R lines/s into F for S seconds

Each unit is measured through its control group (every process the unit
started, children included): PSS from /proc/PID/smaps_rollup, CPU from the
cgroup's cpu.stat (counts exited processes too), wakeups as the sum of the
voluntary + nonvoluntary context switches of every thread (/proc/PID/task/*/status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

CGROUP_ROOT = Path("/sys/fs/cgroup")


def unit_cgroup(unit: str) -> Path:
    group = subprocess.run(["systemctl", "show", "-p", "ControlGroup", "--value", unit],
                           capture_output=True, text=True, check=True).stdout.strip()
    return CGROUP_ROOT / group.lstrip("/") if group else Path("/nonexistent")


def _field_kib(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def _context_switches(pid: int) -> int:
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def process(pid: int) -> Dict:
    proc = Path(f"/proc/{pid}")
    rollup = (proc / "smaps_rollup").read_text()
    args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return {"pid": pid, "comm": (proc / "comm").read_text().strip(), "args": args[:120],
            "pss_kib": _field_kib(rollup, "Pss"), "rss_kib": _field_kib(rollup, "Rss"),
            "threads": len(list((proc / "task").iterdir())), "ctxt": _context_switches(pid)}


def snapshot(units: List[str]) -> Dict:
    taken = {"time": time.monotonic(), "units": {}}
    for unit in units:
        group = unit_cgroup(unit)
        procs = []
        pids = []
        for procs_file in sorted(group.rglob("cgroup.procs")) if group.exists() else ():
            pids += [int(p) for p in procs_file.read_text().split()]
        for pid in pids:
            try:
                procs.append(process(pid))
            except (OSError, ValueError):
                continue  # ended meanwhile
        cpu_usec = 0
        if (group / "cpu.stat").exists():
            for line in (group / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    cpu_usec = int(line.split()[1])
        taken["units"][unit] = {"cpu_usec": cpu_usec, "procs": procs}
    return taken


def idle(args: argparse.Namespace) -> Dict:
    before = snapshot(args.units)
    time.sleep(args.window)
    return {"before": before, "after": snapshot(args.units)}


def load(args: argparse.Namespace) -> Dict:
    samples = [snapshot(args.units)]
    started = time.monotonic()
    next_sample = started + args.sample_every
    sent = 0
    with open(args.fifo, "wb", buffering=0) as fifo:
        while True:
            now = time.monotonic()
            if now - started >= args.duration:
                break
            due = int((now - started) * args.rate) + 1
            while sent < due:
                fifo.write(b"LOG %s footprint load line %d\n" % (args.stream.encode(), sent))
                sent += 1
            if now >= next_sample:
                samples.append(snapshot(args.units))
                next_sample += args.sample_every
            time.sleep(max(0.0, started + sent / args.rate - time.monotonic()))
    samples.append(snapshot(args.units))
    return {"sent": sent, "seconds": time.monotonic() - started, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_idle = sub.add_parser("idle")
    p_idle.add_argument("--window", type=float, default=60)
    p_idle.add_argument("units", nargs="+")
    p_load = sub.add_parser("load")
    p_load.add_argument("--fifo", required=True)
    p_load.add_argument("--rate", type=float, default=100)
    p_load.add_argument("--duration", type=float, default=120)
    p_load.add_argument("--sample-every", type=float, default=15)
    p_load.add_argument("--stream", default="footprint")
    p_load.add_argument("units", nargs="+")
    args = parser.parse_args()
    result = idle(args) if args.command == "idle" else load(args)
    print("@@FOOTPRINT-JSON@@" + json.dumps(result, separators=(",", ":")) + "@@END@@")
    return 0


if __name__ == "__main__":
    sys.exit(main())
