"""The simulated platform's live state: nodes, images, bindings, node settings.

Shared by every simulated service (API sessions, web API, boot files, fake
TFTP); changes (bind, conf) are seen by the next request, like on a server.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

from walt_node.errors import WaltNodeError
from walt_node.sim.config import SimConfig, SimConfigError, SimImage, SimNode, normalize_mac


class SimError(WaltNodeError, LookupError):
    """A request names something the simulated platform does not have."""


class Inventory:
    def __init__(self, config: SimConfig):
        self._lock = threading.Lock()
        self._nodes: Dict[str, SimNode] = {n.mac: copy.deepcopy(n) for n in config.nodes}
        self._images: Dict[str, SimImage] = {i.fullname: i for i in config.images}

    # --- lookups (return copies so callers never race with bind/conf) ---
    def node_by_mac(self, mac: str) -> Optional[SimNode]:
        try:
            mac = normalize_mac(mac)
        except SimConfigError:
            return None
        with self._lock:
            node = self._nodes.get(mac)
            return copy.deepcopy(node) if node else None

    def node_by_ip(self, ip: str) -> Optional[SimNode]:
        with self._lock:
            for node in self._nodes.values():
                if node.ip == ip:
                    return copy.deepcopy(node)
        return None

    def nodes(self) -> List[SimNode]:
        with self._lock:
            return [copy.deepcopy(n) for n in self._nodes.values()]

    def image(self, fullname: str) -> Optional[SimImage]:
        with self._lock:
            return self._images.get(fullname)

    def images(self) -> List[SimImage]:
        with self._lock:
            return list(self._images.values())

    def issuer_of(self, ip: str) -> str:
        """The server names a log issuer by the node owning the source IP, else the IP."""
        node = self.node_by_ip(ip)
        return node.name if node else ip

    # --- control ---
    def bind(self, mac: str, fullname: str) -> None:
        with self._lock:
            node = self._known_node(mac)
            if fullname not in self._images:
                raise SimError(f"unknown image '{fullname}'; known images: "
                               + (", ".join(sorted(self._images)) or "none"))
            node.image = fullname

    def set_conf(self, mac: str, key: str, value: Any) -> None:
        with self._lock:
            self._known_node(mac).conf[key] = value

    def _known_node(self, mac: str) -> SimNode:
        try:
            node = self._nodes.get(normalize_mac(mac))
        except SimConfigError as error:
            raise SimError(str(error)) from None
        if node is None:
            raise SimError(f"unknown node mac '{mac}'; known nodes: "
                           + (", ".join(sorted(self._nodes)) or "none"))
        return node

    # --- what the services answer ---
    def device_info(self, mac: str) -> Optional[Dict[str, Any]]:
        """VSAPI get_device_info(mac): the node's description, or None if unknown."""
        node = self.node_by_mac(mac) if isinstance(mac, str) else None
        if node is None:
            return None
        return {"name": node.name, "mac": node.mac, "ip": node.ip, "netmask": node.netmask,
                "gateway": node.gateway, "model": node.model, "image": node.image,
                "type": "node", "virtual": node.virtual, "conf": node.full_conf()}

    def web_node(self, node: SimNode) -> Dict[str, Any]:
        return {"name": node.name, "model": node.model, "virtual": node.virtual,
                "image": node.image, "booted": node.booted, "ip": node.ip, "mac": node.mac,
                "config": node.full_conf()}

    def web_image(self, image: SimImage) -> Dict[str, Any]:
        in_use = any(n.image == image.fullname for n in self.nodes())
        return {"fullname": image.fullname, "user": image.user, "id": image.id,
                "in_use": in_use, "created": image.created, "compatibility": image.models()}

    def boot_file(self, node: SimNode, path: str) -> Path:
        """``<bound image>/boot/<model>/<path>``; SimError if outside or missing."""
        image = self.image(node.image)
        if image is None:
            raise SimError(f"node {node.name} is bound to unknown image {node.image}")
        boot_root = image.boot_dir.resolve()
        relative = path.lstrip("/")
        if "\0" in relative:
            raise SimError(f"invalid path {path!r}")
        candidate = (boot_root / node.model / relative).resolve()
        # symlinks may point elsewhere in the image's /boot, never outside it
        if candidate != boot_root and boot_root not in candidate.parents:
            raise SimError(f"path {path!r} leaves the image's boot directory")
        if not candidate.is_file():
            raise SimError(f"no file {path!r} in /boot/{node.model} of image {image.fullname}")
        return candidate
