"""A WebSocket session after the 101: two legs, two pumps, and the close policy.

The per-byte work happens in the frame engine (fastgw.frames.Pump and FrameScanner): each pump
reads one leg, scans every frame header of the read in one call and forwards the bytes, still
masked from the client, untouched. This module runs only for what is rare: control frames, errors,
end of stream, timeouts.

* Close frames are relayed with their code and reason; a leg's close handshake is complete when a
  Close went into it and one came out of it, and then its TCP connection is closed.
* The gateway ends a session with a Close frame of its own to each leg still open, never a bare
  TCP drop (a client would report 1006): what each leg gets is closepolicy.plan's table. A
  gateway frame goes into a leg only at a frame boundary of the stream into it; mid-frame, the
  only honest signal left is closing that TCP connection.
* After the first Close the session has `close_timeout` to finish; then what is still open is cut.

Session states (SessionState), and the transitions this module makes:

    OPEN     -- a Close went into some leg (relayed, or the gateway's own) -->  CLOSING
    OPEN, CLOSING  -- both TCP connections are gone -->                         CLOSED
"""

from __future__ import annotations

import enum
from time import monotonic
from typing import TYPE_CHECKING, Any

from fastgw import log
from fastgw.closepolicy import BACKEND, CLIENT, GOING_AWAY, SIDES, Ending, plan
from fastgw.contracts import ClientSide, Recorder
from fastgw.errors import FrameError
from fastgw.frames import (
    EV_CONTROL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameScanner,
    Pump,
    apply_mask,
    build_close,
    build_frame,
    parse_close,
)
from fastgw.log import DEBUG, enabled  # two module lookups fewer per session
from fastgw.timeouts import NEVER

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.upstream import UpstreamConnection


# Seconds before a Ping that had to wait for the end of a frame is tried again.
PING_RETRY = 0.2


class SessionState(enum.IntEnum):
    OPEN = 0
    CLOSING = 1
    CLOSED = 2


OPEN, CLOSING, CLOSED = SessionState  # module globals: cheaper to read

# What the other leg gets when a leg is lost, by the lost leg (closepolicy.plan's LOST rows):
# every session ends with its legs lost, so the plan is made once here, not per session.
LOST_PLANS = (plan(Ending.LOST, CLIENT), plan(Ending.LOST, BACKEND))


class WebSocketSession:
    __slots__ = ("client", "exchange", "recorder", "loop", "endpoint", "route", "idle_timeout",
                 "close_timeout", "pumps", "transports", "state", "sent_close", "got_close",
                 "open", "close_code", "close_reason", "closed_by", "started", "duration",
                 "ended", "ping_interval", "ping_timeout", "ping_sent", "pongs_due", "ping_count",
                 "stalled_since", "stalled_size", "upgrades")

    def __init__(self, client: ClientSide, upstream: UpstreamConnection, exchange: Any,
                 deflate: bool, recorder: Recorder, close_timeout: float):
        self.client = client
        self.exchange = exchange
        self.recorder = recorder
        self.loop = client.loop
        self.endpoint = upstream.endpoint
        self.route = exchange.route
        settings = exchange.backend.settings
        self.idle_timeout = settings.request_timeout
        self.close_timeout = close_timeout
        self.ping_interval: float = settings.ping_interval  # 0: no dead-peer detection
        self.ping_timeout: float = settings.ping_timeout
        # Per leg: when the gateway's unanswered Ping went into it (0.0: none), and the payloads
        # of its Pings whose Pongs are still to be swallowed.
        self.ping_sent = [0.0, 0.0]
        self.pongs_due: list[list[bytes]] = [[], []]
        self.ping_count = 0
        # Per leg, while a Ping waits for a frame's end: since when its write buffer has not
        # shrunk (0.0: it is not stalled), and its size then.
        self.stalled_since = [0.0, 0.0]
        self.stalled_size = [0, 0]
        max_frame, max_message = settings.max_frame_size, settings.max_message_size
        # pumps[CLIENT] reads the client and writes to the backend; pumps[BACKEND] the reverse.
        # The keywords spelled out, not a **dict: each ** call merged a new dict.
        self.pumps = (
            Pump(FrameScanner(masked=True, allow_rsv1=deflate, max_frame_size=max_frame,
                              max_message_size=max_message), self, side="client"),
            Pump(FrameScanner(masked=False, allow_rsv1=deflate, max_frame_size=max_frame,
                              max_message_size=max_message), self, side="backend"))
        self.transports = (client.transport, upstream.transport)
        self.state = OPEN
        self.sent_close = [False, False]  # a Close went into this leg
        self.got_close = [False, False]  # a Close came out of this leg
        self.open = [True, True]  # its TCP connection is up
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None  # "client", "backend" or "gateway"
        self.started = monotonic()
        self.duration = 0.0
        self.ended = False
        self.upgrades = 0  # live upgrades this session went through (fastgw.handover)

    # -- setup -----------------------------------------------------------------------------

    def start(self, early_client: bytes, early_backend: bytes) -> None:
        """Take over both transports; `early_*` are bytes that came with the handshake."""
        from_client, from_backend = self.pumps
        client_t, backend_t = self.transports
        from_client.transport, from_client.sink = client_t, backend_t
        from_backend.transport, from_backend.sink = backend_t, client_t
        client_t.set_protocol(from_client)
        backend_t.set_protocol(from_backend)
        if early_backend:
            from_backend.feed(early_backend)
        if early_client:
            from_client.feed(early_client)
        client_t.resume_reading()
        backend_t.resume_reading()
        # Our deadlines live in the client connection's deadline_at (timeouts.Sweeper), which
        # calls on_deadline() below through ClientConnection.on_deadline.
        first = min(self.idle_timeout, self.ping_interval) if self.ping_interval > 0 \
            else self.idle_timeout
        self.client.deadline_at = self.loop.time() + first
        self.recorder.session_started(self)

    # -- the pumps' callbacks ----------------------------------------------------------------

    def on_control(self, pump: Any, data: memoryview, consumed: int) -> int:
        leg = CLIENT if pump is self.pumps[CLIENT] else BACKEND
        for event in pump.scanner.events:
            if event[0] != EV_CONTROL or event[1] != OP_CLOSE:
                continue  # ping and pong pass as they are
            _, _, offset, length, mask = event
            payload = bytearray(data[offset:offset + length])
            if mask is not None:
                apply_mask(payload, mask)
            try:
                code, reason = parse_close(payload)
            except FrameError as exc:
                # A Close with an invalid code or reason is the sender's protocol violation
                # (RFC 6455 section 7.4): forward what came before it, then fail the session.
                header = offset - (6 if mask is not None else 2)
                if pump.forwarding:
                    self._forward(pump, data, header)
                pump.forwarding = False
                self._violation(leg, exc)
                return 0
            self.got_close[leg] = True
            if self.closed_by is None:
                self.closed_by, self.close_code, self.close_reason = SIDES[leg], code, reason
            if pump.forwarding and self.open[1 - leg]:
                self.sent_close[1 - leg] = True  # relayed with this chunk
            self._enter_closing()
            self.loop.call_soon(self._reap)
        if self.pongs_due[leg] and self._swallow_pongs(pump, leg, data, consumed):
            return 0  # forwarded around the gateway's Pongs already
        return consumed

    def _swallow_pongs(self, pump: Any, leg: int, data: memoryview, consumed: int) -> bool:
        """Forward data[:consumed] except the Pongs that answer the gateway's own Pings (they
        are the gateway's; every other Ping and Pong passes). False: none here, nothing done."""
        skip = []
        for event in pump.scanner.events:
            if event[0] != EV_CONTROL or event[1] != OP_PONG:
                continue
            _, _, offset, length, mask = event
            payload = bytes(data[offset:offset + length])
            if mask is not None:
                unmasked = bytearray(payload)
                apply_mask(unmasked, mask)
                payload = bytes(unmasked)
            if payload in self.pongs_due[leg]:
                self.pongs_due[leg].remove(payload)
                self.ping_sent[leg] = 0.0
                skip.append((offset - (6 if mask is not None else 2), offset + length))
        if not skip:
            return False
        sink = pump.sink
        if pump.forwarding and sink is not None and not sink.is_closing():
            start = 0
            for begin, end in skip:
                if begin > start:
                    sink.write(bytes(data[start:begin]))
                start = end
            if consumed > start:
                sink.write(bytes(data[start:consumed]))
        return True

    def on_frame_error(self, pump: Any, exc: FrameError, data: memoryview) -> None:
        leg = CLIENT if pump is self.pumps[CLIENT] else BACKEND
        if pump.scanner.closed and exc.offset == 0:
            # Bytes after this leg's own Close (RFC 6455 section 1.4: after sending a Close an
            # endpoint sends no more data; a receiver may discard what still comes). Not a
            # violation worth failing the close handshake for: drop them (Autobahn 7.1.x).
            return
        if not self.sent_close[1 - leg]:
            self._forward(pump, data, exc.offset)  # the valid frames before the bad one
        self._violation(leg, exc)

    def on_eof(self, pump: Any) -> bool:
        return False  # a half-closed leg is done: close it (connection_lost follows)

    def on_connection_lost(self, pump: Any, exc: BaseException | None) -> None:
        leg = CLIENT if pump is self.pumps[CLIENT] else BACKEND
        if not self.open[leg]:
            return
        self.open[leg] = False
        self.pumps[1 - leg].sink = None  # nothing can be written into this leg any more
        self._apply(LOST_PLANS[leg], leg)

    # -- closing ---------------------------------------------------------------------------

    def end(self, ending: Ending) -> None:
        """The gateway ends the session (idle, shutdown, drained): closepolicy decides."""
        self._end_with(ending, CLIENT)

    def _violation(self, leg: int, exc: FrameError) -> None:
        log.event(log.INFO, "websocket_protocol_error", side=SIDES[leg], code=exc.code,
                  reason=exc.reason, **self._ids())
        self._end_with(Ending.VIOLATION, leg, exc.code, exc.reason)

    def _end_with(self, ending: Ending, side: int, code: int = 0, reason: str = "") -> None:
        """Apply closepolicy.plan to each leg still open, the leg the ending came from first."""
        self._apply(plan(ending, side, code, reason), side)

    def _apply(self, actions: tuple, side: int) -> None:
        """Carry out closepolicy's (client action, backend action), the leg `side` first."""
        for leg in (side, 1 - side):
            action = actions[leg]
            if action is None or not self.open[leg]:
                continue
            if action.code is not None and not self.sent_close[leg]:
                self._gateway_close(leg, action.code, action.reason)
            if action.cut and self.open[leg]:
                self._close_leg(leg)
        self._reap()

    def _gateway_close(self, leg: int, code: int, reason: str) -> None:
        """Send the gateway's own Close into `leg`, or cut it if that cannot be done cleanly."""
        into = self.pumps[1 - leg]  # the pump whose sink is this leg
        into.forwarding = False
        self.sent_close[leg] = True
        if self.closed_by is None:
            self.closed_by, self.close_code, self.close_reason = "gateway", code, reason
        transport = self.transports[leg]
        if into.scanner.at_boundary and not transport.is_closing():
            transport.write(build_close(code, reason, mask=(leg == BACKEND)))
        else:
            self._close_leg(leg, abort=True)  # mid-frame: no frame of ours can be understood
        self._enter_closing()

    def _enter_closing(self) -> None:
        if self.state == OPEN:
            self.state = CLOSING
            self.client.deadline_at = self.loop.time() + self.close_timeout

    def _reap(self) -> None:
        """Close each leg whose close handshake is complete; end the session when both are gone."""
        for leg in (CLIENT, BACKEND):
            if self.open[leg] and self.sent_close[leg] and self.got_close[leg]:
                self._close_leg(leg)  # flushes the last frames first
        if not self.open[CLIENT] and not self.open[BACKEND]:
            self._end()

    def _close_leg(self, leg: int, abort: bool = False) -> None:
        """Close one leg's TCP connection; nothing is forwarded into it afterwards (a write to
        a closed uvloop transport raises)."""
        self.pumps[1 - leg].forwarding = False
        transport = self.transports[leg]
        if abort:
            transport.abort()
        elif not transport.is_closing():
            transport.close()

    def on_deadline(self) -> None:
        if self.state == OPEN:
            # Reads do not move the deadline (that would cost a call per read); it is checked
            # against the pumps' last read times when it comes.
            now = monotonic()
            idle = now - max(self.pumps[CLIENT].last_read, self.pumps[BACKEND].last_read)
            if idle >= self.idle_timeout:
                log.event(log.INFO, "websocket_idle_timeout", timeout=self.idle_timeout,
                          **self._ids())
                self.end(Ending.IDLE)
                return
            wait = self.idle_timeout - idle
            if self.ping_interval > 0:
                wait = min(wait, self._check_peers(now))
                if self.state != OPEN:
                    return
            self.client.deadline_at = self.loop.time() + wait
        elif self.state == CLOSING:
            # The peers had close_timeout to answer; cut what is left.
            for leg in (CLIENT, BACKEND):
                if self.open[leg]:
                    self._close_leg(leg, abort=True)

    # -- dead-peer detection (settings' ping_interval, ping_timeout) -------------------------

    def _check_peers(self, now: float) -> float:
        """Ping each leg silent for ping_interval; end the session when one leaves the gateway's
        Ping unanswered (and says nothing else) for ping_timeout. Seconds until the next look."""
        wait = self.ping_interval
        for leg in (CLIENT, BACKEND):
            heard = self.pumps[leg].last_read
            sent = self.ping_sent[leg]
            if sent > 0:
                if heard > sent:  # it spoke since: alive (its Pong is swallowed if it comes)
                    self.ping_sent[leg] = 0.0
                elif now - sent >= self.ping_timeout:
                    self._unresponsive(leg)
                    return wait
                else:
                    wait = min(wait, sent + self.ping_timeout - now)
                    continue
            silent = now - heard
            if silent < self.ping_interval:
                wait = min(wait, self.ping_interval - silent)
            elif self._ping(leg, now):
                self.stalled_since[leg] = 0.0
                wait = min(wait, self.ping_timeout)
            else:
                # Mid-frame: the Ping waits for the frame's end. A peer that meanwhile takes
                # nothing of what is queued for it (a stream paused mid-frame into a vanished
                # host) for ping_timeout is as unresponsive as one that leaves a Ping unanswered.
                size = self.transports[leg].get_write_buffer_size()
                if size == 0:
                    self.stalled_since[leg] = 0.0
                elif self.stalled_since[leg] == 0.0 or size < self.stalled_size[leg]:
                    self.stalled_since[leg] = now  # stalled from now, or it took some: again
                    self.stalled_size[leg] = size
                elif now - self.stalled_since[leg] >= self.ping_timeout:
                    self._unresponsive(leg)
                    return wait
                wait = min(wait, PING_RETRY)
        return wait

    def _ping(self, leg: int, now: float) -> bool:
        """Send the gateway's Ping into `leg`, between two frames of what flows into it (never
        inside one; between fragments of a message is allowed, RFC 6455 section 5.4)."""
        transport = self.transports[leg]
        if not self.pumps[1 - leg].scanner.at_boundary or transport.is_closing():
            return False
        self.ping_count += 1
        payload = b"fastgw-ping-%d" % self.ping_count
        due = self.pongs_due[leg]
        due.append(payload)
        if len(due) > 4:  # a peer that answers none of them is ended long before
            del due[0]
        # Frames from the gateway to a server are masked, as a client's must be (section 5.3).
        transport.write(build_frame(OP_PING, payload, mask=(leg == BACKEND)))
        self.ping_sent[leg] = now
        return True

    def _unresponsive(self, leg: int) -> None:
        log.event(log.INFO, "websocket_peer_unresponsive", side=SIDES[leg],
                  timeout=self.ping_timeout, **self._ids())
        self.closed_by, self.close_code = "gateway", GOING_AWAY
        self.close_reason = f"{SIDES[leg]} unresponsive"  # the session-end record says who
        self._close_leg(leg, abort=True)  # nothing can be sent to it or flushed
        self._end_with(Ending.UNRESPONSIVE, leg)

    @staticmethod
    def _forward(pump: Any, data: memoryview, n: int) -> None:
        """Write data[:n] to the pump's sink ourselves (a copy: `data` is the shared arena)."""
        if n > 0 and pump.sink is not None and not pump.sink.is_closing():
            pump.sink.write(bytes(data[:n]))

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.state = CLOSED
        self.client.deadline_at = NEVER
        self.endpoint.active -= 1
        self.duration = monotonic() - self.started
        # The one structured line per session is the access log's "session-end" record
        # (Recorder.session_ended); the event log repeats it at debug level only.
        if enabled(DEBUG):
            log.event(log.DEBUG, "websocket_session_end", **self.summary())
        self.recorder.session_ended(self)
        self.client.session_ended()
        self._untie()

    def _untie(self) -> None:
        """Break the session's reference cycles (pump <-> session <-> exchange; the client
        connection let go of the session in session_ended), so
        that reference counting frees a finished session at once: left to the cyclic garbage
        collector, every handshake's ~60 objects made the collector a tenth of the CPU time.
        Both legs are closed here, so no pump calls back any more."""
        for pump in self.pumps:
            pump.session = None
            pump.sink = None
            pump.transport = None
        self.exchange.session = None

    def summary(self) -> dict:
        """The session's end, for the logs: who, how long, how much each way, how it closed."""
        from_client, from_backend = self.pumps
        c, b = from_client.scanner, from_backend.scanner
        return {
            **self._ids(),
            "duration": round(self.duration, 3),
            "close_code": self.close_code if self.close_code is not None else 1005,
            "closed_by": self.closed_by or "unknown",
            "close_reason": self.close_reason,
            "client_frames": c.frames, "client_bytes": from_client.bytes_in,
            "client_messages": c.messages,
            "backend_frames": b.frames, "backend_bytes": from_backend.bytes_in,
            "backend_messages": b.messages, "upgrades": self.upgrades,
        }

    def _ids(self) -> dict:
        return {"rule": self.route.rule.name, "pool": self.endpoint.backend.pool.name,
                "server": self.endpoint.name, "client": self.client.peer_ip}
