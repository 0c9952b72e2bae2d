#!/usr/bin/env python3
"""Boot file downloads of the kexec reboot: time against size.

The loopback simulator serves a 16, 64 and 128 MiB initrd; walt-node fetches
each over the fake TFTP request (logs port) and over HTTP (`/boot/...`), as
`walt-ipxe-kexec-reboot` does. A linear client takes 4x and 8x the 16 MiB time
for 64 and 128 MiB; the buffer-concatenating client walt-node had before took
14x and 69x (1 s, 14 s, 69 s), which made large initrds miss the 30 s reboot
deadline. Sizes run interleaved, medians printed with their ratios.

    .venv/bin/python benchmarks/downloads.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from walt_node.protocols import WebApi, fake_tftp_get  # noqa: E402

MAC = "52:54:00:12:34:56"
IMAGE = "bench/initrds:latest"
SIZES_MIB = (16, 64, 128)


@contextmanager
def simulator(base: Path) -> Iterator[dict]:
    """`walt-node sim` in its own process (the server is another machine on a testbed)
    serving the initrds; yields its state (ports)."""
    boot = base / "boot" / "pc-x86-64"
    boot.mkdir(parents=True)
    for size in SIZES_MIB:
        (boot / f"initrd-{size}").write_bytes(b"\x1f\x8b" + b"\0" * ((size << 20) - 2))
    state = base / "state.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "walt_node", "sim", "--state-file", str(state),
         "--image", f"fullname={IMAGE},id={'b' * 64},boot_dir={base / 'boot'}",
         "--node", f"mac={MAC},name=bench,ip=127.0.0.1,model=pc-x86-64,image={IMAGE}"],
        stdout=subprocess.DEVNULL)
    try:
        while not state.exists():
            if proc.poll() is not None:
                raise SystemExit("walt-node sim did not start")
            time.sleep(0.05)
        yield json.loads(state.read_text())
    finally:
        proc.terminate()
        proc.wait(10)


def measure(cases: Dict[str, Callable[[], bytes]], runs: int) -> Dict[str, float]:
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            started = time.perf_counter()
            data = case()
            samples[name].append(time.perf_counter() - started)
            del data
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="walt-bench-downloads-") as tmp, \
            simulator(Path(tmp)) as sim:
        web = WebApi("127.0.0.1", sim["http_port"], timeout=120)
        for protocol in ("fake TFTP", "HTTP"):
            cases: Dict[str, Callable[[], bytes]] = {}
            for size in SIZES_MIB:
                path = f"/initrd-{size}"
                if protocol == "fake TFTP":
                    cases[f"{size} MiB"] = lambda path=path: fake_tftp_get(
                        "127.0.0.1", sim["logs_port"], MAC, path, timeout=120)
                else:
                    cases[f"{size} MiB"] = lambda path=path: web.boot_file(path, "127.0.0.1")
            medians = measure(cases, args.runs)
            base = medians[f"{SIZES_MIB[0]} MiB"]
            print(f"\n{protocol} download, median of {args.runs} runs")
            print(f"{'size':>8} {'seconds':>9} {'MiB/s':>8} {'time / 16 MiB time':>20} {'size ratio':>11}")
            for size in SIZES_MIB:
                seconds = medians[f"{size} MiB"]
                print(f"{size:>4} MiB {seconds:>9.3f} {size / seconds:>8.0f} {seconds / base:>20.1f} "
                      f"{size / SIZES_MIB[0]:>11.1f}")


if __name__ == "__main__":
    main()
