"""The simulated server's HTTP port (docs/protocols.md §5) and control endpoint.

- ``GET /api/v1/nodes[?mac=]`` and ``GET /api/v1/images[?fullname=]``: JSON
  shaped like the real web API;
- ``GET /boot/<path>?node_ip=<ip>``: ``<bound image>/boot/<model>/<path>``;
- ``POST /_sim/bind`` ``{"mac", "image"}`` and ``POST /_sim/conf``
  ``{"mac", "key", "value"}``: a simulator-only extension so that
  ``walt-node sim bind|conf`` can change a simulator running in another process.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional
from urllib.parse import parse_qs, unquote, urlsplit

from walt_node.protocols import BOOT_URL_PREFIX
from walt_node.sim.config import SimConfigError, normalize_mac
from walt_node.sim.inventory import Inventory, SimError

log = logging.getLogger(__name__)
MAX_CONTROL_BODY = 1 << 16


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _single(query: Dict[str, list], name: str) -> Optional[str]:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise _HttpError(400, f"parameter '{name}' given {len(values)} times")
    return values[0]


class _Handler(BaseHTTPRequestHandler):
    server_version = "walt-node-sim"
    inventory: Inventory  # set on the subclass built per simulator

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route) -> None:
        try:
            status, content_type, body = route(urlsplit(self.path))
        except _HttpError as error:
            status, content_type = error.status, "application/json"
            body = json.dumps({"error": str(error)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _get(self, url):
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path == "/api/v1/nodes":
            return self._json(self._nodes(_single(query, "mac")))
        if url.path == "/api/v1/images":
            return self._json(self._images(_single(query, "fullname")))
        if url.path.startswith(BOOT_URL_PREFIX):
            return self._boot_file(unquote(url.path[len(BOOT_URL_PREFIX):]), _single(query, "node_ip"))
        raise _HttpError(404, f"no such resource {url.path}")

    @staticmethod
    def _json(data: Any):
        return 200, "application/json", json.dumps(data).encode()

    def _nodes(self, mac: Optional[str]) -> Dict[str, Any]:
        nodes = self.inventory.nodes()
        if mac is not None:
            try:
                mac = normalize_mac(mac)
            except SimConfigError as error:
                raise _HttpError(400, str(error)) from None
            nodes = [n for n in nodes if n.mac == mac]
        return {"num_nodes": len(nodes), "nodes": [self.inventory.web_node(n) for n in nodes]}

    def _images(self, fullname: Optional[str]) -> Dict[str, Any]:
        images = self.inventory.images()
        if fullname is not None:
            images = [i for i in images if i.fullname == fullname]
        return {"num_images": len(images),
                "images": [self.inventory.web_image(i) for i in images]}

    def _boot_file(self, path: str, node_ip: Optional[str]):
        if not node_ip:
            raise _HttpError(400, "missing parameter node_ip (the IP of the requesting node)")
        node = self.inventory.node_by_ip(node_ip)
        if node is None:
            raise _HttpError(404, f"no node has IP {node_ip}")
        try:
            file = self.inventory.boot_file(node, path)
        except SimError as error:
            raise _HttpError(404, str(error)) from None
        return 200, "application/octet-stream", file.read_bytes()

    def _post(self, url):
        body = self._read_body()
        try:
            if url.path == "/_sim/bind":
                self.inventory.bind(str(body["mac"]), str(body["image"]))
            elif url.path == "/_sim/conf":
                self.inventory.set_conf(str(body["mac"]), str(body["key"]), body["value"])
            else:
                raise _HttpError(404, f"no such control endpoint {url.path}")
        except KeyError as error:
            raise _HttpError(400, f"missing field {error} in the request body") from None
        except SimError as error:
            raise _HttpError(404, str(error)) from None
        return self._json({"ok": True})

    def _read_body(self) -> Dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _HttpError(400, "bad Content-Length") from None
        if not 0 < length <= MAX_CONTROL_BODY:
            raise _HttpError(400, f"expected a JSON body of at most {MAX_CONTROL_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            raise _HttpError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _HttpError(400, "the request body must be a JSON object")
        return body


class WebService:
    def __init__(self, host: str, port: int, inventory: Inventory):
        self.host, self.port = host, port
        self.handler = type("SimHttpHandler", (_Handler,), {"inventory": inventory})
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> int:
        try:
            server = ThreadingHTTPServer((self.host, self.port), self.handler)
        except OSError as error:
            raise OSError(error.errno, f"simulator http port: cannot listen on "
                                       f"{self.host}:{self.port}: {error.strerror}") from None
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="sim-http", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
