"""`walt-node setup --install-packages`: the Debian packages the services use."""

from __future__ import annotations

import os
from typing import Callable, List

from walt_node import runner
from walt_node.install import InstallError
from walt_node.paths import NODE, Paths

# Programs behind the optional services: LLDP reporting, NBD swap, kexec reboots.
PACKAGES = ("lldpd", "nbd-client", "kexec-tools")
APT_TIMEOUT = 900.0


def apt_command(image: Paths, in_prefix: bool) -> List[str]:
    if not image.followed(NODE.apt_get).exists():
        raise InstallError(
            "--install-packages works on Debian-based images (apt-get) only; install "
            + ", ".join(PACKAGES) + " with the image's own package manager"
        )
    argv = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    # An image tree is not the running system: run its own apt inside it.
    return ["chroot", str(image.root), *argv] if in_prefix else argv


def install(image: Paths, in_prefix: bool, dry_run: bool, say: Callable[[str], None]) -> None:
    argv = apt_command(image, in_prefix)
    if dry_run:
        say("would run: " + " ".join(argv))
        return
    say("running: " + " ".join(argv))
    try:
        runner.run(argv, timeout=APT_TIMEOUT, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (runner.CommandFailed, runner.CommandMissing) as error:
        raise InstallError(f"installing {', '.join(PACKAGES)} failed: {error}") from None

