#!/usr/bin/env python3
"""Cost of the node services' checks, side by side with the tools they replace or wrap.

- NBD export check (runs at every boot before attaching swap): walt-node's
  own handshake client (`nbd_export_info`, in process) and the whole
  `walt-node swap status` command, next to `nbd-client -l` (which only lists
  names, no size) against the same loopback nbd-server.
- LLDP watch round (runs every --interval seconds): `read_neighbors()` (one
  lldpcli call + parsing) next to a bare `lldpcli -f json0 show neighbors`,
  with a real lldpd seeing a real neighbour in network namespaces (root).
- mDNS: `walt-node mdns resolve` of a node published by `walt-node mdns
  publish` in the same namespace, next to `python3 -c pass`.

Commands run interleaved (one of each per round) so machine load hits them
alike; the script prints medians and ratios.

    sudo .venv/bin/python benchmarks/services.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.netns import namespace, netns_unavailable_reason, veth_link  # noqa: E402
from test_lldp import SWITCH_MAC, lldpcli, start_lldpd  # noqa: E402
from test_swap import start_nbd_server  # noqa: E402

from walt_node.lldp import read_neighbors  # noqa: E402
from walt_node.protocols import nbd_export_info  # noqa: E402


def run_quiet(argv: List[str], env=None, ok=(0,)) -> None:
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")


def measure(cases: Dict[str, Callable[[], object]], runs: int) -> Dict[str, float]:
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            started = time.perf_counter()
            case()
            samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, medians: Dict[str, float], base: str) -> None:
    print(f"\n{title} (median wall time, ratio to '{base}')")
    for name, median in medians.items():
        print(f"  {name:<58} {median * 1000:8.2f} ms   x{median / medians[base]:6.2f}")


def bench_nbd(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "root/proc").mkdir(parents=True)
        (tmp_path / "root/proc/modules").write_text("nbd 1 0 - Live 0x0\n")
        port, pid = start_nbd_server(tmp_path, "swap-16G", allow_list=True)
        env = {**os.environ, "WALT_NODE_ROOT": str(tmp_path / "root")}
        try:
            cases = {
                "nbd-client -l 127.0.0.1 (names only)":
                    lambda: run_quiet(["nbd-client", "-l", "127.0.0.1", str(port)]),
                "nbd_export_info() in process (name + size)":
                    lambda: nbd_export_info("127.0.0.1", "swap-16G", port=port),
                "walt-node swap status (whole command)":
                    lambda: run_quiet([sys.executable, "-m", "walt_node", "swap", "status", "--server",
                                       "127.0.0.1", "--nbd-port", str(port)], env, ok=(0, 1)),
            }
            report("NBD export check", measure(cases, runs), "nbd-client -l 127.0.0.1 (names only)")
        finally:
            os.kill(pid, 15)


def bench_lldp(runs: int) -> None:
    sock_dir = Path(tempfile.mkdtemp(prefix="walt-lldp-bench-"))
    sock_dir.chmod(0o755)
    try:
        with veth_link(macs=(SWITCH_MAC, None)) as (switch, node, sw_if, node_if):
            sw_sock, node_sock = sock_dir / "sw.sock", sock_dir / "node.sock"
            start_lldpd(switch, sw_if, sw_sock)
            start_lldpd(node, node_if, node_sock)
            lldpcli(sw_sock, "configure", "lldp", "tx-interval", "1")
            deadline = time.monotonic() + 15
            while not read_neighbors(str(node_sock)) and time.monotonic() < deadline:
                time.sleep(0.2)
            cases = {
                "lldpcli -f json0 show neighbors":
                    lambda: run_quiet(["lldpcli", "-u", str(node_sock), "-f", "json0", "show", "neighbors"]),
                "read_neighbors() (lldpcli + parse), one watch round":
                    lambda: read_neighbors(str(node_sock)),
            }
            report("LLDP watch round, 1 neighbour", measure(cases, runs), "lldpcli -f json0 show neighbors")
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


def bench_mdns(runs: int) -> None:
    with namespace("bench") as ns, tempfile.TemporaryDirectory() as tmp:
        ns.run(["ip", "link", "add", "bm0", "type", "veth", "peer", "name", "bm1"])
        ns.run(["ip", "addr", "add", "10.79.0.1/24", "dev", "bm0"])
        ns.run(["ip", "link", "set", "bm0", "up"])
        ns.run(["ip", "link", "set", "bm1", "up"])
        env = {**os.environ, "PYTHONPATH": str(REPO), "WALT_NODE_ROOT": tmp,
               "walt_node_hostname": "benchnode", "walt_node_model": "pc-x86-64",
               "walt_image_id": "0123", "walt_node_mac": "52:54:00:00:00:09"}
        ns.popen([sys.executable, "-m", "walt_node", "mdns", "publish"], env=env)
        resolve = ns.argv([sys.executable, "-m", "walt_node", "mdns", "resolve", "benchnode",
                           "--timeout", "5"])
        deadline = time.monotonic() + 15
        while subprocess.run(resolve, env=env, capture_output=True, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the publisher never answered")
        cases = {
            "python3 -c pass": lambda: run_quiet(ns.argv([sys.executable, "-c", "pass"]), env),
            "walt-node mdns resolve benchnode (answered)": lambda: run_quiet(resolve, env),
        }
        report("mDNS resolve", measure(cases, runs), "python3 -c pass")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    args = parser.parse_args()
    print(f"{args.runs} interleaved runs of each case")
    bench_nbd(args.runs)
    reason = netns_unavailable_reason()
    if reason:
        print(f"\nLLDP and mDNS skipped: {reason}")
        return 0
    bench_lldp(args.runs)
    bench_mdns(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
