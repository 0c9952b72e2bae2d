"""/bin/walt-reboot (walt-node reboot): flush, hooks in order with time limits, then the
kexec path or the OS reboot; never returns on success, fails fast otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.kexec import (
    Recorder,
    expected_cmdline,
    run_walt_node,
)

from walt_node.config import ConfigError, read_key_values
from walt_node.reboot.node_reboot import list_hooks

REBOOT = ["reboot", "--grace", "0.3"]
BIN = Path(__file__).parent.parent / "bin"


def add_hook(boot_root: Path, name: str, body: str, executable: bool = True) -> Path:
    hooks = boot_root / "etc" / "walt" / "reboot.d"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / name
    hook.write_text("#!/bin/sh\n" + body + "\n")
    hook.chmod(0o755 if executable else 0o644)
    return hook


def hook_records(recorder: Recorder, name: str) -> str:
    """Hooks append '<name>' to the recorder's file, so their order shows among calls."""
    return f'echo \'{{"prog": "hook:{name}", "args": [], "files": {{}}}}\' >> "$WALT_TEST_RECORD"'


def test_hooks_run_in_order_then_the_os_reboot(boot_root, recorder) -> None:
    add_hook(boot_root, "20-second", hook_records(recorder, "20-second"))
    add_hook(boot_root, "10-first", hook_records(recorder, "10-first") + "\nexit 3")  # fails: goes on
    add_hook(boot_root, "30-not-executable", hook_records(recorder, "30"), executable=False)
    pid_file = boot_root / "hang.pid"
    add_hook(boot_root, "40-hangs", hook_records(recorder, "40-hangs")
             + f"\nsleep 30 &\necho $! > {pid_file}\nwait")
    add_hook(boot_root, "50-last", hook_records(recorder, "50-last"))
    started = time.monotonic()
    done = run_walt_node([*REBOOT, "--hook-timeout", "0.5"], boot_root, recorder)
    assert time.monotonic() - started < 15  # the hanging hook was stopped after 0.5 s
    assert done.returncode == -9, done.stdout  # stopped by 'reboot' like a real one
    assert [call["prog"] for call in recorder.calls()] == [
        "hook:10-first", "hook:20-second", "hook:40-hangs", "hook:50-last", "reboot"]
    assert "hook" in done.stdout and "10-first" in done.stdout  # the failure is reported
    assert "40-hangs did not finish within 0.5 s" in done.stdout
    # the hanging hook's own children were stopped with it
    hung = int(pid_file.read_text())
    assert not Path(f"/proc/{hung}").exists() or "sleep" not in Path(f"/proc/{hung}/cmdline").read_text()


def test_reboot_returning_waits_then_exits_non_zero(boot_root, recorder) -> None:
    started = time.monotonic()
    done = run_walt_node(REBOOT, boot_root, recorder, {"WALT_TEST_STOPS_CALLER": ""})
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert elapsed >= 0.3
    assert "'reboot' returned and the node still runs after 0.3 s" in done.stdout
    assert recorder.argvs() == [["reboot"]]


def test_failing_or_missing_reboot_exits_non_zero_quickly(boot_root, recorder) -> None:
    done = run_walt_node([*REBOOT[:1], "--grace", "20"], boot_root, recorder,
                         {"WALT_TEST_STATUS_REBOOT": "1", "WALT_TEST_STOPS_CALLER": ""})
    assert done.returncode == 1
    assert "reboot failed" in done.stdout
    (recorder.bin / "reboot").unlink()
    started = time.monotonic()
    done = run_walt_node([*REBOOT[:1], "--grace", "20"], boot_root, recorder,
                         {"PATH": f"{recorder.bin}:{Path(sys.executable).parent}"})
    assert done.returncode == 1
    assert "'reboot' was not found on PATH" in done.stdout
    assert time.monotonic() - started < 15  # not the 20 s grace


def test_kexec_method_from_reboot_conf(boot_sim, boot_root, recorder) -> None:
    (boot_root / "etc" / "walt" / "reboot.conf").write_text("# use kexec\nmethod = kexec\n")
    add_hook(boot_root, "10-hook", hook_records(recorder, "10-hook"))
    done = run_walt_node(REBOOT, boot_root, recorder)
    assert done.returncode == -9, done.stdout
    argvs = recorder.argvs()
    assert argvs[0] == ["hook:10-hook"]
    assert argvs[1][:2] == ["kexec", "-l"] and argvs[1][-1] == expected_cmdline()
    assert argvs[2:] == [["kexec", "-e"]]


def test_kexec_method_falls_back_to_reboot_when_the_server_is_down(boot_sim, boot_root, recorder) -> None:
    (boot_root / "etc" / "walt" / "reboot.conf").write_text("method = kexec\n")
    boot_sim.stop()
    done = run_walt_node(REBOOT, boot_root, recorder)
    assert done.returncode == -9
    assert recorder.argvs() == [["reboot"]]
    assert "falling back to a normal reboot" in done.stdout


def test_a_bad_reboot_conf_is_named_and_the_os_reboot_is_used(boot_root, recorder) -> None:
    (boot_root / "etc" / "walt" / "reboot.conf").write_text("method = warp\n")
    done = run_walt_node(REBOOT, boot_root, recorder)
    assert done.returncode == -9
    assert "reboot.conf: method 'warp' is not one of reboot, kexec" in done.stdout
    assert recorder.argvs() == [["reboot"]]


def test_bin_walt_reboot_script_is_the_same_command(boot_root, recorder) -> None:
    env = {**os.environ, **recorder.env, "WALT_NODE_ROOT": str(boot_root), "WALT_TEST_STOPS_CALLER": ""}
    done = subprocess.run([sys.executable, str(BIN / "walt-reboot"), "--grace", "0"], env=env,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert done.returncode == 1, done.stdout
    assert recorder.argvs() == [["reboot"]]
    help_text = subprocess.run([sys.executable, str(BIN / "walt-reboot"), "--help"], env=env,
                               text=True, stdout=subprocess.PIPE, timeout=30).stdout
    assert "/etc/walt/reboot.d" in help_text and "method = kexec" in help_text


def test_config_and_hook_listing(tmp_path) -> None:
    conf = tmp_path / "reboot.conf"
    conf.write_text("method = kexec   # comment\n\n")
    assert read_key_values(conf) == {"method": "kexec"}
    conf.write_text("kexec please\n")
    with pytest.raises(ConfigError, match=r"reboot.conf:1: expected 'key = value'"):
        read_key_values(conf)
    assert read_key_values(tmp_path / "missing") == {}
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name, mode in (("b", 0o755), ("a", 0o755), (".hidden", 0o755), ("c", 0o644)):
        (hooks / name).write_text("#!/bin/sh\n")
        (hooks / name).chmod(mode)
    (hooks / "d").mkdir()
    assert [hook.name for hook in list_hooks(hooks)] == ["a", "b"]
