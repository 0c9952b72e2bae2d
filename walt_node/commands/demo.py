"""`walt-node demo`: walt-node at work against the built-in WalT server simulator.

Everything runs on this machine, on loopback, under a temporary WALT_NODE_ROOT:
nothing of the real system is touched and every process started is stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

from walt_node import runner
from walt_node.errors import WaltNodeError

DESCRIPTION = """\
Run a short, self-contained demonstration of walt-node, with no WalT platform:

  1. start the WalT server simulator on loopback (walt-node sim);
  2. make a temporary node root (WALT_NODE_ROOT) as a WalT server leaves it:
     /bin/walt-env, /proc/cmdline, /etc/hostname, a fake LED in /sys;
  3. start the logs daemon (walt-node logs-daemon) on that root;
  4. run an example experiment that logs through every path walt-node offers:
     walt-log-echo-style FIFO writes from a shell, the Python API
     (walt_node.log.echo and the logging handler), 'walt-node log',
     walt-log-monitor, and walt-serial-autolog reading a mote on a pty;
  5. print the log lines as the server received them
     (like 'walt log show --realtime');
  6. show the kexec reboot plan (--dry-run) built from the simulator's boot
     files, before and after the node is bound to another image;
  7. blink the fake LED and restore it;
  8. stop everything and remove the temporary files (unless --keep).

Exit status 0 when every step worked, 1 otherwise.

example:
  walt-node demo
  walt-node demo --keep     # keep the temporary directory to look around"""

STEP_TIMEOUT = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (its path is printed)")


class DemoFailed(WaltNodeError):
    pass


def _say(text: str) -> None:
    print(text, flush=True)


def _title(text: str) -> None:
    _say(f"\n=== {text}")


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Demo:
    def __init__(self, base: Path):
        self.base = base
        self.root = base / "node-root"
        self.processes: List[runner.Process] = []
        self.sim = None
        self.env: Dict[str, str] = {}
        self.expected: Dict[str, int] = {}  # stream -> number of lines the experiment logs

    # ------------------------------------------------------------ helpers
    def walt_node(self, *argv: str, check: bool = False):
        """Run a walt-node command on the demo node (a fresh process, as on a node);
        its output (stdout and stderr) is in the result's ``stdout``."""
        return runner.run([sys.executable, "-m", "walt_node", *argv], env=self.env,
                          timeout=STEP_TIMEOUT, check=check)

    def start(self, *argv: str) -> runner.Process:
        """Start a walt-node service; its own log goes to <base>/<command>.log."""
        log_file = open(self.base / f"{argv[0]}.log", "wb")
        with log_file:
            process = runner.start([sys.executable, "-m", "walt_node", *argv], env=self.env,
                                   stdin=runner.DEVNULL, stdout=log_file, stderr=runner.STDOUT)
        self.processes.append(process)
        return process

    def show_service_logs(self) -> None:
        for path in sorted(self.base.glob("*.log")):
            _say(f"--- {path.name}:\n{path.read_text(errors='replace').rstrip()}")

    def expect(self, stream: str, count: int) -> None:
        self.expected[stream] = self.expected.get(stream, 0) + count

    # ------------------------------------------------------------ steps
    def start_simulator(self) -> None:
        from walt_node.sim import Simulator
        from walt_node.sim.sample import sample_config

        _title("1. WalT server simulator")
        self.sim = Simulator(sample_config(self.base / "platform"), host="127.0.0.1")
        self.sim.start()
        _say(f"listening on 127.0.0.1: logs port {self.sim.logs_port}, rpc port "
             f"{self.sim.rpc_port}, http port {self.sim.http_port}")

    def make_node_root(self) -> None:
        from walt_node.sim.sample import make_node_root

        _title("2. node root, as a WalT server leaves it")
        make_node_root(self.root, logs_port=self.sim.logs_port, rpc_port=self.sim.rpc_port,
                       http_port=self.sim.http_port)
        led = self.root / "sys/class/leds/input0::capslock"
        led.mkdir(parents=True)
        (led / "trigger").write_text("[none] kbd-capslock timer heartbeat\n")
        (led / "brightness").write_text("0\n")
        (led / "max_brightness").write_text("1\n")
        (self.root / "sys/kernel").mkdir(parents=True, exist_ok=True)
        (self.root / "sys/kernel/kexec_loaded").write_text("0\n")
        self.env = dict(os.environ, WALT_NODE_ROOT=str(self.root), PYTHONUNBUFFERED="1")
        self.env.pop("walt_server_ip", None)
        _say(f"WALT_NODE_ROOT={self.root}")
        facts = self.walt_node("facts")
        _say(facts.stdout.rstrip())

    def start_logs_daemon(self) -> None:
        _title("3. logs daemon")
        fifo = self.root / "var/lib/walt/logs.fifo"
        self.start("logs-daemon", "--idle-close", "2")
        _wait_until(fifo.exists, f"the daemon to create {fifo}")
        _say(f"walt-node logs-daemon reads {fifo}")

    def run_experiment(self) -> None:
        _title("4. example experiment: logging through every path")
        fifo = self.root / "var/lib/walt/logs.fifo"
        _say("shell: 3 walt-log-echo-style writes to the FIFO (one open/write/close each)")
        runner.run(["sh", "-c", 'for i in 1 2 3; do '
                    'printf "LOG demo.shell step %s:  spaces\\tand tab kept\\n" "$i" > "$0"; '
                    'done', str(fifo)], timeout=STEP_TIMEOUT)
        self.expect("demo.shell", 3)
        runner.run(["sh", "-c", 'printf "TSLOG %s demo.shell with its own timestamp\\n" '
                    '"$(date +%s.%N)" > "$0"', str(fifo)], timeout=STEP_TIMEOUT)
        self.expect("demo.shell", 1)

        _say("Python API: walt_node.log.echo and logging.Handler")
        script = (
            "import logging\n"
            "from walt_node import log\n"
            "from walt_node.logstreams import WaltLogHandler\n"
            "for i in range(3):\n"
            "    log.echo('demo.python', f'measure {i}: {i * i}')\n"
            "logger = logging.getLogger('experiment')\n"
            "logger.addHandler(WaltLogHandler(stream='demo.logging'))\n"
            "logger.warning('a logging.Handler record')\n"
            "log.flush(10)\n"
        )
        runner.run([sys.executable, "-c", script], env=self.env, timeout=STEP_TIMEOUT)
        self.expect("demo.python", 3)
        self.expect("demo.logging", 1)

        _say("walt-node log: one line from the command line")
        self.walt_node("log", "demo.cli", "phase 1 done", check=True)
        self.expect("demo.cli", 1)

        self._monitor()
        self._serial()

    def _monitor(self) -> None:
        _say("walt-log-monitor: a command's output, shown and logged")
        done = self.walt_node("log-monitor", "--stream", "demo.monitor", "sh", "-c",
                              "echo monitored line 1; echo monitored line 2")
        _say("  | " + done.stdout.replace("\r", "").rstrip().replace("\n", "\n  | "))
        if done.returncode != 0:
            raise DemoFailed(f"walt-log-monitor exited with status {done.returncode}")
        self.expect("demo.monitor", 4)  # START, 2 lines, END

    def _serial(self) -> None:
        import termios
        import tty

        _say("walt-serial-autolog: a sensor mote printing on a (pseudo) serial line")
        mote, node_side = os.openpty()
        tty.setraw(node_side, termios.TCSANOW)
        autolog = self.start("serial-autolog", os.ttyname(node_side))
        time.sleep(0.3)
        for line in ("booting mote", "LOGSTART", "LOGDEF demo.temp T : {0} C in {room}",
                     "LOGVAR room lab-2", "T:21.5", "T:21.7", "noise that is not data"):
            os.write(mote, (line + "\r\n").encode())
        self.expect("demo.temp", 2)
        _wait_until(lambda: self._count("demo.temp") >= 2, "the mote's lines at the server")
        autolog.send_signal(signal.SIGTERM)
        autolog.wait(STEP_TIMEOUT)
        os.close(mote)
        os.close(node_side)

    def _count(self, stream: str) -> int:
        return sum(1 for record in self.sim.log_records() if record.stream == stream)

    def show_server_side(self) -> None:
        from walt_node.sim import format_realtime

        _title("5. what the server received (walt log show --realtime)")
        complete = lambda: all(self._count(s) >= n for s, n in self.expected.items())  # noqa: E731
        try:
            _wait_until(complete, "every line of the experiment at the server")
        finally:
            for record in self.sim.log_records():
                _say(format_realtime(record))
        _say(f"{sum(self.expected.values())} lines sent, "
             f"{sum(self._count(s) for s in self.expected)} received")

    def show_kexec_plans(self) -> None:
        from walt_node.sim.sample import NODE_MAC, OTHER_IMAGE

        _title("6. kexec reboot plan (--dry-run), before and after re-binding the node")
        for label in ("bound to its current image", f"re-bound to {OTHER_IMAGE}"):
            if label.startswith("re-bound"):
                self.sim.bind(NODE_MAC, OTHER_IMAGE)
            _say(f"--- node {label}:")
            done = self.walt_node("ipxe-kexec-reboot", "--dry-run")
            _say(done.stdout.rstrip())

    def blink(self) -> None:
        _title("7. blink a (fake) LED and restore it")
        trigger = self.root / "sys/class/leds/input0::capslock/trigger"
        for state in ("1", "0"):
            done = self.walt_node("blink", state)
            if done.returncode != 0:
                raise DemoFailed(f"blink {state} failed: {done.stdout.strip()}")
            _say(f"blink {state}: {trigger.name} = {trigger.read_text().strip()}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except runner.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="walt-node-demo-"))
    demo = Demo(base)
    try:
        demo.start_simulator()
        demo.make_node_root()
        demo.start_logs_daemon()
        demo.run_experiment()
        demo.show_server_side()
        demo.show_kexec_plans()
        demo.blink()
        _title("done: every step worked")
        return 0
    except (DemoFailed, runner.CommandFailed, runner.TimeoutExpired, OSError) as error:
        demo.stop()
        demo.show_service_logs()
        raise DemoFailed(str(error)) from error
    finally:
        demo.stop()
        if args.keep:
            _say(f"(kept {base})")
        else:
            shutil.rmtree(base, ignore_errors=True)

