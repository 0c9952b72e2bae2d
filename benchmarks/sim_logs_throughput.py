"""How fast the simulator's logs port ingests a log stream, side by side with a
bare TCP receiver that only reads and discards the same bytes.

    .venv/bin/python benchmarks/sim_logs_throughput.py [--lines N]

Prints lines/s for each and the ratio; also how long walt-node's own client
code takes just to format the same lines, for scale: the simulator must not be
what limits a ~100k lines/s log producer.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

from walt_node.protocols import format_log_line, log_stream_header
from walt_node.sim import Simulator
from walt_node.sim.sample import sample_config


def payload(lines: int) -> bytes:
    now = time.time()
    text = "sensor reading value=%d temperature=21.5 humidity=40%%"
    body = b"".join(format_log_line(now, text % i) for i in range(lines))
    return log_stream_header("bench") + body + b"CLOSE\n"


def send(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def bare_receiver_seconds(data: bytes) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def drain() -> None:
        conn, _ = listener.accept()
        with conn:
            while conn.recv(256 * 1024):
                pass
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    start = time.perf_counter()
    send(listener.getsockname()[1], data)
    done.wait(120)
    listener.close()
    return time.perf_counter() - start


def simulator_seconds(data: bytes, lines: int, records_file: bool) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        records = Path(scratch) / "records.jsonl" if records_file else None
        with Simulator(sample_config(Path(scratch)), records_path=records) as sim:
            start = time.perf_counter()
            send(sim.logs_port, data)
            sim.wait_for_logs(lambda recs: len(recs) >= lines, timeout=300)
            return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    lines = parser.parse_args().lines
    start = time.perf_counter()
    data = payload(lines)
    producing = time.perf_counter() - start  # what a Python sender spends formatting lines
    bare = bare_receiver_seconds(data)
    in_memory = simulator_seconds(data, lines, records_file=False)
    with_file = simulator_seconds(data, lines, records_file=True)
    print(f"{lines} lines, {len(data) / 1e6:.1f} MB")
    for label, seconds in (("bare TCP receiver", bare),
                           ("client formatting lines", producing),
                           ("sim, in memory", in_memory),
                           ("sim, + records file", with_file)):
        print(f"  {label:<22} {seconds:7.3f} s  {lines / seconds:>12,.0f} lines/s  "
              f"ratio to bare {seconds / bare:6.1f}x")


if __name__ == "__main__":
    main()
