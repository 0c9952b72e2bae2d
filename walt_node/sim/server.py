"""The loopback WalT server simulator: logs/TFTP port, rpc port, http port."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Callable, List, Optional

from walt_node.files import write_atomically
from walt_node.sim.config import SimConfig
from walt_node.sim.inventory import Inventory
from walt_node.sim.records import ApiCall, LogRecord, Records
from walt_node.sim.services import ApiPort, LogsPort
from walt_node.sim.tcp import TcpService
from walt_node.sim.web import WebService


class Simulator:
    """Run with ``with Simulator(cfg) as sim:``; ports 0 mean automatic.

    ``stop()`` then ``start()`` restarts on the same ports and keeps the records.
    """

    def __init__(self, config: Optional[SimConfig] = None, host: str = "127.0.0.1",
                 logs_port: int = 0, rpc_port: int = 0, http_port: int = 0,
                 records_path: Optional[Path] = None, show_logs: Optional[IO[str]] = None,
                 lenient_logs: bool = False):
        self.config = config or SimConfig()
        self.host = host
        self.inventory = Inventory(self.config)
        self.records = Records(records_path, show_logs)
        # lenient_logs: read log streams line by line, forgiving what a WalT 10 server refuses
        self._logs = TcpService("logs", host, logs_port,
                                LogsPort(self.inventory, self.records, lenient_logs))
        self._rpc = TcpService("rpc", host, rpc_port, ApiPort(self.inventory, self.records))
        self._web = WebService(host, http_port, self.inventory)
        self.running = False

    # --- life cycle ---
    def start(self) -> Simulator:
        if self.running:
            return self
        started: List[Any] = []
        try:
            for service in (self._logs, self._rpc, self._web):
                service.start()
                started.append(service)
        except OSError:
            for service in started:
                service.stop()
            raise
        self.running = True
        return self

    def stop(self) -> None:
        """Stop listening and drop live connections abruptly (no ``<disconnected!>`` is
        recorded for them: the server is the one going away)."""
        for service in (self._web, self._rpc, self._logs):
            service.stop()
        self.running = False

    def kill_connections(self) -> None:
        """Drop every live logs/rpc connection but keep listening."""
        self._logs.kill_connections()
        self._rpc.kill_connections()

    def live_connections(self) -> int:
        """Open logs/rpc connections (a handler finished with one has closed it)."""
        return self._logs.live_connections() + self._rpc.live_connections()

    def close(self) -> None:
        self.stop()
        self.records.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- addresses ---
    @property
    def logs_port(self) -> int:
        return self._logs.port

    @property
    def rpc_port(self) -> int:
        return self._rpc.port

    @property
    def http_port(self) -> int:
        return self._web.port

    def state(self) -> dict:
        return {"host": self.host, "logs_port": self.logs_port, "rpc_port": self.rpc_port,
                "http_port": self.http_port, "pid": os.getpid(),
                "records": os.path.abspath(self.records.path) if self.records.path else None}

    def write_state(self, path: Path) -> None:
        """Write the state file atomically, so a reader never sees half of it."""
        write_atomically(path, json.dumps(self.state(), indent=2) + "\n")

    # --- records ---
    def log_records(self) -> List[LogRecord]:
        return self.records.logs()

    def api_calls(self) -> List[ApiCall]:
        return self.records.calls()

    def wait_for_logs(self, predicate: Callable[[List[LogRecord]], bool],
                      timeout: float = 10.0) -> List[LogRecord]:
        """Wait until ``predicate(records)`` holds; return the records, TimeoutError if not."""
        if not self.records.wait_for(lambda: predicate(self.records.logs()), timeout):
            logs = self.records.logs()
            raise TimeoutError(f"simulator: log condition not met within {timeout}s; "
                               f"{len(logs)} line(s) received, last: {logs[-3:]!r}")
        return self.records.logs()

    def wait_for_calls(self, predicate: Callable[[List[ApiCall]], bool],
                       timeout: float = 10.0) -> List[ApiCall]:
        if not self.records.wait_for(lambda: predicate(self.records.calls()), timeout):
            raise TimeoutError(f"simulator: API call condition not met within {timeout}s; "
                               f"calls: {self.records.calls()[-3:]!r}")
        return self.records.calls()

    # --- control ---
    def bind(self, mac: str, fullname: str) -> None:
        self.inventory.bind(mac, fullname)

    def set_conf(self, mac: str, key: str, value: Any) -> None:
        self.inventory.set_conf(mac, key, value)
