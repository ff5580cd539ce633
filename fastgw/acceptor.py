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

`connect_accepted_socket` is a coroutine; it is driven here without a Task (`Driven`): it runs
to the point where it waits for connection_made (or the TLS handshake), and one done-callback on
that future finishes it. A Task per connection would cost more than the rest of the accept.

On uvloop the accepted descriptor goes to `connect_accepted_socket` in an `Accepted`, not a
socket object: uvloop reads a socket's family, type and fileno(), hands the descriptor to libuv
(which closes it with the transport) and calls close() on the object afterwards. Making a
socket object costs a getsockname() (CPython validates the descriptor), and uvloop's close()
of a `_socket.socket` then fails with EBADF (an exception per connection); `Accepted` has
neither cost. Other loops keep the descriptor's socket object and get a `socket.socket`.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
import time
from asyncio import CancelledError
from collections.abc import Callable, Coroutine
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


class Driven:
    """Runs a coroutine that only awaits futures, without a Task (see the module docstring):
    each future it waits for calls this object when done, which resumes it. Its end goes to
    `owner.coro_done(result)`, a failure to `owner.coro_failed(exc)`. close() abandons it."""

    __slots__ = ("coro", "owner")

    def __init__(self, coro: Coroutine[Any, Any, Any], owner: Any):
        self.coro: Any = coro
        self.owner = owner

    def __call__(self, _: Any = None) -> None:
        coro = self.coro
        if coro is None:
            return  # closed while it waited
        try:
            waiter = coro.send(None)
        except StopIteration as stop:
            self.coro = None
            self.owner.coro_done(stop.value)
            return
        except (Exception, CancelledError) as exc:
            self.coro = None
            self.owner.coro_failed(exc)
            return
        waiter.add_done_callback(self)

    def close(self) -> None:
        coro = self.coro
        if coro is not None:
            self.coro = None
            coro.close()


class Accepted:
    """An accepted connection until its protocol is connected: the stand-in for its socket that
    uvloop's connect_accepted_socket takes (see the module docstring), the protocol factory
    (calling it makes the protocol), and the owner of the coroutine that makes its transport."""

    __slots__ = ("fd", "family", "type", "acceptor", "client", "protocol", "taken")

    def __init__(self, fd: int, family: int, acceptor: Acceptor, client: tuple | None):
        self.fd = fd
        self.family = family
        self.type = socket.SOCK_STREAM
        self.acceptor = acceptor
        self.client = client  # the client's (ip, port): Acceptor.connect's, or accept()'s
        self.protocol: Any = None
        self.taken = False  # uvloop has the descriptor: libuv closes it

    def fileno(self) -> int:
        self.taken = True  # read only to hand the descriptor to libuv
        return self.fd

    def close(self) -> None:
        if not self.taken:
            self.taken = True
            os.close(self.fd)

    def __call__(self) -> Any:
        acceptor = self.acceptor
        protocol = self.protocol = acceptor.factory()
        client = self.client
        if client is not None:
            protocol.peer_ip, protocol.peer_port = client
            # With a gate: told when the connection ends (per-client counts).
            protocol.gate = acceptor.gate
        return protocol

    def coro_done(self, result: Any) -> None:
        self.protocol = None  # connected: the transport has it

    def coro_failed(self, exc: BaseException) -> None:
        # The connection failed before its protocol was connected (a TLS handshake): uvloop
        # closed it already.
        if self.protocol is not None:
            self.acceptor.failed(self.protocol)
            self.protocol = None
        elif self.client is not None and self.acceptor.gate is not None:
            self.acceptor.gate.closed(self.client[0])
            self.client = None


class Acceptor:
    __slots__ = ("loop", "sock", "family", "factory", "failed", "ssl", "name", "stats", "reading",
                 "paused", "exhausted_until", "warned_at", "closed", "batch", "handshake_timeout",
                 "gate", "stand_in")

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
        # uvloop takes an Accepted for the descriptor (see the module docstring).
        self.stand_in = type(loop).__module__.startswith("uvloop")
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
            if self.gate is not None:
                self.gate.accepted(_socket.socket(self.family, socket.SOCK_STREAM, 0, fd), address)
            elif self.stand_in:
                # The peer's address as accept() returned it: the protocol need not ask the
                # transport (a getpeername() and uvloop's extra-info lookup saved).
                self.connect(Accepted(fd, self.family, self, address[:2]), None)
            else:
                self.connect(socket.socket(self.family, socket.SOCK_STREAM, 0, fd), None)
        if batch < MAX_BATCH:
            self.batch = batch * 2  # every call found a connection: more are probably queued

    def connect(self, conn: Any, client: tuple | None) -> None:
        """Make the transport (and its protocol) of an accepted connection: `conn` is its
        socket, or its Accepted (see the module docstring). `client`: the address the gate
        admitted (the PROXY source, or the peer), which the protocol takes as its client
        address; None without a gate."""
        accepted = conn if isinstance(conn, Accepted) else Accepted(conn.fileno(), self.family,
                                                                    self, client)
        try:
            if self.ssl is None:
                coro = self.loop.connect_accepted_socket(accepted, conn)
            else:
                coro = self.loop.connect_accepted_socket(
                    accepted, conn, ssl=self.ssl, ssl_handshake_timeout=self.handshake_timeout)
            Driven(coro, accepted)()
        except Exception as exc:  # e.g. uvloop could not make a transport of it
            conn.close()  # (an Accepted whose descriptor libuv took leaves it to libuv)
            accepted.coro_failed(exc)
            log.event(log.WARNING, "accept_failed", listener=self.name, error=repr(exc))

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
