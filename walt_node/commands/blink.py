"""`walt-node blink` command; the work is in :mod:`walt_node.blink`."""

from __future__ import annotations

import sys
from typing import List, Optional

from walt_node.blink import apply
from walt_node.errors import WaltNodeError, report

DESCRIPTION = """\
blink 1: make an LED of this node blink; blink 0: put it back as it was.
The WalT server runs '/bin/blink 1' and '/bin/blink 0' for 'walt node blink'.

Which LED (first match):
  1. 'led = NAME' in /etc/walt/blink.conf;
  2. ACT, then led0 (the Raspberry Pi activity LED);
  3. among /sys/class/leds/*, in name order: a name containing 'act', then
     'status', then 'power' or 'pwr';
  4. a keyboard LED (name ending in capslock, numlock, scrolllock);
  5. the first LED by name.

blink 1 saves the LED's current trigger (the [bracketed] one) and brightness
in /run/walt-node/blink.json, unless it is already blinking (so repeated
'blink 1' keeps the original), then sets the 'heartbeat' trigger, else
'timer' ('trigger = timer' in blink.conf chooses).  If the kernel offers
neither, it tries 'modprobe ledtrig-heartbeat' / 'modprobe ledtrig-timer',
and as a last resort toggles the brightness from a small background process.
blink 0 restores exactly the saved trigger (and the brightness when that
trigger was 'none'), and stops the background process.

Exit status 1 with a message when there is no LED (or it cannot be written):
the server then reports the failure to the user.

Examples:
  blink 1
  blink 0
"""


def add_arguments(parser) -> None:
    parser.add_argument("value", choices=("1", "0"), help="1: blink; 0: restore")


def run(args) -> int:
    sys.stdout.write(apply(args.value) + "\n")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """/bin/blink: parsed by hand, to start fast."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        sys.stdout.write("usage: blink 1|0\n\n" + DESCRIPTION)
        return 0
    if len(argv) != 1 or argv[0] not in ("1", "0"):
        return report("blink", WaltNodeError(f"usage: blink 1|0 (got: {' '.join(argv) or 'nothing'})",
                                             exit_status=2))
    try:
        sys.stdout.write(apply(argv[0]) + "\n")
    except WaltNodeError as error:  # BlinkError, ConfigError
        return report("blink", error)
    return 0
