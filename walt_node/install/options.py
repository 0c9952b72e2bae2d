"""Opt-in parts of an installation, for the optional features of the WalT page
"Creating a WalT image from scratch" that walt-node does not run itself:

- ``--time-sync ptp`` (feature 2): the walt-ptp unit, ptp4l as a slave of the
  server (domain 42) on the interface that reaches it, /etc/walt/ptp4l.conf;
- ``--time-sync ntp`` (feature 2, the page's fallback): systemd-timesyncd asks
  the server, whose address the server itself fills in (image.spec template);
- ``--cpuinfo FILE`` (feature 8): FILE, captured on a node with
  ``walt-node cpuinfo``, installed as /etc/cpuinfo;
- ``--image-shell`` (feature 9): /bin/walt-image-shell-start and -shutdown,
  which boot the image's systemd inside ``walt image shell``'s container.

An option chosen once stays on at later runs of setup (an upgrade keeps it)
until it is turned off (``--time-sync none``, ``--no-cpuinfo``,
``--no-image-shell``) or ``--uninstall`` removes everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from walt_node.install import InstallError
from walt_node.install.plan import Item, Plan, Target, wanted_by_targets
from walt_node.paths import NODE, Paths

TIME_SYNC_CHOICES = ("ptp", "ntp", "none")
PTP_UNIT = "walt-ptp.service"
PTP_CONFIG = str(NODE.ptp4l_conf)
PTP4L = str(NODE.ptp4l_program)
TIMESYNCD = str(NODE.timesyncd_program)
TIMESYNCD_DROPIN = str(NODE.timesyncd_dropin)
CPUINFO = str(NODE.etc_cpuinfo)
IMAGE_SHELL_SCRIPTS = tuple(str(NODE.bin_dir / name) for name in
                            ("walt-image-shell-start", "walt-image-shell-shutdown"))


@dataclass
class Options:
    time_sync: str = "none"
    cpuinfo: Optional[bytes] = None  # the content of /etc/cpuinfo, None: not installed
    image_shell: bool = False
    templates: List[str] = field(default_factory=list)  # files the server must fill in


def previous_options(image: Paths, installed: Dict[str, dict]) -> Options:
    """The options an earlier setup installed (``installed``: its manifest entries)."""
    options = Options()
    if any(path.endswith(f"/{PTP_UNIT}") for path in installed):
        options.time_sync = "ptp"
    elif TIMESYNCD_DROPIN in installed:
        options.time_sync = "ntp"
    if CPUINFO in installed and image.inside(CPUINFO).is_file():
        options.cpuinfo = image.inside(CPUINFO).read_bytes()
    options.image_shell = all(path in installed for path in IMAGE_SHELL_SCRIPTS)
    return options


def add_options(plan: Plan, target: Target, options: Options, image: Paths, data: Path) -> None:
    optional = data / "optional"
    needs_systemd = [name for name, wanted in (("--time-sync", options.time_sync != "none"),
                                               ("--image-shell", options.image_shell)) if wanted]
    if needs_systemd and target.init != "systemd":
        raise InstallError(f"{' and '.join(needs_systemd)} need a systemd image; this one uses "
                           f"{target.init} init")
    if options.time_sync == "ptp":
        _add_ptp(plan, target, image, optional)
    elif options.time_sync == "ntp":
        _require(image, TIMESYNCD, "--time-sync ntp uses systemd-timesyncd: apt-get install "
                                   "systemd-timesyncd in the image")
        plan.items.append(Item(TIMESYNCD_DROPIN, "file", (optional / "timesyncd.conf").read_bytes()))
        options.templates.append(TIMESYNCD_DROPIN)
    if options.cpuinfo is not None:
        plan.items.append(Item(CPUINFO, "file", options.cpuinfo, 0o644))
    if options.image_shell:
        for path in IMAGE_SHELL_SCRIPTS:
            script = optional / path.rsplit("/", 1)[1]
            plan.items.append(Item(path, "file", script.read_bytes(), 0o755))


def _add_ptp(plan: Plan, target: Target, image: Paths, optional: Path) -> None:
    _require(image, PTP4L, "--time-sync ptp uses linuxptp's ptp4l: apt-get install linuxptp "
                           "in the image")
    text = (optional / PTP_UNIT).read_text().replace("@WALT_NODE@", target.walt_node)
    unit_path = f"{target.unit_dir}/{PTP_UNIT}"
    plan.items.append(Item(PTP_CONFIG, "file", (optional / "ptp4l.conf").read_bytes()))
    plan.items.append(Item(unit_path, "file", text.encode(), 0o644, unit=PTP_UNIT))
    for wanted_by in wanted_by_targets(text, PTP_UNIT):
        plan.items.append(Item(f"{target.unit_dir}/{wanted_by}.wants/{PTP_UNIT}", "symlink",
                               target=unit_path))


def _require(image: Paths, path: str, hint: str) -> None:
    if not image.followed(path).exists():
        raise InstallError(f"{path} is not in the image: {hint}")
