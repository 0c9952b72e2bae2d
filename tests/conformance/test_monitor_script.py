"""WalT 10.0's own walt-log-monitor script against walt-node's logs daemon (docs/protocols.md §3).

The script is the real one of the walt-node 10.0 wheel (scripts/upstream-venv.sh),
run unchanged in a pseudo-terminal.  It names /var/lib/walt/logs.fifo and /tmp
itself, so it runs in a private mount namespace where those are the test's node
root: the daemon (outside) and the script (inside) see the same FIFOs.  Without an
answer the script waits forever with its terminal in raw mode; walt-node's daemon
must end it with its message, running nothing, and the script restores the terminal.
"""

from __future__ import annotations

import os
import shlex
import signal
import termios
from pathlib import Path

import pexpect
import pytest
from support.logs import DaemonProcess, LogServer
from support.upstream import Upstream
from support.wait import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a mount namespace)")


def test_upstream_walt_log_monitor_ends_with_the_message_and_runs_nothing(
        upstream: Upstream, daemon: DaemonProcess, server: LogServer, tmp_path: Path) -> None:
    script = upstream.venv / "bin" / "walt-log-monitor"
    marker = tmp_path / "ran"
    inside = " && ".join([
        f"mount --bind {shlex.quote(str(tmp_path / 'var/lib'))} /var/lib",
        f"mount --bind {shlex.quote(str(tmp_path / 'tmp'))} /tmp",
        f"exec bash {shlex.quote(str(script))} touch {shlex.quote(str(marker))}",
    ])
    child = pexpect.spawn("unshare", ["--mount", "--propagation", "private", "sh", "-c", inside],
                          dimensions=(30, 100), timeout=20, encoding="utf-8")
    try:
        child.expect_exact("walt-log-monitor: nothing was run.")
        child.expect_exact("walt-node log-monitor <command> [args...]")
        assert wait_until(lambda: not child.isalive(), 20, step=0.05), "the script did not end"
        assert child.exitstatus == 0, child.before
        # the script restored its terminal: line editing and echo are back
        lflag = termios.tcgetattr(child.child_fd)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO
        assert not marker.exists()
        assert "answered the MONITOR request of pid" in daemon.log()
        assert not [line for line in server.records() if line.stream.endswith(".monitor")]
    finally:
        # the script's background copy loop, still blocked opening its stdin FIFO, is in
        # the script's process group (no job control) and outlives the terminal: end it
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.close(force=True)

