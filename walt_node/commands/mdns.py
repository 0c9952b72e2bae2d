"""`walt-node mdns` command; the work is in :mod:`walt_node.mdns`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Optional

from walt_node.errors import WaltNodeError
from walt_node.mdns import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    HostsFileError,
    MdnsError,
    PeerWatcher,
    StopFlag,
    avahi_owner,
    fqdn,
    local_ipv4_networks,
    new_zeroconf,
    node_identity,
    publish_forever,
    resolve,
    update_hosts,
)
from walt_node.paths import Paths
from walt_node.service import on_stop_signals
from walt_node.text import printable

log = logging.getLogger(__name__)

DESCRIPTION = """\
Publish this node as <hostname>.local with mDNS, resolve names, and list the
other WalT nodes of the LAN (WalT docs: nodes reach each other as
<node name>.local; avahi-daemon + libnss-mdns is the documented setup, this
is its pure-Python alternative).

  publish    run until stopped (walt-node services runs it): answer for
             <hostname>.local with this node's IPv4 addresses and announce a
             _walt-node._tcp service with TXT model=, image= (image id), mac=;
             re-announce when an address changes. Stands aside (exit 0, says
             why) when avahi-daemon already runs.
  resolve NAME
             print the IPv4 address(es) of NAME (NAME or NAME.local)
  peers      list the WalT nodes that announce themselves, with TXT data

--hosts (publish, peers): keep the peers in a managed block of /etc/hosts,
between '# BEGIN walt-node mdns peers' and '# END walt-node mdns peers'
lines, rewritten atomically under a lock; other lines are never touched.
A peer only gets a single-label <name>.local name that no other line holds
(never localhost, the server's or this node's name), at unicast addresses.

Exit status: 0 done (publish: stopped, or stood aside for avahi-daemon),
1 an error (facts, name conflict, hosts file), 2 resolve got no answer.

Examples:
  walt-node mdns publish --hosts
  walt-node mdns resolve node2
  walt-node mdns peers --json
"""


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    publish = sub.add_parser("publish", help="publish <hostname>.local until stopped",
                             description="publish <hostname>.local and the _walt-node._tcp service")
    publish.add_argument("--interface", metavar="IFACE", help="publish only this interface's addresses")
    publish.add_argument("--hosts", action="store_true", help="keep peers in the /etc/hosts block")
    resolve_cmd = sub.add_parser("resolve", help="print the address of NAME.local",
                                 description="print the IPv4 address(es) of NAME.local")
    resolve_cmd.add_argument("name", metavar="NAME")
    resolve_cmd.add_argument("--timeout", type=float, default=3.0, metavar="S",
                             help="give up after S seconds (default 3)")
    peers = sub.add_parser("peers", help="list WalT nodes announcing themselves",
                           description="list the WalT nodes announcing _walt-node._tcp")
    peers.add_argument("--timeout", type=float, default=3.0, metavar="S",
                       help="listen for S seconds (default 3)")
    peers.add_argument("--json", action="store_true", help="print JSON")
    peers.add_argument("--hosts", action="store_true", help="also write them to the /etc/hosts block")


def _run_publish(args) -> int:
    stop = StopFlag()
    on_stop_signals(stop.set)
    return publish(stop, args.interface, args.hosts)


def publish(stop: StopFlag, interface: Optional[str] = None, hosts: bool = False) -> int:
    """Publish until ``stop`` is set (also the mDNS feature of `walt-node services`)."""
    from walt_node.facts import FactInvalid, FactMissing, NodeFacts

    paths = Paths.from_env()
    owner = avahi_owner(paths)
    if owner is not None:
        log.info("%s already answers mDNS on this node; not publishing (avahi publishes "
                 "<hostname>.local itself; stop avahi-daemon to use walt-node's publisher instead)",
                 owner)
        return EXIT_OK
    try:
        identity = node_identity(NodeFacts(paths))
    except (FactMissing, FactInvalid, MdnsError) as error:
        log.error("%s", error)
        return EXIT_FAILED
    try:
        publish_forever(identity, paths, interface, hosts, stop)
    except MdnsError as error:
        log.error("%s", error)
        return EXIT_FAILED
    return EXIT_OK


def _run_resolve(args) -> int:
    addresses = resolve(args.name, args.timeout)
    if not addresses:
        raise WaltNodeError(f"no answer for {fqdn(args.name).rstrip('.')} within {args.timeout:g} s",
                            exit_status=EXIT_NOT_FOUND)
    for address in addresses:
        print(address)
    return EXIT_OK


def _own_hostname(paths: Paths) -> Optional[str]:
    """This node's name, to keep it out of its own hosts block (None if unknown)."""
    from walt_node.facts import FactMissing, NodeFacts

    try:
        return NodeFacts(paths).hostname.split(".")[0]
    except FactMissing:
        return None


def _run_peers(args) -> int:
    zc = new_zeroconf()
    watcher = PeerWatcher(zc)
    try:
        time.sleep(args.timeout)
        peers = watcher.peers()
    finally:
        watcher.close()
        zc.close()
    if args.json:
        print(json.dumps([asdict(p) for p in peers], indent=2))
    elif not peers:
        print("no WalT node announces itself")
    else:
        print(f"{'NAME':<20} {'ADDRESS':<16} {'MODEL':<16} {'MAC':<17}  IMAGE")
        for p in peers:  # names and TXT values are what a LAN peer announced: shown escaped
            print(f"{printable(p.name):<20} {printable(','.join(p.addresses)):<16} "
                  f"{printable(p.txt.get('model', '')):<16} {printable(p.txt.get('mac', '')):<17}  "
                  f"{printable(p.txt.get('image', ''))}")
    if args.hosts:
        paths = Paths.from_env()
        own = _own_hostname(paths)
        try:
            update_hosts(paths.etc_hosts, peers, own, networks=local_ipv4_networks())
        except (HostsFileError, OSError) as error:
            raise WaltNodeError(f"cannot update {paths.etc_hosts}: {error}",
                                exit_status=EXIT_FAILED) from error
    return EXIT_OK


def run(args) -> int:
    return {"publish": _run_publish, "resolve": _run_resolve, "peers": _run_peers}[args.action](args)
