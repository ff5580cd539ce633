"""Accepting client connections on a listening socket, with a say in when not to.

uvloop's own servers accept whatever arrives, and on EMFILE/ENFILE libuv accepts and closes the
pending connection (its "EMFILE trick": the client sees a reset) and uvloop then closes the
listening handle for good: the gateway silently stops accepting. So fastgw accepts itself: the
loop tells it the listening socket is readable, it calls accept() (a batch per wake-up), and each
accepted socket becomes a uvloop transport with `loop.connect_accepted_socket` (TLS included).

- **pause()/resume()**: the gateway stops accepting at `[gateway] max_connections`; new clients
  then wait in the kernel's listen backlog (nobody is accepted and then reset), and accepting
  resumes when a connection closes.
- **Descriptors run out (EMFILE, ENFILE) or kernel memory does (ENOBUFS, ENOMEM)**: accepting
  pauses for EXHAUSTED_PAUSE seconds and then resumes by itself; no busy loop. Each occurrence is
  counted (stats.Stats.accept_errors); a warning is logged at most once a second.

`connect_accepted_socket` is a coroutine; it is driven here without a Task (`drive`): it runs
to the point where it waits for connection_made (or the TLS handshake), and one done-callback on
that future finishes it. A Task per connection would cost more than the rest of the accept.
"""

from __future__ import annotations

import _socket
import errno
import socket
import time
from asyncio import CancelledError
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from fastgw import log
from fastgw.errors import SHORTAGES
from fastgw.stats import Stats

# accept() calls per readable event, adapted between 1 and MAX_BATCH: an accept() that finds the
# queue empty fails with EAGAIN, whose exception costs a quarter of what accepting costs, so one
# at a time while connections come one by one (readiness is level-triggered: one still queued
# wakes the loop again); doubling while every call finds one (a reconnection storm); halving
# when one finds none.
MAX_BATCH = 64
EXHAUSTED_PAUSE = 0.25  # seconds without accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM
# The connection went away between the kernel's queue and accept(): try the next one.
_GONE = (errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR)


def drive(coro: Coroutine[Any, Any, Any], failed: Callable[[], None]) -> None:
    """Run a coroutine that only awaits futures, without a Task (see the module docstring);
    `failed()` if it raises."""
    try:
        waiter = coro.send(None)
    except StopIteration:
        return
    except (Exception, CancelledError):  # the connection failed (a TLS handshake): uvloop
        failed()  # closed it already
        return
    waiter.add_done_callback(lambda _: drive(coro, failed))


class Acceptor:
    __slots__ = ("loop", "sock", "family", "factory", "failed", "ssl", "name", "stats", "reading",
                 "paused", "exhausted_until", "warned_at", "closed", "batch", "handshake_timeout",
                 "gate")

    def __init__(self, loop: Any, sock: socket.socket, factory: Callable[[], Any],
                 failed: Callable[[Any], None], ssl: Any, name: str, stats: Stats,
                 handshake_timeout: float = 10.0):
        """`factory()` makes the protocol of an accepted connection; `failed(protocol)` is told
        when that connection ended before the protocol was connected (a TLS handshake that
        failed): it will never see connection_made or connection_lost."""
        self.loop = loop
        self.sock = sock
        self.family = sock.family
        self.factory = factory
        self.failed = failed
        # A TLS handshake counts against max_connections: it must end (header_timeout).
        self.handshake_timeout = handshake_timeout
        self.ssl = ssl
        self.name = name  # "address:port", for the log
        self.stats = stats
        self.reading = False
        self.paused = False  # by the gateway: max_connections
        self.exhausted_until = 0.0  # loop time: descriptors (or memory) ran out
        self.warned_at = 0.0
        self.closed = False
        self.batch = 1  # accept() calls per readable event (see MAX_BATCH)
        # clientgate.ClientGate, or None: PROXY protocol and per-client limits look at each
        # accepted socket first, then call connect() (or close it).
        self.gate: Any = None
        sock.setblocking(False)

    def start(self) -> None:
        self._update()

    def pause(self) -> None:
        self.paused = True
        self._update()

    def resume(self) -> None:
        self.paused = False
        self._update()

    def close(self) -> None:
        """Stop accepting and close the listening socket (stop, reload without the port)."""
        self.closed = True
        self._update()
        self.sock.close()

    def _update(self) -> None:
        want = not self.closed and not self.paused and self.loop.time() >= self.exhausted_until
        if want and not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._ready)
            self.reading = True
        elif not want and self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def _retry(self) -> None:
        self.exhausted_until = 0.0
        self._update()

    def _ready(self) -> None:
        batch = self.batch
        for _ in range(batch):
            if not self.reading:
                return  # paused by the connection just accepted
            try:
                # The C-level accept: (fd, address), without socket.py's Python wrapper.
                fd, address = self.sock._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                if batch > 1:
                    self.batch = batch // 2
                return
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                if exc.errno in SHORTAGES:
                    self._exhausted(exc)
                    return
                raise
            conn = _socket.socket(self.family, socket.SOCK_STREAM, 0, fd)
            if self.gate is None:
                self.connect(conn, None)
            else:
                self.gate.accepted(conn, address)
        if batch < MAX_BATCH:
            self.batch = batch * 2  # every call found a connection: more are probably queued

    def connect(self, conn: Any, client: tuple | None) -> None:
        """Make the transport (and its protocol) of an accepted socket. `client`: the address
        the gate admitted (the PROXY source, or the peer), which the protocol takes as its
        client address; None without a gate."""
        made: list = []  # the protocol, once factory() has made it
        try:
            if self.ssl is None:
                coro = self.loop.connect_accepted_socket(partial(self._make, made, client), conn)
            else:
                coro = self.loop.connect_accepted_socket(
                    partial(self._make, made, client), conn, ssl=self.ssl,
                    ssl_handshake_timeout=self.handshake_timeout)
            drive(coro, partial(self._failed, made, client))
        except Exception as exc:  # e.g. uvloop could not make a transport of it
            conn.close()
            self._failed(made, client)
            log.event(log.WARNING, "accept_failed", listener=self.name, error=repr(exc))

    def _make(self, made: list, client: tuple | None) -> Any:
        protocol = self.factory()
        if client is not None:
            protocol.peer_ip, protocol.peer_port = client
            protocol.gate = self.gate  # told when the connection ends (per-client counts)
        made.append(protocol)
        return protocol

    def _failed(self, made: list, client: tuple | None) -> None:
        if made:
            self.failed(made[0])
        elif client is not None:
            self.gate.closed(client[0])

    def _exhausted(self, exc: OSError) -> None:
        """Out of descriptors (or kernel memory): wait in the backlog, try again shortly."""
        reason = SHORTAGES[exc.errno or 0]
        self.stats.accept_errors[(reason,)] += 1
        self.exhausted_until = self.loop.time() + EXHAUSTED_PAUSE
        self._update()
        self.loop.call_later(EXHAUSTED_PAUSE, self._retry)
        now = time.monotonic()
        if now - self.warned_at >= 1.0:
            self.warned_at = now
            log.event(log.WARNING, "accept_paused", listener=self.name, error=reason,
                      cause="the gateway is out of file descriptors" if reason in ("EMFILE", "ENFILE")
                      else "the kernel is out of memory for sockets", pause_seconds=EXHAUSTED_PAUSE,
                      total=sum(self.stats.accept_errors.values()))
