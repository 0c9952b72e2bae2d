"""walt-log-monitor: real pseudo-terminals (pexpect), real log delivery to the simulator,
and the privilege boundary (an unprivileged user, a real logs daemon FIFO)."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pexpect
import pytest
from support.wait import wait_until

import walt_node
from walt_node.logstreams.monitor import LineSplitter, exit_status, stream_name
from walt_node.sim import Simulator
from walt_node.sim.sample import make_node_root

BIN = Path(sys.executable).parent
MONITOR = str(BIN / "walt-log-monitor")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
TIMEOUT = 20


def monitor_lines(sim: Simulator, stream: str, timeout: float = 10) -> List[str]:
    """The lines of ``stream`` once its END arrived."""
    def done(records) -> bool:
        return any(r.stream == stream and r.line == "END" for r in records)
    records = sim.wait_for_logs(done, timeout=timeout)
    return [r.line for r in records if r.stream == stream]


def run_monitor(argv: List[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([MONITOR, *argv], capture_output=True, timeout=TIMEOUT, **kwargs)


# ------------------------------------------------------------------ pure parts

def test_line_splitter_strips_terminal_cr_and_keeps_everything_else() -> None:
    lines: List[str] = []
    splitter = LineSplitter(lines.append, max_line=8)
    splitter.feed(b"a  b\\n\tc\r\nhal")
    splitter.feed(b"f\r\n\xff\r\n0123456789")
    splitter.finish()
    assert lines == ["a  b\\n\tc", "half", "\ufffd", "01234567", "89"]


def test_stream_name_and_exit_status() -> None:
    assert stream_name("/usr/bin/python3", 42) == "python3.42.monitor"
    assert stream_name("/tmp/my prog\tv2", 7) == "my_prog_v2.7.monitor"
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGKILL) == 137


# ------------------------------------------------------------------ pipes (no terminal)

def test_output_shown_unchanged_and_logged_between_start_and_end(sim: Simulator,
                                                                  sim_node_root: Path) -> None:
    script = r'echo one; printf "a  b\\\\n\tc\n"; echo err >&2; printf "no newline"; exit 3'
    process = subprocess.Popen([MONITOR, "sh", "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 3, err
    assert out == b"one\na  b\\n\tc\nerr\nno newline"
    lines = monitor_lines(sim, f"sh.{process.pid}.monitor")
    assert lines == ["START", "one", "a  b\\n\tc", "err", "no newline", "END"]


def test_piped_stdin_reaches_the_command(sim: Simulator, sim_node_root: Path) -> None:
    done = run_monitor(["sh", "-c", "cat; echo end-of-input"], input=b"x\ny  z\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"x\ny  z\nend-of-input\n"
    stream = next(r.stream for r in sim.wait_for_logs(
        lambda recs: any(r.line == "END" for r in recs)))
    assert monitor_lines(sim, stream) == ["START", "x", "y  z", "end-of-input", "END"]


def test_killed_command_gives_128_plus_signal(sim: Simulator, sim_node_root: Path) -> None:
    process = subprocess.Popen([MONITOR, "sh", "-c", "echo dying; kill -TERM $$"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + signal.SIGTERM
    assert monitor_lines(sim, f"sh.{process.pid}.monitor") == ["START", "dying", "END"]


def test_command_not_found_is_a_clear_error_and_runs_nothing(sim: Simulator,
                                                             sim_node_root: Path) -> None:
    done = run_monitor(["no-such-command-xyz", "arg"])
    assert done.returncode == 127
    assert b"command not found: 'no-such-command-xyz'" in done.stderr
    # the monitor has exited: once the simulator has no connection left open, it has
    # read everything the monitor could have sent
    assert wait_until(lambda: sim.live_connections() == 0, 10)
    assert [r for r in sim.log_records() if r.stream.endswith(".monitor")] == []


def test_invalid_stream_option_runs_nothing(tmp_path: Path, sim_node_root: Path) -> None:
    marker = tmp_path / "ran"
    done = run_monitor(["--stream", "two words", "touch", str(marker)])
    assert done.returncode == 2
    assert b"invalid log stream name 'two words'" in done.stderr
    assert not marker.exists()


def test_background_child_keeping_the_pty_does_not_hold_the_monitor(sim: Simulator, sim_node_root: Path,
                                                                     tmp_path: Path) -> None:
    started = time.monotonic()
    # the background process ignores the hang-up, so it keeps the pty open after its parent exits
    # (the parent exits once the child has said it ignores the hang-up, through a FIFO)
    script = ('ready="$1"; mkfifo "$ready"; (trap \'\' HUP; echo > "$ready"; exec sleep 8) & '
              'read _ < "$ready"; echo parent-done $$')
    done = run_monitor(["sh", "-c", script, "sh", str(tmp_path / "child-ready")])
    elapsed = time.monotonic() - started
    group = int(done.stdout.split()[-1])  # the command's process group: the sleep is in it
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert done.returncode == 0
    assert done.stdout.startswith(b"parent-done")
    assert elapsed < 5


def test_sigterm_to_the_monitor_reaches_the_command(sim: Simulator, sim_node_root: Path) -> None:
    process = subprocess.Popen([MONITOR, "sh", "-c", "trap 'echo got-term; exit 9' TERM; "
                                "echo ready; while :; do sleep 0.1; done"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 9
    assert b"got-term" in out
    assert monitor_lines(sim, f"sh.{process.pid}.monitor")[-2:] == ["got-term", "END"]


# ------------------------------------------------------------------ a real terminal

INTERACTIVE = textwrap.dedent("""\
    import signal, subprocess, sys
    signal.signal(signal.SIGWINCH, lambda *_: print("winch", flush=True))
    name = input("name? ")
    print("hello " + name, flush=True)
    subprocess.run(["stty", "size"])
    input("resize then enter ")
    subprocess.run(["stty", "size"])
    try:
        input("ctrl-c me ")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(7)
    """)

# the user's shell: runs the monitor, then shows its status and the terminal's mode
USER_SHELL = '"$@"; echo "status=$?"; stty -a'


def spawn_in_terminal(argv: List[str], rows: int, cols: int) -> pexpect.spawn:
    return pexpect.spawn("sh", ["-c", USER_SHELL, "sh", MONITOR, *argv],
                         dimensions=(rows, cols), timeout=TIMEOUT, env=dict(os.environ))


def assert_terminal_restored(child: pexpect.spawn) -> None:
    child.expect(pexpect.EOF)
    modes = child.before.decode()
    assert re.search(r"(^|\s)icanon(\s|$)", modes), modes
    assert re.search(r"(^|\s)echo(\s|$)", modes), modes
    assert re.search(r"(^|\s)isig(\s|$)", modes), modes


def test_interactive_program_input_resize_and_ctrl_c(sim: Simulator, sim_node_root: Path,
                                                    tmp_path: Path) -> None:
    program = tmp_path / "interactive.py"
    program.write_text(INTERACTIVE)
    child = spawn_in_terminal([sys.executable, str(program)], rows=30, cols=100)
    child.expect_exact("name? ")
    child.sendline("world")
    child.expect_exact("hello world")
    child.expect_exact("30 100")  # the command's terminal has the user's size
    child.expect_exact("resize then enter ")
    child.setwinsize(40, 120)
    child.expect_exact("winch")  # the resize reached the command as SIGWINCH
    child.sendline("")
    child.expect_exact("40 120")
    child.expect_exact("ctrl-c me ")
    child.sendintr()
    child.expect_exact("interrupted")
    child.expect_exact("status=7")
    assert_terminal_restored(child)
    stream = next(r.stream for r in sim.wait_for_logs(
        lambda recs: any(r.line == "END" for r in recs)))
    assert re.fullmatch(re.escape(Path(sys.executable).name) + r"\.\d+\.monitor", stream)
    lines = monitor_lines(sim, stream)
    assert lines[0] == "START" and lines[-1] == "END"
    # "winch" comes after the prompt, on its line; the terminal echoed Ctrl-C as ^C
    for expected in ("name? world", "hello world", "30 100", "resize then enter winch", "40 120",
                     "ctrl-c me ^Cinterrupted"):
        assert expected in lines, "\n".join(lines)


def test_ctrl_c_kills_a_program_that_does_not_catch_it(sim: Simulator, sim_node_root: Path) -> None:
    # it says "sleeping" once it leaves SIGINT to the kernel's default action (death)
    program = ("import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "print('sleeping', flush=True); signal.pause()")
    child = spawn_in_terminal([sys.executable, "-c", program], rows=24, cols=80)
    child.expect_exact("sleeping")
    child.sendintr()
    child.expect_exact(f"status={128 + signal.SIGINT}")
    assert_terminal_restored(child)


def test_ctrl_z_does_not_leave_the_command_stopped_forever(sim: Simulator, sim_node_root: Path) -> None:
    # the command leads its own session, so the kernel ignores terminal stops for it
    child = spawn_in_terminal(["sh", "-c", "echo ready; read answer; echo got $answer"], rows=24, cols=80)
    child.expect_exact("ready")
    child.sendcontrol("z")
    child.expect_exact("^Z")  # the command's terminal took the key (and sent its signal)
    child.sendline("hi")
    child.expect_exact("got hi")
    child.expect_exact("status=0")
    assert_terminal_restored(child)


# ------------------------------------------------------------------ privileges

@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged user can use (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="walt-monitor-test-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nobody_env(root: Path) -> Dict[str, str]:
    env = dict(os.environ, WALT_NODE_ROOT=str(root), HOME=str(root))
    return env


def monitor_for_nobody(public_dir: Path) -> List[str]:
    """walt-log-monitor as another user can start it: Debian's python3 and a copy of the
    package in a public directory (the checkout and its venv may sit in a directory only
    root can enter, as root's home is; the monitor needs nothing but the standard library)."""
    lib = public_dir / "lib"
    shutil.copytree(Path(walt_node.__file__).parent, lib / "walt_node",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _make_readable(lib)
    return ["env", f"PYTHONPATH={lib}", "/usr/bin/python3", "-m", "walt_node", "log-monitor"]


def test_monitor_runs_the_command_as_the_calling_user(sim: Simulator, public_dir: Path) -> None:
    root = make_node_root(public_dir / "root", server_ip=sim.host, logs_port=sim.logs_port,
                          rpc_port=sim.rpc_port, http_port=sim.http_port)
    _make_readable(root)
    fifo_requests = _FifoRecorder(root / "var/lib/walt/logs.fifo")
    try:
        done = subprocess.run([*NOBODY, *monitor_for_nobody(public_dir), "sh", "-c", "id -u; id -g"],
                              capture_output=True,
                              timeout=TIMEOUT, env=nobody_env(root))
    finally:
        fifo_requests.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [b"65534", b"65534"]
    # the lines went through the FIFO as ordinary log requests, and no MONITOR request was made
    assert any(line.startswith(b"TSLOG ") and line.endswith(b".monitor 65534")
               for line in fifo_requests.lines), fifo_requests.lines
    assert not [line for line in fifo_requests.lines if line.startswith(b"MONITOR")]


def _make_readable(root: Path) -> None:
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o777)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


class _FifoRecorder:
    """Reads whatever is written to a FIFO, in a thread (so no writer ever blocks)."""

    def __init__(self, path: Path):
        os.mkfifo(path, 0o666)
        os.chmod(path, 0o666)
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # RDWR: never sees EOF between writers
        self.lines: List[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pending = b""
        idle = False
        while self.running or not idle:  # once stopped, read what is left
            try:
                pending += os.read(self.fd, 65536)
                idle = False
            except BlockingIOError:
                idle = True
                select.select([self.fd], [], [], 0.1)  # until a writer writes (or a look at running)
                continue
            *complete, pending = pending.split(b"\n")
            self.lines.extend(complete)

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        os.close(self.fd)


def test_forged_monitor_request_in_the_daemon_fifo_runs_nothing(sim: Simulator,
                                                                public_dir: Path) -> None:
    root = make_node_root(public_dir / "root", server_ip=sim.host, logs_port=sim.logs_port,
                          rpc_port=sim.rpc_port, http_port=sim.http_port)
    fifo = public_dir / "logs.fifo"
    marker = public_dir / "marker"
    marker.touch()
    marker.chmod(0o666)
    daemon = subprocess.Popen([str(BIN / "walt-node"), "logs-daemon", "--fifo", str(fifo)],
                              env=dict(os.environ, WALT_NODE_ROOT=str(root)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    attacker = None
    try:
        assert wait_until(lambda: fifo.exists() and stat.S_ISFIFO(fifo.stat().st_mode), 10), \
            "the daemon's FIFO did not appear"
        fifo.chmod(0o666)  # world-writable, as it is in practice
        # the attacker (nobody) asks the daemon to run its own command line as root (uid 0);
        # the paths are literal so a re-run by the daemon would find them too
        attack = (f'echo "ran-as-$(id -u)" >> {marker}; '
                  f'mkfifo /tmp/walt-monitor-stdin-$$.fifo /tmp/walt-monitor-stdout-$$.fifo; '
                  f'printf "MONITOR %s 0 0 24 80\\nLOG attack-probe after-monitor\\n" $$ > {fifo}; '
                  'sleep 4')
        attacker = subprocess.Popen([*NOBODY, "sh", "-c", attack])
        # a line written after the request arrived: the daemon has read and handled the request
        sim.wait_for_logs(lambda recs: any(r.line == "after-monitor" for r in recs), timeout=10)
        # a daemon that had started the command would have a child now (it sleeps 4 s)
        assert _children(daemon.pid) == [], "the daemon started a process for the MONITOR request"
        assert marker.read_text().split() == ["ran-as-65534"]
        assert daemon.poll() is None, "the daemon died on the MONITOR request"
    finally:
        if attacker is not None:
            attacker.kill()
            attacker.wait()
            for kind in ("stdin", "stdout"):
                Path(f"/tmp/walt-monitor-{kind}-{attacker.pid}.fifo").unlink(missing_ok=True)
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()



def _children(pid: int) -> List[int]:
    """Child processes of ``pid`` (all its threads), from the kernel."""
    children: List[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children
