"""Paths seen from outside an image tree: links resolved like a chroot, never out of the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from walt_node.paths import NODE, Paths, SymlinkLoop


@pytest.fixture
def image(tmp_path: Path) -> Paths:
    root = tmp_path / "image"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("in the image")
    os.symlink("/usr/bin", root / "bin")  # absolute, as on older layouts
    os.symlink("../../../../../../etc", root / "usr/up")  # climbs as far as it can
    os.symlink("/bin/tool", root / "usr/tool-link")
    return Paths(root)


def test_an_absolute_link_restarts_at_the_root(image: Paths) -> None:
    assert image.inside("/bin/tool") == image.root / "usr/bin/tool"
    assert image.inside("/bin/tool").read_text() == "in the image"


def test_dot_dot_never_climbs_above_the_root(image: Paths) -> None:
    assert image.inside("/usr/up/passwd") == image.root / "etc/passwd"


def test_the_last_component_is_followed_only_when_asked(image: Paths) -> None:
    assert image.inside("/usr/tool-link") == image.root / "usr/tool-link"
    assert image.followed("/usr/tool-link") == image.root / "usr/bin/tool"


def test_a_link_loop_is_an_error_naming_the_root(image: Paths) -> None:
    os.symlink("/loop", image.root / "loop")
    with pytest.raises(SymlinkLoop, match="too many levels of symbolic links below"):
        image.followed("/loop")


def test_as_node_names_a_location_as_the_image_does(image: Paths) -> None:
    assert image.as_node(image.inside("/bin/tool")) == "/usr/bin/tool"
    assert image.as_node(image.root) == "/"
    assert image.as_node(image.install_manifest) == str(NODE.install_manifest)
