"""What can be told about an image's binaries by reading them, never running them
(an image is often built for another CPU): ELF program headers, busybox applets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

ELF_MAGIC = b"\x7fELF"
PT_INTERP = 3
# Busybox keeps its applet names as one sorted run of NUL-terminated words.
_APPLET_RUN_RE = re.compile(rb"(?:[a-z0-9_.\[\]-]{1,40}\x00){20,}")


class NotElf(ValueError):
    pass


@dataclass(frozen=True)
class ElfInfo:
    bits: int
    little_endian: bool
    interpreter: Optional[str]  # the program interpreter (dynamic loader), None if static

    @property
    def static(self) -> bool:
        return self.interpreter is None


def elf_info(data: bytes) -> ElfInfo:
    """Class, byte order and program interpreter of an ELF file (32 or 64 bits, any order)."""
    if len(data) < 52 or data[:4] != ELF_MAGIC or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise NotElf("not an ELF file")
    bits = 64 if data[4] == 2 else 32
    order = "little" if data[5] == 1 else "big"

    def number(offset: int, size: int) -> int:
        return int.from_bytes(data[offset:offset + size], order)

    if bits == 64:
        phoff, entry_size, count = number(32, 8), number(54, 2), number(56, 2)
    else:
        phoff, entry_size, count = number(28, 4), number(42, 2), number(44, 2)
    for index in range(count):
        header = phoff + index * entry_size
        if header + entry_size > len(data):
            raise NotElf("truncated ELF program headers")
        if number(header, 4) != PT_INTERP:
            continue
        offset = number(header + 8, 8) if bits == 64 else number(header + 4, 4)
        size = number(header + 32, 8) if bits == 64 else number(header + 16, 4)
        return ElfInfo(bits, order == "little", data[offset:offset + size].rstrip(b"\0").decode(
            "utf-8", errors="replace"))
    return ElfInfo(bits, order == "little", None)


def is_static_elf(data: bytes) -> bool:
    """True for an ELF file without a program interpreter (nothing to load it but the kernel)."""
    try:
        return elf_info(data).static
    except NotElf:
        return False


def busybox_applets(data: bytes) -> List[str]:
    """The applet names compiled into a busybox binary (empty if none are found)."""
    best: List[str] = []
    for match in _APPLET_RUN_RE.finditer(data):
        words = [word.decode() for word in match.group(0).split(b"\x00")[:-1]]
        # keep the longest sorted stretch of this run: that is the applet table
        start = 0
        for index in range(1, len(words) + 1):
            if index == len(words) or words[index] <= words[index - 1]:
                if index - start > len(best):
                    best = words[start:index]
                start = index
    return best if len(best) >= 20 else []
