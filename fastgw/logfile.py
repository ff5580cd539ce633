"""A log destination: JSON lines to stderr or to a file (the access log, the firewall log).

Destination: "-" (stderr) or a file path (opened for append; reopened on SIGHUP so logrotate
works). Logging never blocks the event loop: records go through a queue to a writer thread,
which serialises and writes them.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from typing import Any, TextIO

_STOP = object()


class LogFile:
    def __init__(self, destination: str):
        self.destination = destination
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.stream: TextIO = self._open()
        self.thread = threading.Thread(target=self._run, name="fastgw-log-writer", daemon=True)
        self.thread.start()

    def _open(self) -> TextIO:
        if self.destination == "-":
            return sys.stderr
        return open(self.destination, "a", encoding="utf-8", buffering=1 << 16)

    def reopen(self) -> None:
        """After log rotation (SIGHUP): write to a fresh file of the same name."""
        if self.destination == "-":
            return
        with self.lock:
            old, self.stream = self.stream, self._open()
            old.close()

    def write(self, record: dict[str, Any]) -> None:
        self.queue.put(record)

    def _run(self) -> None:
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
        while True:
            record = self.queue.get()
            if record is _STOP:
                break
            lines = [dumps(record)]
            # Drain what else is waiting: one write call for a burst.
            while True:
                try:
                    record = self.queue.get_nowait()
                except queue.Empty:
                    break
                if record is _STOP:
                    self._write(lines)
                    return
                lines.append(dumps(record))
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with self.lock:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # a full disk must not take the gateway down
                pass

    def close(self) -> None:
        self.queue.put(_STOP)
        self.thread.join(5)
        if self.destination != "-":
            self.stream.close()
