"""The content an image's ``/etc/cpuinfo`` should have: a node's own ``/proc/cpuinfo``.

``walt image shell`` runs on the server's CPU; when the image has
``/etc/cpuinfo``, the server bind-mounts it over ``/proc/cpuinfo`` so that
programs guessing the architecture from it (yum...) see the node's CPU.
"""

from __future__ import annotations

import re

from walt_node.errors import WaltNodeError
from walt_node.paths import Paths

_PROCESSOR_LINE = re.compile(r"^processor\s*:", re.IGNORECASE | re.MULTILINE)


class NotCpuinfo(WaltNodeError):
    """The text read is not a /proc/cpuinfo."""


def check_cpuinfo(text: str, source: str) -> str:
    if not _PROCESSOR_LINE.search(text):
        raise NotCpuinfo(f"{source} does not look like /proc/cpuinfo (no 'processor' line)")
    return text


def capture(paths: Paths) -> str:
    """This machine's /proc/cpuinfo, checked."""
    source = paths.proc_cpuinfo
    try:
        text = source.read_text()
    except OSError as error:
        raise NotCpuinfo(f"cannot read {source}: {error.strerror}") from None
    return check_cpuinfo(text, str(source))
