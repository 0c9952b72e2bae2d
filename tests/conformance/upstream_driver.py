"""Runs upstream WalT 10.0 server classes the way the server runs them; records what they receive.

This script runs INSIDE the upstream venv (scripts/upstream-venv.sh), never in
walt-node's: it imports the real classes from the walt-server / walt-common
wheels and drives them with upstream's own ``EventLoop`` and ``TCPServer``
(the event loop of the server's main process). Only what needs a database or
a second server process is replaced by small recorders defined here.

Commands::

    serve RECORDS [--slow MAX_SECONDS] [--seed N] [--mss BYTES] [--tftp-root DIR] [--device JSON]
        logs port (REQ_NEW_INCOMING_LOGS -> LogsStreamListener, REQ_FAKE_TFTP_GET ->
        NodeFakeTFTPGet) and API port (REQ_API_SESSION -> the hub's APISessionManager,
        whose tasks run through the main process' NSAPI / VSAPI classes), on 127.0.0.1.
        Prints ``PORTS <logs> <api>`` once listening; stops when stdin closes.
        --slow sleeps a random time (0..MAX) before each read of a log stream, so
        that the server's 8 KiB reads fall at arbitrary places of the byte stream;
        --mss 1448 makes writes arrive in Ethernet-sized pieces, as on a real network.
    feed
        stdin: one JSON object per line {"mode", "chunks": [base64...], "eof": bool}.
        Each chunk is what one recv() of the listener returns (eof: a last empty
        read, the peer closed). stdout: one JSON object per input line:
        {"lines": [[ts, text], ...], "closed": null | "close" | "error", "now": ts}.

Records (JSON lines, flushed as they come): {"kind": "log", "issuer", "stream",
"ts", "line"}, {"kind": "closed", "issuer", "stream", "error"}, {"kind": "api",
"issuer", "api", "method", "args", "kwargs"} (args as repr()).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import sys
import threading
import time
import types

# walt.server.processes.main.transfer imports this module only for a helper the
# fake TFTP class does not use; the real one reads the walt-net interface at import.
_setup = types.ModuleType("walt.server.mount.setup")
_setup.script_path = lambda name: name
sys.modules["walt.server.mount.setup"] = _setup

import numpy as np  # noqa: E402
import walt.server.processes.main.logs as upstream_logs  # noqa: E402
import walt.server.processes.main.transfer as upstream_transfer  # noqa: E402
from walt.common.evloop import EventLoop  # noqa: E402
from walt.common.tcp import Requests, TCPServer  # noqa: E402
from walt.server.processes.hub.client import APISessionManager  # noqa: E402
from walt.server.processes.main.api.ns import NSAPI  # noqa: E402
from walt.server.processes.main.api.vs import VSAPI  # noqa: E402
from walt.server.processes.main.apisession import APISession  # noqa: E402
from walt.server.processes.main.nodes.clock import NodesClockSyncInfo  # noqa: E402


class Recorder:
    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()


class RecordingHandler:
    """A LogsHub handler, as the DB handler is on the real server."""

    def __init__(self, manager):
        self.manager = manager

    def log(self, logs):
        issuer, stream = self.manager.streams[int(logs.stream_id[0])]
        self.manager.recorder.file.write("".join(
            json.dumps({"kind": "log", "issuer": issuer, "stream": stream,
                        "ts": float(ts), "line": str(line)}) + "\n"
            for ts, line in zip(logs.timestamp, logs.line)))
        self.manager.recorder.file.flush()


class LogsManagerStandIn:
    """What LogsStreamListener uses of the server's LogsManager: a hub and stream ids."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.hub = upstream_logs.LogsHub()
        self.hub.addHandler(RecordingHandler(self))
        self.streams = {}
        self.ids = {}

    def get_stream_id(self, issuer_ip, name, mode="line"):
        key = (issuer_ip, name)
        if key not in self.ids:
            self.ids[key] = len(self.ids)
            self.streams[self.ids[key]] = key
        return self.ids[key]


def listener_class(manager: LogsManagerStandIn, slow: float, seed: int):
    rng = random.Random(seed)

    class RecordedListener(upstream_logs.LogsStreamListener):
        """The real listener; only its end is recorded (and its reads delayed with --slow)."""

        def handle_event(self, ts):
            if slow and self.stream_id is not None:  # the load pattern: a server behind, on purpose
                time.sleep(rng.uniform(0, slow))
            errors = []
            upstream_logs.print = lambda *args: errors.append(" ".join(map(str, args)))
            try:
                result = super().handle_event(ts)
            finally:
                del upstream_logs.print
            if result is False and self.stream_id is not None:
                issuer, stream = manager.streams[self.stream_id]
                manager.recorder.write(kind="closed", issuer=issuer, stream=stream,
                                       error="; ".join(errors) or None)
            return result

    return RecordedListener


class LoopbackTCPServer(TCPServer):
    """upstream's TCPServer, on 127.0.0.1 and an automatic port; ``mss`` makes clients
    send segments of Ethernet size, as they arrive on a real server, instead of
    loopback's 64 KiB ones."""

    def __init__(self, mss: int = 0):
        super().__init__(0)
        self.mss = mss

    def open_server_socket(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.mss:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.mss)
        s.bind(("127.0.0.1", 0))
        s.listen(256)
        return s


# ------------------------------------------------------------- API sessions

class Later:
    def __init__(self, action):
        self.action = action

    def then(self, callback):
        self.action(callback)


class Task:
    """The rpc task the main process answers through (sync or async, as in walt)."""

    def __init__(self, callback):
        self.callback, self.asynchronous = callback, False

    def set_async(self):
        self.asynchronous = True

    def is_async(self):
        return self.asynchronous

    def return_result(self, result):
        self.callback(result)


class ServerStandIn:
    """The main process' server object as NSAPI / VSAPI use it."""

    def __init__(self, recorder: Recorder, ev_loop, devices: dict):
        self.recorder = recorder
        self.images = self.blocking = self.logs = None
        self.nodes = types.SimpleNamespace(clock=NodesClockSyncInfo(ev_loop))
        self.devices = types.SimpleNamespace(get_device_info=self.get_device_info)
        self.device_table = devices

    def report_lldp_neighbor(self, remote_ip, sw_mac, sw_port_lldp_label):
        self.recorder.write(kind="lldp", issuer=remote_ip, sw_mac=sw_mac,
                            label=sw_port_lldp_label)

    def get_device_info(self, requester=None, mac=None, name=None):
        info = self.device_table.get(mac)
        if info is None:
            return None
        dtype = [(key, object) for key in info]
        return np.array([tuple(info.values())], dtype).view(np.recarray)[0]


class MainStandIn:
    """The hub's view of the main process: run_task() goes to the real APISession classes."""

    def __init__(self, recorder: Recorder, server: ServerStandIn):
        self.recorder, self.server = recorder, server

    def create_session(self, local_service):
        main = self

        class Session:
            class do_async:
                @staticmethod
                def run_task(session_id, target_api, remote_ip, attr, args, kwargs):
                    main.recorder.write(kind="api", issuer=remote_ip, api=target_api,
                                        method=attr, args=repr(args), kwargs=repr(kwargs))
                    return Later(lambda callback: main.run(
                        callback, session_id, target_api, remote_ip, attr, args, kwargs))

                @staticmethod
                def destroy_session(session_id):
                    APISession.destroy(session_id)

        return Session()

    def run(self, callback, session_id, target_api, remote_ip, attr, args, kwargs):
        task = Task(callback)
        context = types.SimpleNamespace(
            task=task, remote_service=types.SimpleNamespace(
                do_sync=types.SimpleNamespace(requester=types.SimpleNamespace())))
        try:
            session = APISession.get(self.server, session_id, target_api, remote_ip)
            result = session.run_task(context, attr, args, kwargs)
        except Exception as error:  # the rpc layer of the real server returns it the same way
            result = error
        if not task.is_async():
            callback(result)


def serve(args) -> int:
    recorder = Recorder(args.records)
    ev_loop = EventLoop()
    manager = LogsManagerStandIn(recorder)
    if args.tftp_root:
        upstream_transfer.NODE_TFTP_ROOT = args.tftp_root + "/%(node_id)s/tftp"
    logs_server = LoopbackTCPServer(args.mss)
    logs_server.register_listener_class(req_id=Requests.REQ_NEW_INCOMING_LOGS,
                                        cls=listener_class(manager, args.slow, args.seed),
                                        manager=manager)
    logs_server.register_listener_class(req_id=Requests.REQ_FAKE_TFTP_GET,
                                        cls=upstream_transfer.NodeFakeTFTPGet, ev_loop=ev_loop)
    logs_server.prepare(ev_loop)
    APISession.register_target_api("NSAPI", NSAPI)
    APISession.register_target_api("VSAPI", VSAPI)
    devices = json.loads(args.device) if args.device else {}
    main = MainStandIn(recorder, ServerStandIn(recorder, ev_loop, devices))
    api_server = LoopbackTCPServer()
    api_server.register_listener_class(req_id=Requests.REQ_API_SESSION, cls=APISessionManager,
                                       process=types.SimpleNamespace(main=main))
    api_server.prepare(ev_loop)
    stop = threading.Event()

    def watch_stdin():
        sys.stdin.read()
        stop.set()
        os.write(wake_w, b"x")

    wake_r, wake_w = os.pipe()

    class Waker:
        def fileno(self):
            return wake_r

        def handle_event(self, ts):
            return False

        def close(self):
            os.close(wake_r)

    ev_loop.register_listener(Waker())
    threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"PORTS {logs_server.s.getsockname()[1]} {api_server.s.getsockname()[1]}",
          flush=True)
    ev_loop.loop(lambda: not stop.is_set())
    return 0


# --------------------------------------------------------------- direct feed

class ChunkSource:
    """Stands for the listener's socket file: read() returns the given chunks in turn."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def read(self, size=None):
        return self.chunks.pop(0)

    def close(self):
        pass


class HubRecorder:
    def __init__(self):
        self.lines = []

    def log(self, stream_id, lines=None, timestamp=None, timestamps=None, **_):
        stamps = timestamps if timestamps is not None else [timestamp] * len(lines)
        self.lines.extend([float(ts), str(text)] for ts, text in zip(stamps, lines))


def feed_one(request: dict) -> dict:
    chunks = [base64.b64decode(c) for c in request["chunks"]]
    if request.get("eof"):
        chunks.append(b"")  # the peer closed: the listener's next read returns nothing
    hub = HubRecorder()
    listener = upstream_logs.LogsStreamListener(types.SimpleNamespace(hub=hub),
                                                ChunkSource(chunks))
    listener.stream_id = 0  # as register_stream() leaves it
    listener.server_timestamps = request["mode"] == "NO_TIMESTAMPS"
    closed = None
    errors = []
    upstream_logs.print = lambda *args: errors.append(" ".join(map(str, args)))
    now = time.time()
    try:
        while listener.sock_file.chunks:
            if listener.handle_event(now) is False:
                closed = "error" if errors else "close"
                break
    finally:
        del upstream_logs.print
    return {"lines": hub.lines, "closed": closed, "now": now}


def feed(args) -> int:
    for request_line in sys.stdin:
        print(json.dumps(feed_one(json.loads(request_line))), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("records")
    p_serve.add_argument("--slow", type=float, default=0.0)
    p_serve.add_argument("--seed", type=int, default=0)
    p_serve.add_argument("--mss", type=int, default=0, help="TCP segment size of the logs port")
    p_serve.add_argument("--tftp-root")
    p_serve.add_argument("--device", help="JSON {mac: {field: value}} for get_device_info")
    sub.add_parser("feed")
    args = parser.parse_args()
    return serve(args) if args.command == "serve" else feed(args)


if __name__ == "__main__":
    sys.exit(main())
