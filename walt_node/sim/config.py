"""What the simulated platform holds: nodes and images (dataclasses + JSON loading).

A config file is small JSON::

    {"nodes":  [{"mac": "52:54:00:12:34:56", "name": "node1", "ip": "127.0.0.1",
                 "model": "pc-x86-64", "image": "waltplatform/pc-x86-64-default:latest",
                 "conf": {"kexec.allow": true}}],
     "images": [{"fullname": "waltplatform/pc-x86-64-default:latest",
                 "id": "a1b2c3...", "boot_dir": "images/default/boot"}]}

Relative ``boot_dir`` paths are relative to the config file.  The same
fields can be given on the command line as ``key=value,key=value`` specs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from walt_node.errors import WaltNodeError

DEFAULT_CONF: Dict[str, Any] = {"kexec.allow": True}
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class SimConfigError(WaltNodeError, ValueError):
    """The simulator configuration is wrong; the message names the field."""


def normalize_mac(text: str, where: str = "mac") -> str:
    mac = str(text).strip().lower().replace("-", ":")
    if not _MAC_RE.match(mac):
        raise SimConfigError(f"{where}: '{text}' is not a MAC address (expected aa:bb:cc:dd:ee:ff)")
    return mac


@dataclass
class SimNode:
    mac: str
    name: str
    ip: str
    model: str
    image: str
    conf: Dict[str, Any] = field(default_factory=dict)
    netmask: str = "255.255.255.0"
    gateway: str = ""
    virtual: bool = False
    booted: bool = True

    def __post_init__(self) -> None:
        self.mac = normalize_mac(self.mac, f"node {self.name!r} mac")
        for name in ("name", "ip", "model", "image"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SimConfigError(f"node {self.mac}: '{name}' must be a non-empty string")
        if not isinstance(self.conf, dict):
            raise SimConfigError(f"node {self.name}: 'conf' must be an object (key -> value)")

    def full_conf(self) -> Dict[str, Any]:
        """Node settings as the server reports them: WalT defaults, then this node's."""
        return {**DEFAULT_CONF, **self.conf}


@dataclass
class SimImage:
    fullname: str
    id: str
    boot_dir: Path
    created: str = "2024-01-01 00:00:00"
    compatibility: Optional[List[str]] = None  # None: the model directories of boot_dir

    def __post_init__(self) -> None:
        if not isinstance(self.fullname, str) or not re.match(r"^[^/\s]+/[^/\s:]+:[^/\s:]+$",
                                                               self.fullname):
            raise SimConfigError(f"image fullname '{self.fullname}' must look like user/name:tag")
        if not isinstance(self.id, str) or not self.id:
            raise SimConfigError(f"image {self.fullname}: 'id' must be a non-empty string")
        self.boot_dir = Path(self.boot_dir)

    @property
    def user(self) -> str:
        return self.fullname.split("/", 1)[0]

    def models(self) -> List[str]:
        if self.compatibility is not None:
            return list(self.compatibility)
        try:
            return sorted(p.name for p in self.boot_dir.iterdir() if p.is_dir())
        except OSError:
            return []


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise SimConfigError(f"{where}: expected an object with keys, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SimConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                             f"known keys: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as error:  # a required key is missing
        raise SimConfigError(f"{where}: {error}") from None


def node_from_dict(values: Mapping[str, Any], where: str = "node") -> SimNode:
    return _build(SimNode, values, where)


def image_from_dict(values: Mapping[str, Any], base: Optional[Path] = None,
                    where: str = "image") -> SimImage:
    values = dict(values)
    if "boot_dir" in values and base is not None:
        values["boot_dir"] = base / Path(str(values["boot_dir"]))
    return _build(SimImage, values, where)


def parse_spec(text: str, what: str) -> Dict[str, str]:
    """``mac=..,name=..`` (command-line form) -> dict; SimConfigError names the bad part."""
    values: Dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SimConfigError(f"--{what} '{text}': '{part}' is not key=value "
                                 f"(example: --{what} " + _SPEC_EXAMPLES[what] + ")")
        values[key.strip()] = value.strip()
    return values


_SPEC_EXAMPLES = {
    "node": "mac=52:54:00:12:34:56,name=node1,ip=127.0.0.1,model=pc-x86-64,"
            "image=waltplatform/pc-x86-64-default:latest",
    "image": "fullname=waltplatform/pc-x86-64-default:latest,id=a1b2c3,boot_dir=./boot",
}


@dataclass
class SimConfig:
    nodes: List[SimNode] = field(default_factory=list)
    images: List[SimImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        seen_macs, seen_ips = set(), set()
        for node in self.nodes:
            if node.mac in seen_macs:
                raise SimConfigError(f"node mac {node.mac} is listed twice")
            if node.ip in seen_ips:
                raise SimConfigError(f"node ip {node.ip} is listed twice: the server identifies "
                                     "nodes by IP, give each node its own")
            seen_macs.add(node.mac)
            seen_ips.add(node.ip)
        names = [image.fullname for image in self.images]
        for image in self.images:
            if names.count(image.fullname) > 1:
                raise SimConfigError(f"image {image.fullname} is listed twice")
        for node in self.nodes:
            if node.image not in names:
                raise SimConfigError(f"node {node.name} is bound to image '{node.image}', which is "
                                     "not in the images list; add it or fix the node's image")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: Optional[Path] = None) -> SimConfig:
        if not isinstance(data, Mapping):
            raise SimConfigError("the configuration must be a JSON object with 'nodes' and 'images'")
        unknown = sorted(set(data) - {"nodes", "images"})
        if unknown:
            raise SimConfigError(f"unknown top-level key(s) {', '.join(unknown)}; "
                                 "expected 'nodes' and 'images'")
        nodes = [node_from_dict(n, f"nodes[{i}]") for i, n in enumerate(data.get("nodes", []))]
        images = [image_from_dict(m, base, f"images[{i}]")
                  for i, m in enumerate(data.get("images", []))]
        return cls(nodes=nodes, images=images)

    @classmethod
    def load(cls, path: Path) -> SimConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise SimConfigError(f"cannot read simulator config {path}: {error.strerror}") from None
        except ValueError as error:
            raise SimConfigError(f"simulator config {path} is not valid JSON: {error}") from None
        return cls.from_dict(data, base=path.parent)
