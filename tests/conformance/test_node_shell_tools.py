"""The server's own node tools (walt-log-echo, walt-log-cat, walt-log-tee from the
walt-server 10.0 wheel's walt/server/mount/), run by busybox sh with busybox nc as
on a node, writing into walt-node's logs daemon FIFO or talking to the simulator
(docs/protocols.md §2, §3): every line arrives intact.

The tools name /var/lib/walt/logs.fifo and source ``walt-env`` from PATH, so they
run in a private mount namespace where the daemon's FIFO directory is mounted
there, with a PATH holding small wrappers (ours) that start them with busybox sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import List

import pytest
from support.logs import DaemonProcess

TOOLS = ("walt-log-echo", "walt-log-cat", "walt-log-tee")
# what these shell tools themselves keep intact (`read` without -r eats backslashes
# and outer blanks; `$*` joins words with single spaces)
TEXTS = ["plain words", "accents é à ü", "CJK 中文字", "emoji 😀🎉 and 𝄞", "quotes ' \" inside",
         "looks like 1700000000.5 a stamp", "CLOSE not alone", "x" * 9000 + "é"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a mount namespace")


@pytest.fixture
def node_bin(upstream, tmp_path: Path, sim) -> Path:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is needed (busybox-static in .ci/apt-packages)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!{busybox} sh\nexec {busybox} sh "{upstream.mount_dir / tool}" "$@"\n')
        wrapper.chmod(0o755)
    (bin_dir / "walt-env").write_text(f"export walt_server_ip={sim.host}\n"
                                      f"export walt_server_logs_port={sim.logs_port}\n")
    return bin_dir


def on_node(node_bin: Path, fifo_dir: Path, script: str, stdin: str = "") -> str:
    """Run ``script`` with busybox sh where /var/lib/walt is ``fifo_dir`` (a private
    mount namespace: the host's /var/lib is not touched)."""
    inner = (f"mount -t tmpfs walt-test /var/lib && mkdir /var/lib/walt && "
             f"mount --bind {fifo_dir} /var/lib/walt && exec busybox sh -c \"$0\"")
    env = {"PATH": f"{node_bin}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}
    done = subprocess.run(["unshare", "--mount", "sh", "-c", inner, script], input=stdin,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def quoted(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_walt_log_echo_through_our_daemon_fifo(sim, node_bin, tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    daemon = DaemonProcess(root, sim.logs_port).start()
    try:
        script = "\n".join([f"walt-log-echo echoed {quoted(text)}" for text in TEXTS] +
                           [f"walt-log-echo --ts {1700000000.25 + n} stamped {quoted(text)}"
                            for n, text in enumerate(TEXTS)])
        on_node(node_bin, daemon.fifo.parent, script)
        records = sim.wait_for_logs(lambda recs: len(recs) >= 2 * len(TEXTS), timeout=30)
    finally:
        daemon.stop()
    assert [r.line for r in records if r.stream == "echoed"] == TEXTS
    stamped = [r for r in records if r.stream == "stamped"]
    assert [r.line for r in stamped] == TEXTS
    assert [r.ts for r in stamped] == [1700000000.25 + n for n in range(len(TEXTS))]


def test_walt_log_echo_without_daemon_and_walt_log_cat_talk_to_the_simulator(
        sim, node_bin, tmp_path) -> None:
    empty = tmp_path / "no-daemon"
    empty.mkdir()  # no FIFO: walt-log-echo connects itself, through walt-log-cat and nc
    lines: List[str] = [f"walt-log-echo direct {quoted(text)}" for text in TEXTS[:3]]
    stdin = "".join(f"{1700000000.5 + n} {text}\n" for n, text in enumerate(TEXTS))
    on_node(node_bin, empty, "\n".join(lines))
    on_node(node_bin, empty, "walt-log-cat --ts catted", stdin=stdin)
    records = sim.wait_for_logs(lambda recs: len(recs) >= 3 + len(TEXTS), timeout=30)
    assert [r.line for r in records if r.stream == "direct"] == TEXTS[:3]
    catted = [r for r in records if r.stream == "catted"]
    assert [r.line for r in catted] == TEXTS
    assert [r.ts for r in catted] == [1700000000.5 + n for n in range(len(TEXTS))]


def test_walt_log_tee_copies_and_sends(sim, node_bin, tmp_path) -> None:
    empty = tmp_path / "no-daemon"
    empty.mkdir()
    started = time.time()
    out = on_node(node_bin, empty, "walt-log-tee teed", stdin="".join(t + "\n" for t in TEXTS))
    assert out == "".join(t + "\n" for t in TEXTS)
    records = sim.wait_for_logs(lambda recs: len(recs) >= len(TEXTS), timeout=30)
    assert [r.line for r in records] == TEXTS
    assert all(started - 1 <= r.ts <= time.time() for r in records)  # NO_TIMESTAMPS: stamped
