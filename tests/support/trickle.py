"""A hostile loopback server: it answers every connection with one byte every
``interval`` seconds, so that no single read ever times out.

It stops by itself: each connection gets ``reply`` once (a bounded number of
bytes), then the server closes it. It records, per connection, how many bytes it
sent before the client hung up, which lets a test prove that the client gave up
while the server was still trickling, without measuring time.
"""

from __future__ import annotations

import socket
import threading
from typing import List


class TrickleServer:
    def __init__(self, reply: bytes, interval: float):
        self.reply, self.interval = reply, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Condition()
        self.accepted = 0
        self.sent: List[int] = []  # bytes sent, per finished connection
        self.completed = 0  # connections that received the whole reply
        self.stopping = threading.Event()
        self.threads: List[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by stop()
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            with self.lock:
                self.accepted += 1
                self.threads.append(thread)
            thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        sent = 0
        with conn:
            for byte in self.reply:
                if self.stopping.wait(self.interval):
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break  # the client hung up
                sent += 1
        with self.lock:
            self.sent.append(sent)
            if sent == len(self.reply):
                self.completed += 1
            self.lock.notify_all()

    def wait_all_finished(self, timeout: float = 10) -> bool:
        """Wait until every accepted connection ended (the client hung up, or the whole
        reply went out); True if they did."""
        with self.lock:
            return self.lock.wait_for(lambda: len(self.sent) == self.accepted, timeout)

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> TrickleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
