"""The hooks the server's boot scripts call (docs/protocols.md §7): /bin/walt-network-reboot
and /bin/walt-hybrid-reboot, run as the real scripts of bin/ with recorders standing in
for kexec, reboot, systemctl and busybox; what setup installs in /bin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.kexec import MAC, Recorder, expected_cmdline, prepare_node_root
from test_setup import make_image, ok, setup, snapshot

from walt_node.sim import Simulator

BIN = Path(__file__).parent.parent / "bin"


def run_hook(name: str, root: Path, recorder: Recorder, *args: str) -> subprocess.CompletedProcess:
    """The hook as walt-net-service starts it: the script itself, output captured."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("walt_")}
    env.update(recorder.env, WALT_NODE_ROOT=str(root))
    return subprocess.run([sys.executable, str(BIN / name), "--grace", "0.3", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)


def test_network_hook_kexecs_into_the_bound_image_at_once(boot_sim: Simulator, boot_root: Path,
                                                          recorder: Recorder) -> None:
    boot_sim.bind(MAC, "waltplatform/pc-x86-64-other:latest")
    done = run_hook("walt-network-reboot", boot_root, recorder)
    assert done.returncode == -9, done.stdout  # kexec -e never returns: the caller is gone
    argvs = recorder.argvs()
    assert argvs[0][:2] == ["kexec", "-l"] and argvs[0][-1] == expected_cmdline("other")
    assert argvs[-1] == ["kexec", "-e"]


@pytest.mark.parametrize("hook, fallback", [("walt-network-reboot", ["busybox", "reboot", "-f"]),
                                            ("walt-hybrid-reboot", ["reboot"])])
def test_kexec_not_allowed_gives_the_boot_mode_plain_reboot(boot_sim: Simulator, boot_root: Path,
                                                             recorder: Recorder, hook, fallback) -> None:
    boot_sim.set_conf(MAC, "kexec.allow", False)
    done = run_hook(hook, boot_root, recorder)
    assert done.returncode == -9, done.stdout
    assert not any(argv[:2] == ["kexec", "-l"] for argv in recorder.argvs())
    assert recorder.argvs()[-1] == fallback
    assert "kexec is not allowed" in done.stdout


def test_network_hook_with_the_server_down_reboots_with_busybox(boot_sim: Simulator, boot_root: Path,
                                                                recorder: Recorder) -> None:
    boot_sim.stop()
    done = run_hook("walt-network-reboot", boot_root, recorder)
    assert done.returncode == -9, done.stdout
    assert recorder.argvs() == [["busybox", "reboot", "-f"]]


def test_hybrid_hook_kexecs_only_through_systemd(boot_sim: Simulator, tmp_path: Path,
                                                 recorder: Recorder) -> None:
    root = prepare_node_root(tmp_path / "root", boot_sim, boot_mode="hybrid-persistent")
    done = run_hook("walt-hybrid-reboot", root, recorder)
    assert done.returncode == -9, done.stdout
    argvs = recorder.argvs()
    assert argvs[0][:2] == ["kexec", "-l"] and argvs[-1] == ["systemctl", "kexec"]
    assert ["kexec", "-e"] not in argvs


def test_image_reboot_conf_can_turn_kexec_off_for_the_hooks(boot_sim: Simulator, boot_root: Path,
                                                            recorder: Recorder) -> None:
    (boot_root / "etc/walt/reboot.conf").write_text("method = reboot\n")
    done = run_hook("walt-network-reboot", boot_root, recorder)
    assert done.returncode == -9, done.stdout
    assert recorder.argvs() == [["busybox", "reboot", "-f"]]


def test_a_hook_that_returns_fails(boot_sim: Simulator, boot_root: Path, recorder: Recorder) -> None:
    """If busybox reboot -f returns, the hook must not report success (the server then hard-reboots)."""
    boot_sim.stop()
    env_stops = {"WALT_TEST_STOPS_CALLER": ""}
    recorder.env.update(env_stops)
    done = run_hook("walt-network-reboot", boot_root, recorder)
    assert done.returncode == 1, done.stdout


# --- installation -------------------------------------------------------------------

HOOKS = ("walt-network-reboot", "walt-hybrid-reboot", "walt-reboot")


def test_setup_installs_the_three_hooks(tmp_path: Path) -> None:
    image = make_image(tmp_path / "image")
    ok(setup(image))
    for name in HOOKS:
        hook = image / "bin" / name
        assert hook.stat().st_mode & 0o111, name
        assert hook.read_text().startswith("#!/opt/walt-node/bin/python3\n"), name


def test_an_image_own_network_hook_is_kept_unless_force(tmp_path: Path) -> None:
    """Default pc-x86 images ship their own /bin/walt-network-reboot."""
    image = make_image(tmp_path / "image")
    own = image / "bin/walt-network-reboot"
    own.write_text("#!/bin/sh\nexec kexec -e\n")
    own.chmod(0o755)
    original = snapshot(image)
    out = ok(setup(image))
    assert own.read_text() == "#!/bin/sh\nexec kexec -e\n"
    assert "kept the image's own /bin/walt-network-reboot" in out
    assert (image / "bin/walt-hybrid-reboot").is_file()
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == original

    ok(setup(image, "--force"))
    assert "walt-node" in own.read_text()
    ok(setup(image, "--uninstall"))
    assert snapshot(image) == original
