"""Which options a kernel of the image was built with, read from the image.

Sources, best first: the kernel's ``config-<version>`` file (``/boot``, or
next to the kernel), the configuration embedded in the kernel itself
(CONFIG_IKCONFIG, between the ``IKCFG_ST``/``IKCFG_ED`` markers, found in the
kernel or in its compressed payload), and finally ``modules.builtin`` plus
the module files of ``/lib/modules/<version>``, which tell built-in (y) from
module (m) for options that build a module, and nothing about the others.
"""

from __future__ import annotations

import gzip
import lzma
import posixpath
import re
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from walt_node.imagecheck.tree import ImageTree

# Options that build one module, and the module's name (as in modules.builtin / modules.dep).
MODULE_OF_OPTION = {
    "CONFIG_OVERLAY_FS": "overlay",
    "CONFIG_NFS_FS": "nfs",
    "CONFIG_NFS_V3": "nfsv3",
    "CONFIG_BLK_DEV_NBD": "nbd",
}
IKCONFIG_START, IKCONFIG_END = b"IKCFG_ST", b"IKCFG_ED"
_VERSION_RE = re.compile(rb"Linux version (\S+) \(")
_CONFIG_LINE_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_MODULE_SUFFIX_RE = re.compile(r"\.ko(\.(gz|xz|zst))?$")
_PAYLOAD_MAGICS = ((b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"))
MAX_PAYLOAD = 256 << 20


@dataclass
class KernelConfig:
    source: str  # where the values come from, for the report
    values: Dict[str, str] = field(default_factory=dict)  # option -> "y", "m", "n"
    complete: bool = True  # False: options without a module cannot be told

    def value(self, option: str) -> Optional[str]:
        """"y", "m", "n", or None when this source cannot tell."""
        if option in self.values:
            return self.values[option]
        if self.complete or option in MODULE_OF_OPTION:
            return "n"
        return None


def parse_config(text: str) -> Dict[str, str]:
    values: Dict[str, str] = {}
    for line in text.splitlines():
        match = _CONFIG_LINE_RE.match(line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:-len(" is not set")]] = "n"
    return values


def payloads(data: bytes) -> Iterator[bytes]:
    """The kernel file itself, then each compressed stream inside it, decompressed."""
    yield data
    for magic, kind in _PAYLOAD_MAGICS:
        start = data.find(magic)
        tried = 0
        while start >= 0 and tried < 8:
            tried += 1
            unpacked = _decompress(data[start:], kind)
            if unpacked:
                yield unpacked
                break
            start = data.find(magic, start + 1)


def _decompress(data: bytes, kind: str) -> bytes:
    try:
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, MAX_PAYLOAD)
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data, MAX_PAYLOAD)
    except (zlib.error, lzma.LZMAError, EOFError):
        return b""


def kernel_version(data: bytes) -> Optional[str]:
    """The release (``uname -r``) of a kernel image: x86 bzImage header, else its banner."""
    if data[0x202:0x206] == b"HdrS" and len(data) > 0x210:
        offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
        if offset < len(data):
            text = data[offset:offset + 256].split(b"\0", 1)[0].decode("ascii", errors="replace")
            if text.split():
                return text.split()[0]
    for payload in payloads(data):
        match = _VERSION_RE.search(payload)
        if match:
            return match.group(1).decode("ascii", errors="replace")
    return None


def embedded_config(data: bytes) -> Optional[str]:
    """The CONFIG_IKCONFIG text embedded in a kernel (or a configs.ko), if any."""
    for payload in payloads(data):
        start = payload.find(IKCONFIG_START)
        if start < 0:
            continue
        end = payload.find(IKCONFIG_END, start)
        if end < 0:
            continue
        try:
            return gzip.decompress(payload[start + len(IKCONFIG_START):end]).decode(
                "utf-8", errors="replace")
        except (OSError, EOFError):
            continue
    return None


def _modules_config(tree: ImageTree, version: str) -> Optional[KernelConfig]:
    base = f"/lib/modules/{version}"
    builtin = tree.read_text(f"{base}/modules.builtin")
    if builtin is None:
        return None
    values: Dict[str, str] = {}
    builtin_names = {_module_name(line) for line in builtin.split()}
    module_names = {_module_name(path) for path in tree.walk_files(base)
                    if _MODULE_SUFFIX_RE.search(path)}
    for option, module in MODULE_OF_OPTION.items():
        if module in builtin_names:
            values[option] = "y"
        elif module in module_names:
            values[option] = "m"
    return KernelConfig(f"{base}/modules.builtin and module files", values, complete=False)


def _module_name(path: str) -> str:
    return _MODULE_SUFFIX_RE.sub("", posixpath.basename(path)).replace("-", "_")


def module_present(tree: ImageTree, version: str, module: str) -> bool:
    return any(_module_name(path) == module for path in tree.walk_files(f"/lib/modules/{version}")
               if _MODULE_SUFFIX_RE.search(path))


def find_config(tree: ImageTree, kernel_path: str, data: bytes) -> Optional[KernelConfig]:
    """The best configuration source for the kernel at ``kernel_path`` (contents ``data``)."""
    version = kernel_version(data)
    candidates: List[str] = []
    if version:
        candidates += [f"/boot/config-{version}",
                       posixpath.join(posixpath.dirname(kernel_path), f"config-{version}")]
    candidates.append(posixpath.join(posixpath.dirname(kernel_path), "config"))
    for path in candidates:
        text = tree.read_text(path)
        if text is not None and "CONFIG_" in text:
            return KernelConfig(path, parse_config(text))
    text = embedded_config(data)
    if text is not None:
        return KernelConfig(f"{kernel_path} (embedded IKCONFIG)", parse_config(text))
    if version:
        return _modules_config(tree, version)
    return None
