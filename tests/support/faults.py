"""Run walt-node commands that are interrupted at their Nth file replacement.

Every file walt-node writes goes through ``os.replace`` (walt_node.files), so
counting its calls gives the points where a real program can die half-way.
The command runs in a forked child whose ``os.replace`` sends a signal to the
process itself at call number N, before replacing anything: SIGKILL (a crash,
a power cut) or SIGSTOP (frozen there until the test sends SIGCONT).
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import List, Optional

import walt_node.cli  # imported once here, not in every forked child


def start_interrupted(argv: List[str], at: int, signum: int) -> int:
    """Fork ``walt-node <argv>`` that gets ``signum`` at its ``at``-th os.replace; its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1
    try:
        calls = 0
        real_replace = os.replace

        def replace(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == at:
                os.kill(os.getpid(), signum)
            return real_replace(*args, **kwargs)

        os.replace = replace
        status = walt_node.cli.main(argv)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def exit_code(pid: int) -> int:
    """Wait for a child of :func:`start_interrupted`: its exit status, or -signal."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def process_state(pid: int) -> Optional[str]:
    """The state letter of /proc/<pid>/stat ('T' stopped, 'Z' exited), None once reaped."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def waits_for_a_lock(pid: int) -> bool:
    """Is ``pid`` blocked on a file lock? (/proc/locks marks waiters with '->')"""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid):
            return True
    return False
