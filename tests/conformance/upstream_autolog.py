"""Runs WalT 10.0's own serial autolog reader on mote transcripts; prints what it sends.

This script runs INSIDE the upstream venv (scripts/upstream-venv.sh), never in
walt-node's.  It drives the real ``SensorLogsMonitor.handle_event`` of the
walt-node 10.0 wheel, one call per mote line as upstream's event loop makes
them, with the serial device, the logs FIFO and the debug copies replaced by
in-memory files (the only things its constructor opens).

stdin: one JSON object per line, ``{"lines": [base64 of each line's bytes], "ts": [float]}``.
stdout: one JSON object per input line, ``{"requests": [...], "in": str, "out": str,
"crash": null | {"line": index, "error": "Type: message"}}``: the ``TSLOG`` requests
written to the logs FIFO, the debug copies, and where the reader crashed if it did.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import sys

from walt.node.serial.autolog import SensorLogsMonitor


def run(lines, stamps):
    monitor = SensorLogsMonitor.__new__(SensorLogsMonitor)  # its __init__ opens the device
    monitor.f = io.BytesIO(b"".join(lines))
    monitor.walt_logs = io.StringIO()
    monitor.in_dbg_log = io.StringIO()
    monitor.out_dbg_log = io.StringIO()
    monitor.logdefs = []
    monitor.logvars = {}
    monitor.started = False
    crash = None
    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it sends
        for index, ts in enumerate(stamps):
            try:
                if monitor.handle_event(ts) is False:
                    break
            except Exception as error:  # upstream's process would die here
                crash = {"line": index, "error": f"{type(error).__name__}: {error}"}
                break
    return {"requests": monitor.walt_logs.getvalue().splitlines(),
            "in": monitor.in_dbg_log.getvalue(), "out": monitor.out_dbg_log.getvalue(),
            "crash": crash}


def main():
    for request in sys.stdin:
        job = json.loads(request)
        lines = [base64.b64decode(line) for line in job["lines"]]
        print(json.dumps(run(lines, job["ts"])), flush=True)


if __name__ == "__main__":
    main()
