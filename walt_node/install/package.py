"""The files of the Debian package, from the same plan as `walt-node setup`.

The package build (debian/rules) runs ``python3 -m walt_node.install.package
DESTDIR``: the units go to /lib/systemd/system, where dh_installsystemd finds
them and enables and starts them through deb-systemd-helper; the /bin scripts
run Debian's python3; /var/lib/walt, the FIFO's directory, is a package
directory.  Enable links are left to dh_installsystemd, so that dpkg (or its
helpers) knows every file the package puts in an image.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from walt_node.install.dpkg import PACKAGE_WALT_NODE
from walt_node.install.environment import data_dir
from walt_node.install.plan import Item, Target, build_plan
from walt_node.paths import NODE

# What the packaged services and scripts run: Debian's python3 and the package's walt-node.
PACKAGE_PYTHON = str(NODE.usr_bin / "python3")
PACKAGE_UNIT_DIR = str(NODE.lib_systemd_system)


def package_items() -> List[Item]:
    """The plan of a systemd image, with the units where packages keep theirs and no enable links."""
    target = Target(init="systemd", walt_node=PACKAGE_WALT_NODE, interpreter=PACKAGE_PYTHON,
                    available_commands=[])
    items = []
    for item in build_plan(target, data_dir()).items:
        if item.kind == "symlink":
            continue  # enable links: dh_installsystemd
        if item.unit:
            item = Item(f"{PACKAGE_UNIT_DIR}/{item.unit}", item.kind, item.content, item.mode, unit=item.unit)
        items.append(item)
    return items


def stage(destdir: Path) -> List[str]:
    """Write the package's files below ``destdir`` (the package build tree); returns their paths."""
    written = []
    for item in package_items():
        host = destdir / item.path.lstrip("/")
        if item.kind == "dir":
            host.mkdir(parents=True, exist_ok=True)
            os.chmod(host, item.mode)
        else:
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_bytes(item.content)
            os.chmod(host, item.mode)
        written.append(item.path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m walt_node.install.package", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destdir", type=Path, help="root of the package build tree (debian/walt-node)")
    args = parser.parse_args(argv)
    for path in stage(args.destdir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
