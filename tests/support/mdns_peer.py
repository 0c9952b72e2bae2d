"""A LAN peer that announces whatever it is told, with real python-zeroconf.

Run as ``python -m support.mdns_peer SPEC`` (SPEC: JSON list of
``{"name": service instance, "server": host name, "addresses": [IPv4...]}``, and
optionally ``"txt": {key: value}``)
inside a network namespace: it registers each as a ``_walt-node._tcp``
service, prints ``ready``, and keeps announcing until stdin closes.
"""

from __future__ import annotations

import json
import socket
import sys

from zeroconf import IPVersion, ServiceInfo, Zeroconf

SERVICE_TYPE = "_walt-node._tcp.local."


def main(spec: str) -> None:
    zc = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        for service in json.loads(spec):
            zc.register_service(ServiceInfo(
                SERVICE_TYPE, f"{service['name']}.{SERVICE_TYPE}", port=12346,
                server=service["server"], properties=service.get("txt", {"model": "hostile"}),
                addresses=[socket.inet_aton(a) for a in service["addresses"]]))
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        zc.close()


if __name__ == "__main__":
    main(sys.argv[1])
