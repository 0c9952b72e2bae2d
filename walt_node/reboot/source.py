"""The one place boot files come from, for the iPXE interpreter.

:class:`ServerSource` fetches what the WalT server serves for the image the
node is bound to *now*:

- ``tftp`` locations (bare paths in scripts, ``tftp://<server>/...``) through
  the fake TFTP request of the logs port (docs/protocols.md §6);
- ``http`` locations through :class:`walt_node.protocols.WebApi`: a URL on the
  server under ``/boot/`` becomes ``/boot/<path>?node_ip=<ip>`` (§5) so the
  server knows the node; a URL naming the server without a port uses the
  server's web port from the node facts; other URLs are fetched as they are.

Every request is bounded by a per-step timeout and by a :class:`Deadline`
shared by the whole reboot. :class:`LocalSource` reads a boot directory on
disk instead (``walt-node ipxe-plan --boot-dir``, tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from walt_node.bounds import Deadline, DeadlineExceeded
from walt_node.facts import ServerAddress
from walt_node.reboot.ipxe import FetchFailed, Location

DEFAULT_STEP_TIMEOUT = 5.0


class ServerSource:
    """Boot files of the node's currently bound image, from the WalT server."""

    def __init__(self, server: ServerAddress, mac: str, node_ip: Optional[str],
                 deadline: Deadline, step_timeout: float = DEFAULT_STEP_TIMEOUT):
        self.server = server
        self.mac = mac
        self.node_ip = node_ip
        self.deadline = deadline
        self.step_timeout = step_timeout

    def __call__(self, location: Location) -> bytes:
        from walt_node.protocols import ServerError

        try:
            timeout = self.deadline.timeout(self.step_timeout)
            if location.scheme == "tftp":
                return self._tftp(location, timeout)
            return self._http(location, timeout)
        except (ServerError, DeadlineExceeded) as error:
            raise FetchFailed(str(error)) from None

    def _is_server(self, host: str) -> bool:
        return host in ("", self.server.ip)

    def _tftp(self, location: Location, timeout: float) -> bytes:
        from walt_node.protocols import fake_tftp_get

        if not self._is_server(location.host):
            raise FetchFailed(f"TFTP host {location.host} is not the WalT server "
                              f"{self.server.ip}; only the server's boot files are reachable")
        return fake_tftp_get(self.server.ip, self.server.logs_port, self.mac, location.path,
                             timeout=timeout)

    def _http(self, location: Location, timeout: float) -> bytes:
        from walt_node.protocols import BOOT_URL_PREFIX, WebApi

        if self._is_server(location.host):
            port = location.port or self.server.http_port
            web = WebApi(self.server.ip, port, timeout=timeout)
            if location.path.startswith(BOOT_URL_PREFIX) and self.node_ip and not location.query:
                return web.boot_file(location.path[len(BOOT_URL_PREFIX):], self.node_ip)
            query = f"?{location.query}" if location.query else ""
            return web.url_get(web.base + location.path + query)
        return WebApi(location.host, location.port or 80, timeout=timeout).url_get(str(location))


class LocalSource:
    """Boot files from a directory on disk: the ``/boot/<model>`` of an image."""

    def __init__(self, boot_dir: Path):
        self.boot_dir = Path(boot_dir)

    def __call__(self, location: Location) -> bytes:
        if location.scheme != "tftp":
            raise FetchFailed("a local boot directory serves TFTP paths only, not HTTP")
        path = self.boot_dir / location.path.lstrip("/")
        try:
            return path.read_bytes()
        except OSError as error:
            raise FetchFailed(f"{error.strerror} ({path})") from None
