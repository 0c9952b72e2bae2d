"""walt-node swap: a real nbd-server on loopback, a fake kernel under
WALT_NODE_ROOT (proc/modules, proc/swaps, sys/block) and recorder scripts
standing in for nbd-client / mkswap / swapon / mount, which keep that fake
kernel state consistent (swapon adds to proc/swaps, nbd-client creates
sys/block/nbdN/pid...). Real attachment as swap is in the virtual node tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import pytest
from support.wait import wait_until

from walt_node import cli
from walt_node.protocols import ServerError, nbd_export_info

EXPORT_SIZE = 16 << 30
NBD_SERVER = shutil.which("nbd-server")  # found now: tests replace PATH with recorders
RECORDED = ("nbd-client", "mkswap", "swapon", "swapoff", "mount", "modprobe", "apt-get")

RECORDER = """#!/bin/sh
PATH=/usr/bin:/bin
echo "$(basename "$0") $*" >> "$RECORD_LOG"
root="$WALT_NODE_ROOT"
case "$(basename "$0") $1" in
  "nbd-client -d") rm -f "$root/sys/block/$(basename "$2")/pid" ;;
  "nbd-client -N") dev="$root/sys/block/$(basename "$6")"; mkdir -p "$dev"; echo 4242 > "$dev/pid" ;;
  "swapon "*) echo "/dev/$(basename "$1") partition 16777212 0 -2" >> "$root/proc/swaps" ;;
  "swapoff "*) grep -v "^/dev/$(basename "$1") " "$root/proc/swaps" > "$root/proc/swaps.new"
               mv "$root/proc/swaps.new" "$root/proc/swaps" ;;
  "modprobe nbd") mkdir -p "$root/sys/module/nbd" "$root/sys/block/nbd0" "$root/sys/block/nbd1" ;;
esac
fail="FAIL_$(basename "$0" | tr - _)"
eval "status=\\${$fail:-0}"
exit "$status"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nbd_server(tmp: Path, export: str, allow_list: bool = False) -> tuple:
    """(port, pid) of a daemonized nbd-server; allow_list lets `nbd-client -l` list exports."""
    image = tmp / "swap.img"
    with open(image, "wb") as f:
        f.truncate(EXPORT_SIZE)  # sparse: no disk space used
    port = free_port()
    conf = tmp / "nbd.conf"
    conf.write_text(f"[generic]\n    port = {port}\n    listenaddr = 127.0.0.1\n"
                    + ("    allowlist = true\n" if allow_list else "")
                    + f"[{export}]\n    exportname = {image}\n")
    pidfile = tmp / "nbd.pid"
    subprocess.run([str(NBD_SERVER), "-C", str(conf), "-p", str(pidfile)], check=True, timeout=10,
                   capture_output=True)

    def ready() -> bool:  # answers the handshake (a bare TCP accept may come before that)
        try:
            nbd_export_info("127.0.0.1", export, port=port, timeout=2)
        except ServerError:
            return False
        return pidfile.exists() and bool(pidfile.read_text().strip())

    assert wait_until(ready, 10), "nbd-server did not start"
    return port, int(pidfile.read_text())


@pytest.fixture(scope="module")
def nbd_server(tmp_path_factory):
    """Port of a real nbd-server offering swap-16G on 127.0.0.1."""
    if NBD_SERVER is None:
        pytest.skip("nbd-server is not installed")
    port, pid = start_nbd_server(tmp_path_factory.mktemp("nbd"), "swap-16G")
    yield port
    os.kill(pid, signal.SIGTERM)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A fake node root with the nbd module loaded and recorders for every program."""
    root = tmp_path / "root"
    for d in ("proc", "sys/block/nbd0", "sys/block/nbd1", "dev", "run"):
        (root / d).mkdir(parents=True)
    (root / "proc/modules").write_text("nbd 61440 0 - Live 0x0000000000000000\n")
    (root / "proc/swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    (root / "proc/mounts").write_text("tmpfs /run/walt/rootfs tmpfs rw,size=1G 0 0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in RECORDED:
        script = bin_dir / program
        script.write_text(RECORDER)
        script.chmod(0o755)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("WALT_NODE_ROOT", str(root))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("RECORD_LOG", str(log))
    monkeypatch.delenv("walt_server_ip", raising=False)
    return Node(root, bin_dir, log)


class Node:
    def __init__(self, root: Path, bin_dir: Path, log: Path):
        self.root, self.bin_dir, self.log = root, bin_dir, log

    def calls(self) -> List[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def remove(self, program: str) -> None:
        (self.bin_dir / program).unlink()


def swap(capsys, *args: str) -> tuple:
    status = cli.main(["swap", *args])
    out = capsys.readouterr()
    return status, out.out + out.err


# ------------------------------------------------------------------ status

def test_status_finds_the_export_and_reads_its_size(node, nbd_server, capsys):
    status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 0, out
    assert "ok      nbd kernel module: loaded" in out
    assert f"ok      nbd-client: {node.bin_dir}/nbd-client" in out
    assert (f"ok      server export swap-16G: offered by 127.0.0.1:{nbd_server}, "
            f"{EXPORT_SIZE} bytes (16 GiB)") in out
    assert "NBD swap: not attached" in out
    assert node.calls() == []  # status runs nothing


@pytest.mark.parametrize("program,package", [("nbd-client", "nbd-client"), ("mkswap", "util-linux"),
                                             ("swapon", "util-linux")])
def test_status_names_each_missing_program(node, nbd_server, capsys, program, package):
    node.remove(program)
    status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 1
    missing = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert missing == [f"MISSING {program}: not found on PATH (package {package}; "
                       "'walt-node swap install-prerequisites' installs it)"]


def test_status_without_the_module_anywhere(node, nbd_server, capsys):
    (node.root / "proc/modules").write_text("ext4 1 0 - Live 0x0\n")
    status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 1
    [missing] = [line for line in out.splitlines() if line.startswith("MISSING")]
    assert missing.startswith("MISSING nbd kernel module: not loaded and not found in "
                              f"{node.root}/lib/modules/{os.uname().release}")


@pytest.mark.parametrize("listing,line,expected", [
    ("modules.dep", "kernel/drivers/block/nbd.ko.xz:\n", "loadable"),
    ("modules.builtin", "kernel/drivers/block/nbd.ko\n", "built in"),
])
def test_status_module_loadable_or_built_in(node, nbd_server, capsys, listing, line, expected):
    (node.root / "proc/modules").write_text("")
    modules = node.root / "lib/modules" / os.uname().release
    modules.mkdir(parents=True)
    (modules / listing).write_text("kernel/drivers/block/nbdx.ko:\n" + line)
    status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 0, out
    assert f"ok      nbd kernel module: not loaded, {expected} ({modules / listing})" in out


def test_status_export_not_offered(node, tmp_path, capsys):
    port, pid = start_nbd_server(tmp_path, "another-export")
    try:
        status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(port))
    finally:
        os.kill(pid, signal.SIGTERM)
    assert status == 1
    assert (f"MISSING server export swap-16G: NBD server 127.0.0.1:{port}: "
            "the server has no export named 'swap-16G'") in out


def test_status_names_a_server_that_does_not_speak_nbd(node, capsys):
    with socket.socket() as impostor:
        impostor.bind(("127.0.0.1", 0))
        impostor.listen(1)
        port = impostor.getsockname()[1]

        def answer_garbage() -> None:
            conn, _ = impostor.accept()
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                conn.settimeout(10)
                with contextlib.suppress(OSError):  # a reset is giving up too
                    conn.recv(1)  # the connection stays open until the client gives up on it

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(port))
        thread.join(timeout=5)
    assert status == 1
    assert f"MISSING server export swap-16G: NBD server 127.0.0.1:{port}: not an NBD newstyle server" in out


def test_status_server_unreachable_and_server_unknown(node, capsys):
    port = free_port()
    status, out = swap(capsys, "status", "--server", "127.0.0.1", "--nbd-port", str(port))
    assert status == 1
    assert f"MISSING server export swap-16G: cannot connect to the WalT NBD server at 127.0.0.1:{port}" in out
    status, out = swap(capsys, "status")
    assert status == 1
    assert "MISSING server export swap-16G: node fact 'server_ip' is unknown" in out


# ------------------------------------------------------------------ attach / detach

def test_attach_then_again_then_detach_then_again(node, nbd_server, capsys):
    server = ["--server", "127.0.0.1", "--nbd-port", str(nbd_server)]
    status, out = swap(capsys, "attach", *server)
    assert status == 0, out
    dev = f"{node.root}/dev/nbd0"
    assert node.calls() == [
        f"nbd-client -N swap-16G 127.0.0.1 {nbd_server} {dev} -swap",
        f"mkswap {dev}",
        f"swapon {dev}",
        f"mount -o remount,size=8G {node.root}/run/walt/rootfs",
    ]
    assert "NBD swap attached on /dev/nbd0" in out and f"{EXPORT_SIZE} bytes" in out

    status, out = swap(capsys, "attach", *server)
    assert (status, len(node.calls())) == (0, 4)
    assert "NBD swap already attached on /dev/nbd0; nothing to do" in out

    status, out = swap(capsys, "detach")
    assert status == 0, out
    assert node.calls()[4:] == [f"swapoff {dev}", f"nbd-client -d {dev}"]
    status, out = swap(capsys, "detach")
    assert (status, len(node.calls())) == (0, 6)
    assert "no NBD swap attached; nothing to do" in out


def test_attach_picks_a_free_device_loads_the_module_and_skips_a_missing_overlay(node, nbd_server, capsys):
    shutil.rmtree(node.root / "sys/block")
    (node.root / "proc/modules").write_text("")
    (node.root / "proc/mounts").write_text("proc /proc proc rw 0 0\n")
    modules = node.root / "lib/modules" / os.uname().release
    modules.mkdir(parents=True)
    (modules / "modules.dep").write_text("kernel/drivers/block/nbd.ko:\n")
    (node.root / "sys/block/nbd0").mkdir(parents=True)
    (node.root / "sys/block/nbd0/pid").write_text("1\n")  # busy, mounted by someone else

    status, out = swap(capsys, "attach", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 0, out
    calls = node.calls()
    assert calls[0] == "modprobe nbd"
    assert calls[1].startswith("nbd-client -N swap-16G") and f"{node.root}/dev/nbd1 -swap" in calls[1]
    assert not any(c.startswith("mount") for c in calls)


@pytest.mark.parametrize("failing,message", [("nbd-client", "connecting /dev/nbd0 to 127.0.0.1"),
                                             ("mkswap", "mkswap /dev/nbd0"),
                                             ("swapon", "swapon /dev/nbd0")])
def test_attach_undoes_the_connection_when_a_step_fails(node, nbd_server, capsys, monkeypatch,
                                                        failing, message):
    monkeypatch.setenv("FAIL_" + failing.replace("-", "_"), "1")
    status, out = swap(capsys, "attach", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 4
    dev = f"{node.root}/dev/nbd0"
    assert node.calls()[-2].startswith(failing)
    assert node.calls()[-1] == f"nbd-client -d {dev}"
    assert f"NBD swap not attached: {message} failed" in out
    assert not (node.root / "run/walt-node/swap.json").exists()
    assert not (node.root / "sys/block/nbd0/pid").exists()


def test_attach_with_a_missing_prerequisite_runs_nothing(node, nbd_server, capsys):
    node.remove("mkswap")
    status, out = swap(capsys, "attach", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 1 and node.calls() == []
    assert "MISSING mkswap" in out and "the boot carries on" in out


def test_attach_gives_up_quickly_on_a_silent_server(node, capsys):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the TCP handshake but never says a word
    try:
        started = time.monotonic()
        status, out = swap(capsys, "attach", "--server", "127.0.0.1", "--nbd-port",
                           str(silent.getsockname()[1]), "--timeout", "1.5")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert status == 2 and node.calls() == []
    assert "NBD swap not attached: NBD server 127.0.0.1" in out
    assert elapsed < 10  # bounded by --timeout (1.5 s), with a wide margin for a loaded machine


def test_install_prerequisites_installs_only_what_is_missing(node, capsys):
    node.remove("nbd-client")
    status, out = swap(capsys, "install-prerequisites", "--dry-run")
    assert status == 0 and node.calls() == []
    assert "would run: apt-get install -y --no-install-recommends nbd-client" in out
    status, out = swap(capsys, "install-prerequisites")
    assert status == 0, out
    assert node.calls() == ["apt-get install -y --no-install-recommends nbd-client"]


def test_cli_end_to_end_in_a_subprocess(node, nbd_server):
    done = subprocess.run([sys.executable, "-m", "walt_node", "swap", "status", "--server", "127.0.0.1",
                           "--nbd-port", str(nbd_server)], env=dict(os.environ), timeout=30,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{EXPORT_SIZE} bytes" in done.stdout


def test_detach_own_leaves_the_swap_walt_init_attached(node, nbd_server, capsys):
    """walt-init attached nbd0 at boot: the unit's attach did nothing, so its stop
    (detach --own) must not take that swap away; a plain detach still can."""
    with open(node.root / "proc/swaps", "a") as swaps:
        swaps.write("/dev/nbd0 partition 16777212 0 -2\n")
    status, out = swap(capsys, "attach", "--server", "127.0.0.1", "--nbd-port", str(nbd_server))
    assert status == 0 and "already attached" in out
    status, out = swap(capsys, "detach", "--own")
    assert status == 0 and node.calls() == [], out
    assert "left the NBD swap on /dev/nbd0 attached" in out

    status, out = swap(capsys, "detach")
    assert status == 0 and node.calls() == [f"swapoff {node.root}/dev/nbd0",
                                            f"nbd-client -d {node.root}/dev/nbd0"], out


def test_detach_own_stops_only_the_swap_attach_attached(node, nbd_server, capsys):
    (node.root / "sys/block/nbd0/pid").write_text("77\n")  # walt-init's connection
    with open(node.root / "proc/swaps", "a") as swaps:
        swaps.write("/dev/nbd0 partition 16777212 0 -2\n")
    from walt_node.bounds import Deadline
    from walt_node.paths import Paths
    from walt_node.swap import _attach_device

    _attach_device(Paths.from_env(), "127.0.0.1", nbd_server, Deadline(30))  # what attach does
    dev1 = f"{node.root}/dev/nbd1"
    status, out = swap(capsys, "detach", "--own")
    assert status == 0, out
    assert node.calls()[-2:] == [f"swapoff {dev1}", f"nbd-client -d {dev1}"]
    assert "/dev/nbd0 " in (node.root / "proc/swaps").read_text()
