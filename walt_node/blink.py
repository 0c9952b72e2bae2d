"""``/bin/blink 1|0`` (``walt-node blink``): make an LED blink so a person finds the node.

Standard library only, and little of it: the server runs this on every
``walt node blink`` (docs/protocols.md §7).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from walt_node.config import read_key_values
from walt_node.errors import WaltNodeError
from walt_node.files import write_atomically
from walt_node.paths import Paths, live_process_file

PREFERRED_LEDS = ("ACT", "led0")  # Raspberry Pi activity LED (newer, older kernels)
NAME_HINTS = ("act", "status", "power", "pwr")
INPUT_LED_SUFFIXES = ("capslock", "numlock", "scrolllock")
BLINK_TRIGGERS = ("heartbeat", "timer")
TRIGGER_MODULES = {"heartbeat": "ledtrig-heartbeat", "timer": "ledtrig-timer"}
TOGGLER_MARK = "walt-node-blink-toggler"
STATE_FILE = "blink.json"


class BlinkError(WaltNodeError):
    pass


# --- configuration and LED choice -------------------------------------------

def list_leds(leds_dir: Path) -> List[str]:
    try:
        names = sorted(os.listdir(leds_dir))
    except OSError:
        return []
    return [name for name in names if os.path.exists(os.path.join(leds_dir, name, "trigger"))]


def choose_led(paths: Paths, conf: Dict[str, str]) -> Path:
    names = list_leds(paths.leds)
    wanted = conf.get("led")
    if wanted:
        if wanted not in names:
            raise BlinkError(f"{paths.blink_conf} names LED '{wanted}', which is not in "
                             f"{paths.leds} (present: {', '.join(names) or 'none'})")
        return paths.leds / wanted
    if not names:
        raise BlinkError(f"no LED to blink: {paths.leds} has no LED with a trigger file "
                         f"(if the node has one, name it with 'led = NAME' in {paths.blink_conf})")
    return paths.leds / pick(names)


def pick(names: List[str]) -> str:
    """The documented choice among LED names (see DESCRIPTION)."""
    for name in PREFERRED_LEDS:
        if name in names:
            return name
    for hint in NAME_HINTS:
        for name in names:
            if hint in name.lower():
                return name
    for name in names:
        if name.lower().endswith(INPUT_LED_SUFFIXES):
            return name
    return names[0]


# --- sysfs -------------------------------------------------------------------

def read_triggers(led: Path) -> Tuple[str, List[str]]:
    """(current trigger, offered triggers) from ``trigger``: 'none [mmc0] heartbeat'."""
    words = _read(led / "trigger").split()
    current = next((word[1:-1] for word in words if word.startswith("[") and word.endswith("]")),
                   words[0] if len(words) == 1 else "none")
    return current, [word.strip("[]") for word in words]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as error:
        raise BlinkError(f"cannot read {path}: {error.strerror}") from None


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as sysfs:
            sysfs.write(value)
    except OSError as error:
        hint = " (run as root)" if isinstance(error, PermissionError) else ""
        raise BlinkError(f"cannot write '{value}' to {path}: {error.strerror}{hint}") from None


# --- state -------------------------------------------------------------------

def state_path(paths: Paths) -> Path:
    return paths.run_walt_node / STATE_FILE


def load_state(paths: Paths) -> Optional[dict]:
    try:
        return json.loads(state_path(paths).read_text())
    except (OSError, ValueError):
        return None


def save_state(paths: Paths, state: dict) -> None:
    path = state_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(state))  # the original trigger is never half-saved


# --- blink 1 / blink 0 --------------------------------------------------------

def blink_on(paths: Paths) -> str:
    conf = read_key_values(paths.blink_conf)
    led = choose_led(paths, conf)
    state = load_state(paths)
    if state is not None and state.get("led") != led.name:
        blink_off(paths)  # the configured LED changed: put the old one back first
        state = None
    if state is None:
        current, _ = read_triggers(led)
        state = {"led": led.name, "trigger": current,
                 "brightness": _read(led / "brightness") if (led / "brightness").exists() else None}
        save_state(paths, state)
    how = start_blinking(led, conf.get("trigger"), state)
    save_state(paths, state)
    return f"LED {led.name} blinks ({how}); 'blink 0' restores trigger '{state['trigger']}'"


def start_blinking(led: Path, wanted: Optional[str], state: dict) -> str:
    choices = (wanted,) if wanted else BLINK_TRIGGERS
    _, offered = read_triggers(led)
    for trigger in choices:
        if trigger not in offered and trigger in TRIGGER_MODULES and _modprobe(TRIGGER_MODULES[trigger]):
            _, offered = read_triggers(led)
        if trigger in offered:
            _write(led / "trigger", trigger)
            return f"trigger {trigger}"
    if state.get("toggler_pid") and _is_toggler(state["toggler_pid"]):
        return "brightness toggled in the background"
    state["toggler_pid"] = _start_toggler(led)
    return "brightness toggled in the background (no blink trigger offered)"


def _modprobe(module: str) -> bool:
    from walt_node.runner import CommandFailed, CommandMissing, run

    try:
        run(["modprobe", module], timeout=5)
        return True
    except (CommandFailed, CommandMissing):
        return False


_TOGGLER = """
import sys, time
path, high = sys.argv[1], sys.argv[2]
on = False
while True:
    on = not on
    with open(path, "w") as f:
        f.write(high if on else "0")
    time.sleep(0.5)
"""


def _start_toggler(led: Path) -> int:
    from walt_node import runner

    _write(led / "trigger", "none")
    high = _read(led / "max_brightness") if (led / "max_brightness").exists() else "1"
    process = runner.start([sys.executable, "-c", _TOGGLER, str(led / "brightness"), high,
                            TOGGLER_MARK], new_session=True,
                           stdin=runner.DEVNULL, stdout=runner.DEVNULL, stderr=runner.DEVNULL)
    return process.pid


def _is_toggler(pid: int) -> bool:
    try:
        with open(live_process_file(pid, "cmdline"), "rb") as cmdline:
            return TOGGLER_MARK.encode() in cmdline.read()
    except (OSError, ValueError):
        return False


def blink_off(paths: Paths) -> str:
    state = load_state(paths)
    if state is None:
        choose_led(paths, read_key_values(paths.blink_conf))  # no LED at all is still an error
        return "not blinking: nothing to restore"
    led = paths.leds / str(state.get("led"))
    pid = state.get("toggler_pid")
    if pid and _is_toggler(pid):
        import signal

        os.kill(int(pid), signal.SIGTERM)
    _write(led / "trigger", state["trigger"])
    if state["trigger"] == "none" and state.get("brightness") is not None:
        # with no trigger the brightness is the LED's state; with one, writing it would
        # remove the trigger again
        _write(led / "brightness", state["brightness"])
    state_path(paths).unlink()
    return f"LED {led.name} restored to trigger '{state['trigger']}'"


def apply(value: str, paths: Optional[Paths] = None) -> str:
    """``blink 1`` or ``blink 0``; what was done (BlinkError, ConfigError: why not)."""
    paths = paths or Paths.from_env()
    return blink_on(paths) if value == "1" else blink_off(paths)
