"""The upstream WalT 10.0 code as a test oracle (tests/conformance).

:func:`build_upstream` runs ``scripts/upstream-venv.sh`` (cached venv with the
walt-server / walt-common / walt-node 10.0 wheels); :class:`UpstreamServer`
runs ``tests/conformance/upstream_driver.py serve`` in that venv: upstream's
own event loop, logs listener, fake TFTP and API hub session classes on
loopback, recording what reaches them as JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from support.wait import wait_until

REPO = Path(__file__).resolve().parent.parent.parent
DRIVER = REPO / "tests" / "conformance" / "upstream_driver.py"


class UpstreamUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Upstream:
    venv: Path
    python: Path
    site_packages: Path

    @property
    def mount_dir(self) -> Path:
        """The node shell tools the server copies into images (walt-log-echo, ...)."""
        return self.site_packages / "walt" / "server" / "mount"


def build_upstream() -> Upstream:
    result = subprocess.run([str(REPO / "scripts" / "upstream-venv.sh")], capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        raise UpstreamUnavailable(f"scripts/upstream-venv.sh failed:\n{result.stderr[-3000:]}")
    venv = Path(result.stdout.strip().splitlines()[-1])
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import walt, os; print(os.path.dirname("
                                              "os.path.dirname(walt.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return Upstream(venv, python, Path(site))


class UpstreamServer:
    """upstream_driver.py serve: the real listener classes on two loopback ports."""

    def __init__(self, upstream: Upstream, workdir: Path, slow: float = 0.0, seed: int = 0,
                 mss: int = 0, tftp_root: Optional[Path] = None, devices: Optional[Dict[str, Any]] = None):
        self.records_path = workdir / "upstream-records.jsonl"
        self.records_path.write_text("")
        command = [str(upstream.python), str(DRIVER), "serve", str(self.records_path),
                   "--slow", str(slow), "--seed", str(seed), "--mss", str(mss)]
        if tftp_root is not None:
            command += ["--tftp-root", str(tftp_root)]
        if devices is not None:
            command += ["--device", json.dumps(devices)]
        self.output = open(workdir / "upstream-driver.out", "w+")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.output, text=True, cwd=str(workdir))
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()  # blocks until it listens (or dies)
        if len(first) != 3 or first[0] != "PORTS":
            self.stop()
            self.output.seek(0)
            raise UpstreamUnavailable(f"upstream driver did not start: {self.output.read()[-3000:]}")
        self.logs_port, self.api_port = int(first[1]), int(first[2])
        self.host = "127.0.0.1"
        self._offset = 0
        self._records: List[Dict[str, Any]] = []
        self._partial = ""

    def records(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        """Everything recorded so far (read incrementally from the driver's file)."""
        with open(self.records_path, encoding="utf-8") as stream:
            stream.seek(self._offset)
            data = stream.read()
            self._offset = stream.tell()
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        self._records.extend(json.loads(line) for line in lines if line)
        if kind is None:
            return list(self._records)
        return [r for r in self._records if r["kind"] == kind]

    def lines(self, stream: Optional[str] = None) -> List[str]:
        return [r["line"] for r in self.records("log") if stream is None or r["stream"] == stream]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Wait until ``predicate`` holds (records are polled; the driver flushes each batch)."""
        wait_until(lambda: predicate() or self.process.poll() is not None, timeout, step=0.01)
        return predicate()

    def stderr(self) -> str:
        self.output.flush()
        return Path(self.output.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the driver stops when its stdin closes
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()

    def __enter__(self) -> UpstreamServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class UpstreamFeeder:
    """upstream_driver.py feed: the real listener fed chosen recv() chunks, one stream a line."""

    def __init__(self, upstream: Upstream):
        self.process = subprocess.Popen([str(upstream.python), str(DRIVER), "feed"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def feed(self, mode: str, chunks: List[bytes], eof: bool) -> Dict[str, Any]:
        import base64

        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"mode": mode, "chunks": [base64.b64encode(c).decode() for c in chunks],
                   "eof": eof}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise UpstreamUnavailable("the upstream feed driver died")
        return json.loads(answer)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
