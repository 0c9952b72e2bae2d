"""/bin/blink on a fake sysfs LED tree under a temporary WALT_NODE_ROOT.

A regular file cannot behave like sysfs, so after each write the test plays the
kernel's part (:func:`kernel_accepts`): the trigger written becomes the
[bracketed] one in the list the file shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from support.kexec import Recorder
from support.wait import wait_until

from walt_node.blink import pick

BLINK = Path(__file__).parent.parent / "bin" / "blink"
OFFERED = ["none", "kbd-capslock", "mmc0", "timer", "heartbeat"]


def make_led(root: Path, name: str, current: str = "mmc0", offered: List[str] = OFFERED,
             brightness: str = "0") -> Path:
    led = root / "sys" / "class" / "leds" / name
    led.mkdir(parents=True)
    show_triggers(led, current, offered)
    (led / "brightness").write_text(brightness + "\n")
    (led / "max_brightness").write_text("255\n")
    return led


def show_triggers(led: Path, current: str, offered: List[str]) -> None:
    words = [f"[{t}]" if t == current else t for t in offered]
    (led / "trigger").write_text(" ".join(words) + "\n")


def kernel_accepts(led: Path, offered: List[str] = OFFERED) -> str:
    """What blink wrote to ``trigger``; then show it the way the kernel would."""
    written = (led / "trigger").read_text().strip()
    assert written in offered, f"blink wrote {written!r}, not an offered trigger"
    show_triggers(led, written, offered)
    return written


def blink(root: Path, *args: str, env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WALT_NODE_ROOT": str(root), **(env or {})}
    return subprocess.run([sys.executable, str(BLINK), *args], env=full_env, text=True,
                          capture_output=True, timeout=20)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sys" / "class" / "leds").mkdir(parents=True)
    return tmp_path / "root"


def test_blink_sets_heartbeat_and_restores_the_exact_trigger(root) -> None:
    led = make_led(root, "ACT", current="mmc0")
    make_led(root, "input3::capslock", current="kbd-capslock")
    done = blink(root, "1")
    assert done.returncode == 0, done.stderr
    assert "LED ACT blinks (trigger heartbeat)" in done.stdout
    assert kernel_accepts(led) == "heartbeat"
    done = blink(root, "0")
    assert done.returncode == 0, done.stderr
    assert kernel_accepts(led) == "mmc0"
    assert not (root / "run" / "walt-node" / "blink.json").exists()
    # the other LED was never touched
    assert "[kbd-capslock]" in (root / "sys/class/leds/input3::capslock/trigger").read_text()


def test_repeated_blink_1_keeps_the_original_trigger(root) -> None:
    led = make_led(root, "led0", current="mmc0")
    for _ in range(3):
        assert blink(root, "1").returncode == 0
        assert kernel_accepts(led) == "heartbeat"
    assert blink(root, "0").returncode == 0
    assert kernel_accepts(led) == "mmc0"
    done = blink(root, "0")  # nothing saved any more: a harmless no-op
    assert done.returncode == 0 and "not blinking" in done.stdout
    assert "[mmc0]" in (led / "trigger").read_text()


def test_timer_when_heartbeat_is_not_offered_and_brightness_restored_with_none(root) -> None:
    offered = ["none", "timer"]
    led = make_led(root, "pwr", current="none", offered=offered, brightness="255")
    assert blink(root, "1").returncode == 0
    assert kernel_accepts(led, offered) == "timer"
    (led / "brightness").write_text("0\n")  # the timer trigger left it off
    assert blink(root, "0").returncode == 0
    assert kernel_accepts(led, offered) == "none"
    assert (led / "brightness").read_text().strip() == "255"


def test_no_led_is_an_error_naming_the_directory(root) -> None:
    done = blink(root, "1")
    assert done.returncode == 1
    assert "no LED to blink" in done.stderr and "sys/class/leds" in done.stderr
    assert blink(root, "0").returncode == 1


def test_config_names_the_led_and_a_wrong_name_is_reported(root) -> None:
    make_led(root, "ACT")
    kbd = make_led(root, "input3::numlock", current="none")
    conf = root / "etc" / "walt" / "blink.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("led = input3::numlock  # the front panel one\n")
    assert blink(root, "1").returncode == 0
    assert kernel_accepts(kbd) == "heartbeat"
    assert blink(root, "0").returncode == 0
    conf.write_text("led = nosuch\n")
    done = blink(root, "1")
    assert done.returncode == 1
    assert "names LED 'nosuch'" in done.stderr and "ACT" in done.stderr


def test_modprobe_then_toggling_when_no_blink_trigger_exists(root, tmp_path) -> None:
    offered = ["none", "mmc0"]
    led = make_led(root, "status", current="mmc0", offered=offered)
    recorder = Recorder(tmp_path)
    env = {**recorder.env, "WALT_TEST_STATUS_MODPROBE": "1"}  # the modules are not there
    done = blink(root, "1", env=env)
    assert done.returncode == 0, done.stderr
    assert "brightness toggled in the background" in done.stdout
    assert recorder.argvs() == [["modprobe", "ledtrig-heartbeat"], ["modprobe", "ledtrig-timer"]]
    toggler = json.loads((root / "run/walt-node/blink.json").read_text())["toggler_pid"]
    try:
        seen = set()

        def both_values_seen() -> bool:
            value = (led / "brightness").read_text().strip()
            if value:  # empty: read between the toggler's truncate and write
                seen.add(value)
            return seen == {"0", "255"}

        assert wait_until(both_values_seen, 10, step=0.1), seen  # it really toggles
    finally:
        done = blink(root, "0", env=env)
    assert done.returncode == 0
    assert kernel_accepts(led, offered) == "mmc0"
    # nothing writes the LED any more: its toggler is gone (not merely asleep)
    assert wait_until(lambda: not _alive(toggler), 10), f"toggler {toggler} still runs"


def test_usage_errors(root) -> None:
    assert blink(root).returncode == 2
    assert "usage: blink 1|0" in blink(root, "2").stderr
    assert "Which LED" in blink(root, "--help").stdout


@pytest.mark.parametrize("names, chosen", [
    (["input3::capslock", "led0", "ACT"], "ACT"),
    (["input3::capslock", "led0"], "led0"),
    (["input3::capslock", "platform::power", "sys::status"], "sys::status"),
    (["input3::capslock", "platform::power"], "platform::power"),
    (["zz", "input3::scrolllock"], "input3::scrolllock"),
    (["zz", "mmc0::", "yy"], "mmc0::"),
])
def test_led_choice_rule(names: List[str], chosen: str) -> None:
    assert pick(sorted(names)) == chosen


def test_walt_node_blink_is_the_same_command(root) -> None:
    led = make_led(root, "ACT")
    env = {**os.environ, "WALT_NODE_ROOT": str(root)}
    for value, trigger in (("1", "heartbeat"), ("0", "mmc0")):
        done = subprocess.run([sys.executable, "-m", "walt_node", "blink", value], env=env,
                              text=True, capture_output=True, timeout=20)
        assert done.returncode == 0, done.stderr
        assert kernel_accepts(led) == trigger


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"  # a zombie has stopped writing
    except FileNotFoundError:
        return False
