"""The harness's own serial-shell protocol, against a real bash on a socket pair.

These run without qemu or root in about a second (``pytest tests/vnode/test_harness.py``),
so a change to the command channel is checked before a 6-minute guest run.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from vnode_qemu import GuestShell, SerialLog, VnodeTimeout


@pytest.fixture
def fake_guest(tmp_path: Path) -> Iterator[Tuple[GuestShell, SerialLog]]:
    """A bash reading commands from one end of a socket pair, like the guest's ttyS1 shell."""
    host_end, guest_end = socket.socketpair()
    bash = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=guest_end, stdout=guest_end,
                            stderr=subprocess.STDOUT)
    guest_end.close()
    port = SerialLog(host_end, tmp_path / "shell.log")
    try:
        yield GuestShell(port), port
    finally:
        bash.kill()
        bash.wait(timeout=5)
        port.close()


def test_run_returns_output_and_status(fake_guest) -> None:
    shell, _ = fake_guest
    result = shell.run("echo 'two  spaces'; echo to-stderr >&2; exit 3", timeout=10)
    assert result.status == 3
    assert result.output.splitlines() == ["two  spaces", "to-stderr"]
    assert shell.run("true", timeout=10).check().output == ""


def test_commands_cannot_read_the_channel(fake_guest) -> None:
    shell, _ = fake_guest
    result = shell.run("cat; echo after", timeout=10)  # stdin is /dev/null, not the next commands
    assert (result.status, result.output.strip()) == (0, "after")
    assert shell.run("echo next", timeout=10).output.strip() == "next"


def test_a_command_over_time_is_killed_in_the_guest(fake_guest) -> None:
    shell, _ = fake_guest
    started = time.monotonic()
    result = shell.run("sleep 30", timeout=1)
    assert result.status == 124 and time.monotonic() - started < 10
    assert shell.run("echo still usable", timeout=10).output.strip() == "still usable"


def test_wait_for_times_out_with_the_output_seen(fake_guest) -> None:
    shell, port = fake_guest
    shell.run("echo something else", timeout=10)
    with pytest.raises(VnodeTimeout, match="(?s)never printed.*something else"):
        port.wait_for("never printed", timeout=0.5)
