"""walt-ipxe-kexec-reboot end to end: the real command against the simulator, with
recorder programs (kexec, reboot, systemctl) first on PATH proving what ran."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Tuple

import pytest
from support.kexec import (
    DEFAULT_ID,
    DEFAULT_IMAGE,
    MAC,
    NODE_IP,
    OTHER_ID,
    OTHER_IMAGE,
    SIM_GATEWAY,
    SIM_NETMASK,
    Recorder,
    dead_port,
    expected_cmdline,
    fixture_config,
    model_file,
    prepare_node_root,
    run_walt_node,
    sha256,
    staged_initrd_hash,
)

from walt_node.reboot.binding import parse_allow, same_image_id
from walt_node.reboot.kexec import initrd_kind, kernel_kind
from walt_node.sim import SimConfig, SimImage, SimNode, Simulator

KEXEC = ["ipxe-kexec-reboot", "--grace", "0.3"]


def kexec_load(recorder: Recorder) -> dict:
    loads = [call for call in recorder.calls() if call["prog"] == "kexec" and call["args"][:1] == ["-l"]]
    assert len(loads) == 1, recorder.argvs()
    return loads[0]


def assert_loaded(recorder: Recorder, image: str, cmdline: str) -> None:
    call = kexec_load(recorder)
    kernel, initrd = call["args"][1], call["args"][3]
    assert call["args"][2] == "--initrd" and call["args"][4:] == ["--command-line", cmdline]
    assert call["files"][kernel] == sha256(model_file(image, "vmlinuz"))
    assert call["files"][initrd] == staged_initrd_hash(image)


def assert_no_kexec_then_reboot(recorder: Recorder, done) -> None:
    assert not recorder.jumped(), recorder.argvs()
    assert not any(argv[:2] == ["kexec", "-l"] for argv in recorder.argvs())
    assert recorder.argvs()[-1] == ["reboot"]
    assert done.returncode == -9  # the recorder 'reboot' stopped it, as a real reboot would


def stream_lines(boot_sim: Simulator) -> str:
    return "\n".join(record.line for record in boot_sim.log_records() if record.stream == "walt-reboot")


# ------------------------------------------------------------ the safe cases: kexec

def test_unchanged_binding_kexecs_the_same_image(boot_sim, boot_root, recorder) -> None:
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert done.returncode == -9, done.stdout  # stopped by 'kexec -e', never returned
    assert_loaded(recorder, "default", expected_cmdline())
    assert recorder.argvs()[-1] == ["kexec", "-e"]
    assert "the reboot keeps the image " + DEFAULT_IMAGE in done.stdout
    assert "keeps the image" in stream_lines(boot_sim)


def test_changed_binding_kexecs_the_newly_bound_image_and_says_so(boot_sim, boot_root, recorder) -> None:
    boot_sim.bind(MAC, OTHER_IMAGE)
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert done.returncode == -9, done.stdout
    assert_loaded(recorder, "other", expected_cmdline("other"))
    assert "CHANGES the image: booted a1b2c3d4e5f6" in done.stdout
    assert OTHER_ID[:12] in done.stdout
    boot_sim.wait_for_logs(lambda records: "CHANGES the image" in stream_lines(boot_sim), timeout=5)


def test_web_api_down_uses_the_api_session_and_tftp(boot_sim, tmp_path, recorder) -> None:
    boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, http_port=dead_port())
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert done.returncode == -9, done.stdout
    # the binding and network settings came from VSAPI; files over fake TFTP (the || fallbacks)
    assert "VSAPI get_device_info" in done.stdout
    assert "whether that is the booted image is unknown" in done.stdout
    assert_loaded(recorder, "default", expected_cmdline(gateway=SIM_GATEWAY, netmask=SIM_NETMASK))
    assert "kernel:  /vmlinuz" in done.stdout


def test_hybrid_mode_asks_systemd_for_a_clean_kexec(boot_sim, tmp_path, recorder) -> None:
    boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, boot_mode="hybrid-persistent")
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert done.returncode == -9, done.stdout
    assert_loaded(recorder, "default", expected_cmdline())
    assert recorder.argvs()[-1] == ["systemctl", "kexec"]
    assert ["kexec", "-e"] not in recorder.argvs()


def test_systemctl_kexec_returning_means_wait_then_fail(boot_sim, tmp_path, recorder) -> None:
    boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, boot_mode="hybrid-volatile")
    started = time.monotonic()
    done = run_walt_node(KEXEC, boot_root, recorder, {"WALT_TEST_STOPS_CALLER": ""})
    assert done.returncode == 1
    assert time.monotonic() - started >= 0.3  # it waited --grace for the shutdown
    assert "still running after 0.3 s" in done.stdout


# ------------------------------------------------------------ the unsafe cases: no jump

def test_node_unknown(boot_sim, tmp_path, recorder) -> None:
    boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, mac="52:54:00:00:00:99")
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "does not know a node with MAC 52:54:00:00:00:99" in done.stdout


def test_server_down(boot_sim, boot_root, recorder) -> None:
    boot_sim.stop()
    started = time.monotonic()
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "the server cannot be asked" in done.stdout
    assert time.monotonic() - started < 15  # bounded steps, far below the server's 60 s


@pytest.mark.parametrize("server_up", [True, False], ids=["kexec-refused", "server-down"])
def test_a_closed_stdout_still_ends_in_a_plain_reboot(boot_sim, boot_root, recorder, server_up) -> None:
    """walt-reboot started from an ssh session that went away: writing what it does
    fails (EPIPE), which must neither stop the fallback reboot nor the log stream."""
    boot_sim.set_conf(MAC, "kexec.allow", False)
    if not server_up:
        boot_sim.stop()
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads the output any more
    env = {key: value for key, value in os.environ.items() if not key.startswith("walt_")}
    env.update(recorder.env, WALT_NODE_ROOT=str(boot_root))
    try:
        done = subprocess.run([sys.executable, "-m", "walt_node", *KEXEC], env=env,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert not recorder.jumped(), recorder.argvs()
    assert recorder.argvs()[-1:] == [["reboot"]], done.stderr
    assert done.returncode == -9  # stopped by the recorder's 'reboot', as a real reboot would
    if server_up:
        assert "falling back to a normal reboot" in stream_lines(boot_sim)


def test_server_down_with_on_failure_exit(boot_sim, boot_root, recorder) -> None:
    boot_sim.stop()
    done = run_walt_node([*KEXEC, "--on-failure", "exit"], boot_root, recorder)
    assert done.returncode == 2
    assert recorder.argvs() == []
    assert "exiting (status 2)" in done.stdout


@pytest.mark.parametrize("value", [False, "false", "maybe"])
def test_kexec_not_allowed(boot_sim, boot_root, recorder, value) -> None:
    boot_sim.set_conf(MAC, "kexec.allow", value)
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "kexec is not allowed" in done.stdout
    assert "falling back to a normal reboot" in stream_lines(boot_sim)


def test_kernel_without_kexec_support(boot_sim, tmp_path, recorder) -> None:
    boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, kexec_support=False)
    done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "kexec_loaded is missing" in done.stdout


def test_no_kexec_program(boot_sim, boot_root, recorder) -> None:
    (recorder.bin / "kexec").unlink()
    # keep the system's directories off PATH, so the host's real kexec is not found
    path = f"{recorder.bin}:{Path(shutil.which('python3') or '/usr/bin/python3').parent}"
    done = run_walt_node(KEXEC, boot_root, recorder, {"PATH": path})
    assert_no_kexec_then_reboot(recorder, done)
    assert "no 'kexec' program on PATH" in done.stdout


@contextmanager
def bound_to_a_changed_image(tmp_path: Path, name: str, edit) -> Iterator[Tuple[Simulator, Path]]:
    """A simulator whose node is bound to a copy of the default image changed by
    ``edit(model_dir)``, and a node boot_root for it."""
    boot = tmp_path / name / "boot"
    shutil.copytree(Path(__file__).parent / "data" / "ipxe" / "default" / "boot", boot)
    edit(boot / "pc-x86-64")
    config = fixture_config()
    fullname = f"waltplatform/{name}:latest"
    config.images.append(SimImage(fullname=fullname, id=name * 4, boot_dir=boot))
    config.nodes[0].image = fullname
    with Simulator(config, host="127.0.0.1") as changed:
        yield changed, prepare_node_root(tmp_path / "boot_root", changed)


def test_a_file_that_is_not_a_kernel(tmp_path, recorder) -> None:
    def html_kernel(model_dir: Path) -> None:
        (model_dir / "vmlinuz").write_bytes(b"<html>404 Not Found</html>\n" * 200)

    with bound_to_a_changed_image(tmp_path, "badkernel", html_kernel) as (_, boot_root):
        done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "does not look like a kernel" in done.stdout


def test_an_empty_initrd(tmp_path, recorder) -> None:
    def empty_initrd(model_dir: Path) -> None:
        (model_dir / "initrd.img").write_bytes(b"")

    with bound_to_a_changed_image(tmp_path, "emptyinitrd", empty_initrd) as (_, boot_root):
        done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert "initrd http://127.0.0.1/boot/initrd.img is empty" in done.stdout


def test_a_script_error_names_file_and_line(tmp_path, recorder) -> None:
    def break_script(model_dir: Path) -> None:
        script = model_dir / "generic" / "server-params.ipxe"
        script.write_text(script.read_text() + "goto somewhere\n")

    with bound_to_a_changed_image(tmp_path, "badscript", break_script) as (_, boot_root):
        done = run_walt_node(KEXEC, boot_root, recorder)
    assert_no_kexec_then_reboot(recorder, done)
    assert ("iPXE script error: /generic/server-params.ipxe:5: unknown command 'goto'"
            in done.stdout)


def test_kexec_load_failure_means_no_jump(boot_sim, boot_root, recorder) -> None:
    done = run_walt_node(KEXEC, boot_root, recorder, {"WALT_TEST_STATUS_KEXEC": "1"})
    assert not recorder.jumped()
    assert [argv[:2] for argv in recorder.argvs()] == [["kexec", "-l"], ["reboot"]]
    assert "no kexec reboot: CommandFailed: 'kexec -l" in done.stdout
    assert done.returncode == -9


def test_kexec_e_returning_unloads_and_reboots(boot_sim, boot_root, recorder) -> None:
    done = run_walt_node(KEXEC, boot_root, recorder, {"WALT_TEST_STOPS_CALLER": "reboot"})
    argvs = recorder.argvs()
    assert [argv[:2] for argv in argvs] == [["kexec", "-l"], ["kexec", "-e"], ["kexec", "-u"],
                                            ["reboot"]]
    assert "kexec -e returned" in done.stdout


def test_failing_reboot_exits_non_zero_at_once(boot_sim, boot_root, recorder) -> None:
    boot_sim.stop()
    started = time.monotonic()
    done = run_walt_node(KEXEC, boot_root, recorder, {"WALT_TEST_STATUS_REBOOT": "1",
                                                 "WALT_TEST_STOPS_CALLER": ""})
    assert done.returncode == 1
    assert "reboot failed" in done.stdout
    assert time.monotonic() - started < 15  # bounded steps, far below the server's 60 s


def test_a_silent_server_is_bounded_by_the_deadline(tmp_path, recorder, boot_sim) -> None:
    """Web and API ports that accept but never answer: the deadline ends the attempt."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        boot_root = prepare_node_root(tmp_path / "boot_root", boot_sim, http_port=port)
        walt_env = boot_root / "bin" / "walt-env"
        walt_env.write_text(walt_env.read_text().replace(f"rpc_port={boot_sim.rpc_port}",
                                                         f"rpc_port={port}"))
        started = time.monotonic()
        done = run_walt_node([*KEXEC, "--deadline", "2"], boot_root, recorder)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(2)
        silent.close()
        for connection in accepted:
            connection.close()
    assert_no_kexec_then_reboot(recorder, done)
    # 2 s deadline, then at most 2 s of log delivery and 5 s of sync before 'reboot';
    # the slack is for a loaded machine (the point: nowhere near the 60 s the server allows)
    assert elapsed < 15, done.stdout
    assert "deadline" in done.stdout or "no answer in time" in done.stdout or \
        "timed out" in done.stdout, done.stdout


# ------------------------------------------------------------ dry run, help

def test_dry_run_prints_binding_and_plan_and_runs_nothing(boot_sim, boot_root, recorder) -> None:
    done = run_walt_node([*KEXEC, "--dry-run"], boot_root, recorder)
    assert done.returncode == 0, done.stdout
    assert recorder.argvs() == []
    assert "binding check: node1: the reboot keeps the image" in done.stdout
    assert f"cmdline: {expected_cmdline()}" in done.stdout
    assert "kernel file:" in done.stdout and "x86 bzImage" in done.stdout
    assert "then: kexec -e (boot mode network); dry run: nothing loaded" in done.stdout


def test_dry_run_says_it_would_fall_back(boot_sim, boot_root, recorder) -> None:
    boot_sim.stop()
    done = run_walt_node([*KEXEC, "--dry-run"], boot_root, recorder)
    assert done.returncode == 1
    assert recorder.argvs() == []
    assert "would fall back to: reboot" in done.stdout


def test_help_explains_the_steps(tmp_path, recorder) -> None:
    done = run_walt_node(["ipxe-kexec-reboot", "--help"], tmp_path, recorder)
    assert done.returncode == 0
    for text in ("kexec.allow", "--dry-run", "--on-failure", "systemctl kexec", "--deadline",
                 "kexec_loaded"):
        assert text in done.stdout


def test_bad_option_value_is_named(tmp_path, recorder) -> None:
    done = run_walt_node(["ipxe-kexec-reboot", "--deadline", "soon"], tmp_path, recorder)
    assert done.returncode == 2
    assert "'soon' is not a number of seconds" in done.stdout


# ------------------------------------------------------------ pure helpers

def test_kernel_and_initrd_signatures() -> None:
    assert kernel_kind(model_file("default", "vmlinuz")) == "x86 bzImage"
    arm64 = bytearray(64)
    arm64[0x38:0x3C] = b"ARM\x64"
    assert kernel_kind(bytes(arm64)) == "ARM64 Image"
    zimage = bytearray(64)
    zimage[0x24:0x28] = (0x016F2818).to_bytes(4, "little")
    assert kernel_kind(bytes(zimage)) == "ARM zImage"
    assert kernel_kind(b"\x7fELF" + bytes(60)) == "ELF kernel"
    assert kernel_kind(b"#!ipxe\n" * 100) is None
    assert initrd_kind(gzip.compress(b"x")) == "gzip"
    assert initrd_kind(b"070701" + bytes(100)) == "cpio (newc)"
    assert initrd_kind(b"\x28\xb5\x2f\xfd....") == "zstd"
    assert initrd_kind(b"<html>") is None


def test_image_ids_and_allow_values() -> None:
    assert same_image_id("A1B2C3D4E5F6", "a1b2c3d4e5f6" + "0" * 52)
    assert not same_image_id("a1b2", "a1b2c3d4e5f6")  # too short to trust a prefix
    assert not same_image_id("a1b2c3d4e5f6", "f6e5d4c3b2a1")
    assert parse_allow(None) is True and parse_allow("No") is False
    assert parse_allow("perhaps") is None


def test_signatures_of_the_real_debian_kernel_and_initrd() -> None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    initrds = sorted(Path("/boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        pytest.skip("no kernel in /boot (install linux-image-amd64)")
    with open(kernels[-1], "rb") as kernel, open(initrds[-1], "rb") as initrd:
        assert kernel_kind(kernel.read(65536)) == "x86 bzImage"
        assert initrd_kind(initrd.read(65536)) in ("cpio (newc)", "gzip", "xz", "zstd", "lz4")


def test_a_binding_change_while_preparing_stops_the_kexec(boot_sim, boot_root, recorder, monkeypatch,
                                                          tmp_path) -> None:
    """The node is re-bound right after the first binding check (while the boot files are
    fetched): the second check sees it and nothing is loaded.  The recorder's kexec is on
    PATH: the test must not depend on the machine having kexec-tools."""
    import io

    from walt_node.bounds import Deadline
    from walt_node.paths import Paths
    from walt_node.reboot import binding as binding_module
    from walt_node.reboot.kexec_reboot import NoKexec, Options, Reporter, prepare

    real_check = binding_module.check_binding
    checks = []

    def check_then_rebind(*args, **kwargs):
        result = real_check(*args, **kwargs)
        checks.append(result.image)
        if len(checks) == 1:
            boot_sim.bind(MAC, OTHER_IMAGE)
        return result

    monkeypatch.setattr(binding_module, "check_binding", check_then_rebind)
    monkeypatch.setenv("PATH", recorder.env["PATH"])
    out = io.StringIO()
    with pytest.raises(NoKexec, match="the binding changed while preparing"):
        prepare(Paths(boot_root), Reporter(out), Deadline(20), tmp_path, Options())
    assert checks == [DEFAULT_IMAGE, OTHER_IMAGE]
    assert recorder.argvs() == []  # nothing loaded, nothing run


# ------------------------------------------------------------ hostile text from the server

HOSTILE_NAME = "node1\x1b[2J\nFAKE: kexec allowed, image verified"


def test_text_from_the_server_is_printed_escaped(tmp_path, recorder) -> None:
    """The node name (web API) and the scripts' echo/cmdline are the server's words:
    terminal escapes and newlines faking a line are shown escaped by ipxe-plan and by the
    kexec reboot (stdout and its log stream)."""
    boot = tmp_path / "image" / "boot" / "pc-x86-64"
    boot.mkdir(parents=True)
    (boot / "start.ipxe").write_text("#!ipxe\necho \x1b]0;owned\x07\n"
                                     "kernel /k console=${hostname}\ninitrd /i\nboot\n")
    (boot / "k").write_bytes(model_file("default", "vmlinuz"))
    (boot / "i").write_bytes(model_file("default", "initrd.img"))
    config = SimConfig(nodes=[SimNode(mac=MAC, name=HOSTILE_NAME, ip=NODE_IP, model="pc-x86-64",
                                      image=DEFAULT_IMAGE, conf={})],
                       images=[SimImage(fullname=DEFAULT_IMAGE, id=DEFAULT_ID,
                                        boot_dir=tmp_path / "image" / "boot")])
    with Simulator(config, host="127.0.0.1") as sim:
        root = prepare_node_root(tmp_path / "root", sim)
        plan = run_walt_node(["ipxe-plan"], root, recorder)
        reboot = run_walt_node(KEXEC, root, recorder)
        records = sim.wait_for_logs(lambda recs: any("rebooting with" in r.line for r in recs))
        logged = "\n".join(r.line for r in records if r.stream == "walt-reboot")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert recorder.jumped(), reboot.stdout
    for output in (plan.stdout, reboot.stdout, logged):
        assert "\x1b" not in output and "\x07" not in output
        assert not any(line.lstrip().startswith("FAKE") for line in output.splitlines())
        assert "node1\\x1b[2J\\nFAKE: kexec allowed" in output
    assert "echo: \\x1b]0;owned\\x07" in plan.stdout
