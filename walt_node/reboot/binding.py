"""Which image is the node bound to now, and may it kexec? (docs/protocols.md §4, §5)

The web API answers first (node -> image full name -> image id, node config);
if it cannot be reached or answers an HTTP error, the VSAPI session's
``get_device_info`` answers instead (image full name and conf, but no image
id, so whether the image changes is then unknown).  A server that says it does
not know the node is believed: there is no second opinion to ask.

The boot files are fetched from what the server serves for the *current*
binding, so a changed binding still allows a kexec reboot; what must stop it
is not knowing the binding at all, or ``conf["kexec.allow"]`` being false.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from walt_node.bounds import Deadline
from walt_node.errors import WaltNodeError
from walt_node.facts import ServerAddress
from walt_node.text import printable

STEP_TIMEOUT = 4.0
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class BindingUnknown(WaltNodeError):
    """The server could not tell (or does not know) which image the node is bound to."""


@dataclass
class Binding:
    mac: str
    image: str
    image_id: Optional[str]
    booted_image_id: Optional[str]
    kexec_allowed: bool
    answered_by: str
    node_name: str = ""
    node_ip: str = ""
    netmask: str = ""
    gateway: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def keeps_image(self) -> Optional[bool]:
        """True/False when both image ids are known, else None."""
        if not self.image_id or not self.booted_image_id:
            return None
        return same_image_id(self.image_id, self.booted_image_id)

    def summary(self) -> str:
        """One line for people; the server's names are shown with control characters escaped."""
        name = printable(self.node_name or self.mac)
        image = printable(self.image)
        keeps = self.keeps_image
        if keeps is True:
            verdict = f"the reboot keeps the image {image}"
        elif keeps is False:
            verdict = (f"the reboot CHANGES the image: booted {printable(self.booted_image_id[:12])}, "
                       f"now bound to {image} ({printable(self.image_id[:12])})")
        else:
            verdict = (f"the node is now bound to {image}; whether that is the booted image "
                       "is unknown (" + ("no image id from the server"
                                         if self.booted_image_id else "booted image id unknown")
                       + ")")
        allowed = "kexec allowed" if self.kexec_allowed else "kexec NOT allowed (kexec.allow)"
        return f"{name}: {verdict}; {allowed} [{self.answered_by}]"


def same_image_id(a: str, b: str) -> bool:
    """Equal ids, or one a prefix of the other (short ids), at least 12 characters long."""
    a, b = a.strip().lower(), b.strip().lower()
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 12 and long_.startswith(short)


def parse_allow(value: Any) -> Optional[bool]:
    """``kexec.allow`` as the server may send it (bool or text); None if unreadable."""
    if value is None:
        return True  # WalT's default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def _allowed(conf: Any, notes: List[str]) -> bool:
    if conf is not None and not isinstance(conf, dict):
        notes.append(f"node settings are not a mapping ({conf!r}); not taking chances")
        return False
    allow = parse_allow((conf or {}).get("kexec.allow"))
    if allow is None:
        notes.append(f"unreadable kexec.allow value {(conf or {}).get('kexec.allow')!r}")
        return False
    return allow


def _from_web(server: ServerAddress, mac: str, booted: Optional[str],
              deadline: Deadline) -> Binding:
    from walt_node.protocols import WebApi

    web = WebApi(server.ip, server.http_port, timeout=deadline.timeout(STEP_TIMEOUT))
    node = web.node(mac)
    if node is None:
        raise BindingUnknown(f"the server does not know a node with MAC {mac} (web API)")
    fullname = node.get("image")
    if not isinstance(fullname, str) or not fullname:
        raise BindingUnknown(f"the web API gave no image for node {mac}: {node!r}")
    notes: List[str] = []
    web.timeout = deadline.timeout(STEP_TIMEOUT)
    image = web.image(fullname)
    image_id = image.get("id") if image else None
    if not image_id:
        notes.append(f"the web API does not list image {fullname}")
    return Binding(mac, fullname, image_id, booted, _allowed(node.get("config"), notes),
                   "web API", node_name=str(node.get("name") or ""),
                   node_ip=str(node.get("ip") or ""), notes=notes)


def _from_api_session(server: ServerAddress, mac: str, booted: Optional[str],
                      deadline: Deadline, web_error: str) -> Binding:
    from walt_node.protocols import get_device_info

    info = get_device_info(server.ip, server.rpc_port, mac,
                           timeout=deadline.timeout(STEP_TIMEOUT))
    if not info:
        raise BindingUnknown(f"the server does not know a node with MAC {mac} (VSAPI)")
    fullname = info.get("image")
    if not isinstance(fullname, str) or not fullname:
        raise BindingUnknown(f"get_device_info gave no image for node {mac}: {info!r}")
    notes = [f"web API failed ({web_error}); used the API session"]
    return Binding(mac, fullname, None, booted, _allowed(info.get("conf"), notes),
                   "VSAPI get_device_info", node_name=str(info.get("name") or ""),
                   node_ip=str(info.get("ip") or ""), netmask=str(info.get("netmask") or ""),
                   gateway=str(info.get("gateway") or ""), notes=notes)


def check_binding(server: ServerAddress, mac: str, booted_image_id: Optional[str],
                  deadline: Deadline) -> Binding:
    """Ask the server; BindingUnknown when neither the web API nor the API session can tell."""
    from walt_node.protocols import ServerError

    try:
        return _from_web(server, mac, booted_image_id, deadline)
    except ServerError as error:
        web_error = str(error)
    try:
        return _from_api_session(server, mac, booted_image_id, deadline, web_error)
    except ServerError as error:
        raise BindingUnknown(f"the server cannot be asked: web API: {web_error}; "
                             f"API session: {error}") from None
