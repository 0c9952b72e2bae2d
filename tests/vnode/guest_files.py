"""Configuration files written into the guest's base root filesystem.

Kept apart from the build steps so their text is part of the base cache key:
editing anything here rebuilds the cached base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

HOSTNAME = "node1"

# The harness's command channel: a non-interactive bash reading commands from
# the second serial port.  The port is put in raw mode without echo, so what
# comes back is exactly the commands' output and the harness's end markers.
SHELL_SCRIPT = """#!/bin/bash
# One open of the port for everything: input arriving between two opens
# could otherwise be dropped by the line discipline.
exec </dev/ttyS1 >/dev/ttyS1 2>&1
stty raw -echo 115200
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
cd /root
echo "@@VNODE-SHELL-READY@@"
# Through a pipe, so bash is not interactive: no prompt, no line editing.
cat | bash --noprofile --norc
"""

SHELL_UNIT = """[Unit]
Description=Root command shell of the vnode test harness on ttyS1
After=systemd-udevd.service
DefaultDependencies=no

[Service]
ExecStart=/usr/local/sbin/vnode-shell
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""

FILES: Dict[str, str] = {
    "etc/hostname": HOSTNAME + "\n",
    "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n",
    "etc/fstab": "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
    "etc/systemd/network/20-wired.network": NETWORK,
    "etc/systemd/system/vnode-shell.service": SHELL_UNIT,
    "usr/local/sbin/vnode-shell": SHELL_SCRIPT,
    # Debian's kexec-tools would otherwise turn every plain `reboot` into a
    # kexec of the running kernel, hiding whether walt-reboot used kexec.
    "etc/default/kexec": "LOAD_KEXEC=false\nUSE_GRUB_CONFIG=false\n",
    # No time wasted on a serial getty nobody uses; the harness has its shell.
    "etc/systemd/journald.conf.d/vnode.conf": "[Journal]\nStorage=volatile\n",
}

EXECUTABLES = ("usr/local/sbin/vnode-shell",)


def write_guest_files(root: Path) -> None:
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for relative in EXECUTABLES:
        (root / relative).chmod(0o755)
    # The guest's console getty is of no use to the harness and costs CPU.
    # Debian's kexec-tools boot script costs ~30 s of TCG time at each boot, for a
    # job (kexec at shutdown) that is switched off above anyway.
    # e2scrub_reap (e2fsprogs) holds the boot for ~20 s of TCG time, for nothing here.
    for unit in ("serial-getty@ttyS0.service", "kexec-load.service", "kexec.service",
                 "e2scrub_reap.service"):
        mask = root / "etc/systemd/system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")
