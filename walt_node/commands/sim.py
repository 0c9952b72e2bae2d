"""`walt-node sim`: run the loopback WalT server simulator, or control/read a running one."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict

from walt_node.errors import WaltNodeError
from walt_node.service import on_stop_signals

log = logging.getLogger("walt_node.sim")

DESCRIPTION = """\
Run a WalT server simulator on loopback, for tests and for trying experiment
scripts off the testbed. It speaks the server protocols walt-node uses: logs and
fake TFTP (logs port), NSAPI/VSAPI sessions (rpc port), web API and boot files
(http port). Ports are automatic unless given; they are printed and written to
--state-file. Every log line and API call is recorded (--records, JSON lines).

Without --config, --node or --image, a sample platform is used: node1
(52:54:00:12:34:56, 127.0.0.1, pc-x86-64) bound to
waltplatform/pc-x86-64-default:latest, plus waltplatform/pc-x86-64-other:latest.

actions on a running simulator:
  walt-node sim bind --state-file F MAC IMAGE       bind a node to another image
  walt-node sim conf --state-file F MAC KEY VALUE   change a node setting (VALUE is JSON
                                                    if it parses, e.g. false, else text)
  walt-node sim show --records F [--follow]         print received log lines like
                                                    'walt log show --realtime'

examples:
  walt-node sim --state-file /tmp/sim.json --records /tmp/sim.jsonl --show-logs
  walt-node sim --config platform.json --logs-port 12347 --rpc-port 12345 --http-port 8080
  walt-node sim --image fullname=me/img:latest,id=abc123,boot_dir=./boot \\
                --node mac=52:54:00:00:00:01,name=vnode,ip=127.0.0.1,model=pc-x86-64,image=me/img:latest
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="JSON file listing nodes and images (see docs/simulator.md)")
    parser.add_argument("--node", action="append", default=[], metavar="SPEC",
                        help="add a node: mac=..,name=..,ip=..,model=..,image=.. (repeatable)")
    parser.add_argument("--image", action="append", default=[], metavar="SPEC",
                        help="add an image: fullname=..,id=..,boot_dir=.. (repeatable)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: loopback only)")
    for name, real in (("logs", 12347), ("rpc", 12345), ("http", 80)):
        parser.add_argument(f"--{name}-port", type=_port, default=0, metavar="N",
                            help=f"{name} port (default 0: automatic; a real server uses {real})")
    parser.add_argument("--state-file", type=Path, metavar="F",
                        help="write host, ports, pid and records path here (JSON) once listening")
    parser.add_argument("--records", type=Path, metavar="F",
                        help="append every log line and API call to this JSON-lines file")
    parser.add_argument("--lenient-logs", action="store_true",
                        help="read log streams line by line, replacing bad UTF-8 and keeping "
                             "lines without a valid stamp (a WalT 10 server, and the simulator "
                             "by default, closes such streams: docs/protocols.md section 11)")
    parser.add_argument("--show-logs", action="store_true",
                        help="print each received log line live, like 'walt log show --realtime'")
    actions = parser.add_subparsers(dest="action", metavar="{bind,conf,show}")
    bind = actions.add_parser("bind", help="bind a node of a running simulator to an image")
    _state_file_argument(bind)
    bind.add_argument("mac")
    bind.add_argument("image", help="image full name, user/name:tag")
    conf = actions.add_parser("conf", help="set a node setting of a running simulator")
    _state_file_argument(conf)
    conf.add_argument("mac")
    conf.add_argument("key", help="setting name, e.g. kexec.allow")
    conf.add_argument("value", help="JSON value (true, 3, \"x\") or plain text")
    show = actions.add_parser("show", help="print the log lines of a records file")
    show.add_argument("--records", type=Path, required=True, metavar="F", dest="show_records")
    show.add_argument("--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)")


def _state_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-file", type=Path, required=True, metavar="F", dest="control_state",
                        help="the state file of the running simulator")


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number (0-65535, 0 = automatic)")
    return int(text)


def run(args: argparse.Namespace) -> int:
    # configuration, inventory and control errors are WaltNodeErrors: the CLI prints them
    if args.action in ("bind", "conf"):
        return _control(args)
    if args.action == "show":
        return _show(args.show_records, args.follow)
    return _serve(args)


# ----------------------------------------------------------------- serving

def _serve(args: argparse.Namespace) -> int:
    from walt_node.sim.config import SimConfig

    with tempfile.TemporaryDirectory(prefix="walt-node-sim-") as scratch:
        if args.config is None and not args.node and not args.image:
            from walt_node.sim.sample import sample_config

            config = sample_config(Path(scratch))
            log.info("no --config/--node/--image: using the sample platform (see --help)")
        else:
            config = _config_from_args(args, SimConfig)
        return _run_simulator(args, config)


def _config_from_args(args: argparse.Namespace, config_class: Any) -> Any:
    from walt_node.sim.config import image_from_dict, node_from_dict, parse_spec

    config = config_class.load(args.config) if args.config else config_class()
    config.images.extend(image_from_dict(parse_spec(spec, "image"), Path.cwd(), f"--image {spec}")
                         for spec in args.image)
    config.nodes.extend(node_from_dict(parse_spec(spec, "node"), f"--node {spec}")
                        for spec in args.node)
    config.validate()
    return config


def _run_simulator(args: argparse.Namespace, config: Any) -> int:
    from walt_node.sim.server import Simulator

    try:
        sim = Simulator(config, host=args.host, logs_port=args.logs_port,
                        rpc_port=args.rpc_port, http_port=args.http_port,
                        records_path=args.records, lenient_logs=args.lenient_logs,
                        show_logs=sys.stdout if args.show_logs else None)
        sim.start()
    except OSError as error:
        raise WaltNodeError(str(error.strerror or error)) from error
    stop = threading.Event()
    on_stop_signals(stop.set)
    try:
        if args.state_file:
            sim.write_state(args.state_file)
        _announce(sim, config)
        while not stop.wait(3600):
            pass
    finally:
        sim.close()
        if args.state_file:
            args.state_file.unlink(missing_ok=True)
    log.info("simulator stopped")
    return 0


def _announce(sim: Any, config: Any) -> None:
    print(f"walt-node sim: listening on {sim.host}: logs port {sim.logs_port}, "
          f"rpc port {sim.rpc_port}, http port {sim.http_port}")
    for node in config.nodes:
        print(f"  node {node.name} mac {node.mac} ip {node.ip} model {node.model} "
              f"image {node.image}")
    for image in config.images:
        print(f"  image {image.fullname} id {image.id} boot {image.boot_dir}")
    sys.stdout.flush()


# ----------------------------------------------------------------- control

class ControlError(WaltNodeError):
    pass


def _read_state(path: Path) -> Dict[str, Any]:
    try:
        state = json.loads(path.read_text())
        return {"host": str(state["host"]), "http_port": int(state["http_port"])}
    except OSError as error:
        raise ControlError(f"cannot read state file {path}: {error.strerror}; is the simulator "
                           "running with --state-file?") from None
    except (ValueError, KeyError, TypeError):
        raise ControlError(f"{path} is not a walt-node sim state file") from None


def _control(args: argparse.Namespace) -> int:
    state = _read_state(args.control_state)
    if args.action == "bind":
        body: Dict[str, Any] = {"mac": args.mac, "image": args.image}
    else:
        body = {"mac": args.mac, "key": args.key, "value": _conf_value(args.value)}
    post_control(state["host"], state["http_port"], args.action, body)
    return 0


def _conf_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def post_control(host: str, http_port: int, action: str, body: Dict[str, Any],
                 timeout: float = 5.0) -> None:
    """POST to the simulator-only control endpoint /_sim/<action>."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    request = urllib.request.Request(f"http://{host}:{http_port}/_sim/{action}",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        raise ControlError(_error_text(error)) from None
    except OSError as error:
        raise ControlError(f"cannot reach the simulator at {host}:{http_port}: {error}") from None


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"simulator answered HTTP {error.code}"


def _show(path: Path, follow: bool) -> int:
    from walt_node.sim.records import follow_file

    try:
        follow_file(path, follow)
    except FileNotFoundError:
        raise ControlError(f"no records file {path}; start the simulator with --records") from None
    except KeyboardInterrupt:
        pass
    return 0

