"""A standard :class:`logging.Handler` sending records to a WalT log stream."""

from __future__ import annotations

import logging

from walt_node import log as walt_log


class WaltLogHandler(logging.Handler):
    """Format each record and ``walt_node.log.echo`` it to ``stream``, stamped
    with the record's creation time.  Never blocks on the network.

        logging.getLogger().addHandler(WaltLogHandler(stream="experiment"))
    """

    def __init__(self, stream: str, level: int = logging.NOTSET):
        walt_log._check_stream(stream)
        super().__init__(level)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            walt_log.echo(self.stream, self.format(record), ts=record.created)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        walt_log.flush(timeout=5.0)
