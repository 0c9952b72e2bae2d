"""`walt-node demo`, the README's main command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_runs_every_step_and_cleans_up() -> None:
    before = set(Path(tempfile.gettempdir()).glob("walt-node-demo-*"))
    done = subprocess.run([sys.executable, "-m", "walt_node", "demo"], capture_output=True,
                          text=True, timeout=180, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if not k.startswith("walt_")})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # the server side saw the lines of every logging path, with the node's name as issuer
    for stream_line in ("node1.demo.shell -> step 1:  spaces\tand tab kept",
                        "node1.demo.shell -> with its own timestamp",
                        "node1.demo.python -> measure 2: 4",
                        "node1.demo.logging -> a logging.Handler record",
                        "node1.demo.cli -> phase 1 done",
                        "node1.demo.monitor -> monitored line 2",
                        "node1.demo.temp -> 21.7 C in lab-2"):
        assert stream_line in out
    assert "15 lines sent, 15 received" in out
    # the kexec plan follows the re-binding
    keeps, changes = out.split("re-bound to")[0], out.split("re-bound to")[1]
    assert "walt.sample.image=waltplatform/pc-x86-64-default:latest" in keeps
    assert "the reboot CHANGES the image" in changes
    assert "walt.sample.image=waltplatform/pc-x86-64-other:latest" in changes
    assert "blink 1: trigger = heartbeat" in out and "blink 0: trigger = none" in out
    # nothing left behind: no files, no process working on the demo's node root
    assert set(Path(tempfile.gettempdir()).glob("walt-node-demo-*")) == before
    root = out.split("WALT_NODE_ROOT=")[1].split("\n")[0]
    assert not processes_with_environment(f"WALT_NODE_ROOT={root}")


def processes_with_environment(entry: str) -> list:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(environ.parent.name)
        except OSError:  # gone, or not ours to read
            continue
    return found
