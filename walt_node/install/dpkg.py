"""What dpkg's database says about the Debian package walt-node in an image.

Read directly from /var/lib/dpkg (the image may be a tree under --prefix,
where running dpkg-query would ask the host's database instead).
"""

from __future__ import annotations

from typing import Dict, Set

from walt_node.paths import NODE, Paths

PACKAGE = "walt-node"
PACKAGE_WALT_NODE = str(NODE.usr_bin / "walt-node")


def package_files(image: Paths) -> Set[str]:
    """Paths dpkg records as installed by the package walt-node (empty if it is not installed)."""
    listing = image.inside(f"{NODE.dpkg_info}/{PACKAGE}.list")
    if not listing.is_file():
        return set()
    return {line for line in listing.read_text(errors="replace").splitlines() if line.startswith("/")}


def package_installed(image: Paths) -> bool:
    return PACKAGE_WALT_NODE in package_files(image)


def diversions(image: Paths) -> Dict[str, str]:
    """path -> diverted-to path, for the diversions the package walt-node holds."""
    database = image.inside(str(NODE.dpkg_diversions))
    if not database.is_file():
        return {}
    lines = database.read_text(errors="replace").splitlines()
    triples = zip(lines[0::3], lines[1::3], lines[2::3])
    return {path: diverted for path, diverted, package in triples if package == PACKAGE}
