"""A log destination written in batches from the event loop: the access log and the firewall log.

Destination: "-" (stderr, through log.py's writer thread: a pipe read slowly must not stall
the loop) or a file path (opened for append; reopened on SIGHUP so that logrotate works). Lines
are kept in memory and written together, as nginx's `access_log ...
buffer=64k flush=1s` does: when BUFFER_BYTES have gathered, or FLUSH_SECONDS after the first
line of a batch, whichever comes first, and on reopen, stop and exit. One write system call per
batch to a file, on the loop's own thread: no writer thread, no queue, no GIL handoff per line
(on a core shared with the loop, every handoff to a thread is a context switch).

A write that fails (a full disk, a file system gone read-only, an I/O error) never stops the
gateway and never blocks it: the lines are kept, up to RETAIN_BYTES (the oldest are dropped
beyond that, and counted), and written with the next batch. Each episode is logged once, as an
event (`log_write_failed`, then `log_write_recovered` with how many lines were lost), and counted
in stats.Stats.log_errors / log_dropped (metrics: fastgw_log_write_errors, fastgw_log_dropped).
"""

from __future__ import annotations

import errno
import os
from typing import Any

from fastgw import log
from fastgw.stats import Stats

BUFFER_BYTES = 64 * 1024  # write when this much has gathered (nginx: buffer=64k)
FLUSH_SECONDS = 1.0  # ... or when the oldest line is this old (nginx: flush=1s)
RETAIN_BYTES = 4 * 1024 * 1024  # kept across failed writes; older lines are dropped


class LogFile:
    __slots__ = ("destination", "name", "loop", "stats", "text", "fd", "lines", "size", "timer",
                 "failing", "dropped")

    def __init__(self, destination: str, name: str, loop: Any, stats: Stats):
        self.destination = destination
        self.name = name  # "access" or "firewall": the `log` field of its records
        self.loop = loop
        self.stats = stats
        # Text lines instead of JSON for a terminal (log.setup); a file always gets JSON.
        self.text = destination == "-" and log.text_format()
        self.fd = -1 if destination == "-" else self._open()
        self.lines: list[bytes] = []
        self.size = 0
        self.timer: Any = None
        self.failing = False  # the last write failed (logged once per episode)
        self.dropped = 0  # lines dropped in the current episode

    def _open(self) -> int:
        return os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       0o644)

    def write(self, line: bytes) -> None:
        """Queue one JSON record line (UTF-8, without its newline)."""
        if self.text:
            line = log.json_to_text(line.decode("utf-8")).encode("utf-8", "replace")
        self.lines.append(line)
        self.size += len(line) + 1
        if self.size >= BUFFER_BYTES:
            if not self.failing:
                self.flush()
            elif self.size > RETAIN_BYTES + BUFFER_BYTES:
                self._trim()  # while writes fail, only the timer retries: once a second
        elif self.timer is None:
            self.timer = self.loop.call_later(FLUSH_SECONDS, self._timed_flush)

    def write_record(self, record: dict[str, Any], level: str = "info") -> None:
        """Queue one record built as a dict (the firewall log's), in the log envelope."""
        self.write(log.json_record(self.name, level, record).encode("utf-8", "replace"))

    def _timed_flush(self) -> None:
        self.timer = None
        self.flush()

    def flush(self) -> None:
        """Write what has gathered, in one system call (more only for a partial write)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines:
            return
        payload = whole = b"\n".join(self.lines) + b"\n"
        if self.fd < 0:
            self.lines = []
            self.size = 0
            log.write_stderr(whole.decode("utf-8", "replace"))
            return
        try:
            while payload:
                payload = payload[os.write(self.fd, payload):]
        except OSError as exc:
            done = len(whole) - len(payload)
            # A write that stopped inside a line: the rest of that line alone is no record.
            self._failed(exc, payload, done > 0 and whole[done - 1] != 0x0A)
            return
        self.lines = []
        self.size = 0
        if self.failing:
            self.failing = False
            log.event(log.WARNING, "log_write_recovered", log=self.name,
                      destination=self.destination, dropped_lines=self.dropped)
            self.dropped = 0

    def _failed(self, exc: OSError, unwritten: bytes, mid_line: bool) -> None:
        """Keep what was not written (bounded), count, log the episode once, retry later."""
        self.stats.log_errors[(self.name, errno.errorcode.get(exc.errno or 0, "other"))] += 1
        if not self.failing:
            self.failing = True
            log.event(log.ERROR, "log_write_failed", log=self.name, destination=self.destination,
                      error=exc.strerror or str(exc), retained_bytes=RETAIN_BYTES)
        # What was not written is the tail of the batch: keep its whole lines.
        self.lines = [line for line in unwritten.split(b"\n") if line]
        if mid_line and self.lines:
            del self.lines[0]
            self.dropped += 1
            self.stats.log_dropped[(self.name,)] += 1
        self.size = sum(len(line) + 1 for line in self.lines)
        self._trim()
        if self.lines:
            self.timer = self.loop.call_later(FLUSH_SECONDS, self._timed_flush)

    def _trim(self) -> None:
        """Drop the oldest lines beyond RETAIN_BYTES (counted)."""
        lines = self.lines
        size = self.size
        first = 0
        while first < len(lines) and size > RETAIN_BYTES:
            size -= len(lines[first]) + 1
            first += 1
        if first:
            del lines[:first]
            self.dropped += first
            self.stats.log_dropped[(self.name,)] += first
        self.size = size

    def reopen(self) -> None:
        """After log rotation (SIGHUP): flush into the old file, then write to a fresh file of
        the same name."""
        self.flush()
        if self.fd < 0:
            return
        try:
            fd = self._open()
        except OSError as exc:
            log.event(log.ERROR, "log_reopen_failed", log=self.name, destination=self.destination,
                      error=exc.strerror or str(exc))
            return
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        """Write what is left and close (stop, or a reload that changes the destination)."""
        self.flush()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
