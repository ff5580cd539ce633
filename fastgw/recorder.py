"""Where the results of client connections go: counters, the access log, the open sessions.

`GatewayRecorder` implements contracts.Recorder: every answered request and handshake passes
through `exchange_finished` once (the request counter, the upgrade outcomes, the access-log
record), every WebSocket session through `session_started` and `session_ended` (the session
counters, the close codes, the `session-end` record). It also keeps the set of open sessions,
which the gateway closes on shutdown or when their server drains.
"""

from __future__ import annotations

from time import time
from typing import Any

from fastgw.accesslog import request_line
from fastgw.contracts import ClientSide, Exchange, Recorder
from fastgw.http1 import STATUS_CLASSES, status_class_index
from fastgw.logfile import LogFile
from fastgw.logline import session_line
from fastgw.relay import WebSocketSession
from fastgw.routing import Router
from fastgw.stats import Stats, close_code_label
from fastgw.wsproxy import release_session


class GatewayRecorder(Recorder):
    __slots__ = ("stats", "access_log", "router", "sessions", "clock")

    def __init__(self, stats: Stats, access_log: LogFile | None, router: Router,
                 clock: Any) -> None:
        self.stats = stats
        self.access_log = access_log
        self.router = router  # names the listener of a request no rule took
        self.sessions: set = set()
        self.clock = clock  # the loop's time()

    def exchange_finished(self, client: ClientSide, ex: Exchange, error: str) -> None:
        status = ex.status if not error else (ex.status or 499)
        route = ex.route
        index = status_class_index(status)
        if route is not None:
            labels = route.counter_labels[index]
        else:  # a request no rule took, or one refused before routing
            head = ex.head
            listener = self.router.listener_for(client.socket_key,
                                                head.host if head is not None else None)
            labels = (listener.name if listener is not None else "", "", "",
                      STATUS_CLASSES[index])
        stats = self.stats
        stats.requests[labels] += 1
        if ex.handshake:
            outcome = "101" if status == 101 else "timeout" if status == 504 else labels[3]
            stats.upgrades[(outcome,)] += 1
            if ex.upgrading and status != 101:  # a WebSocketExchange that got no session
                release_session(ex)
        access_log = self.access_log
        if access_log is not None:
            head = ex.head
            backend = ex.backend
            endpoint = ex.endpoint
            access_log.write(request_line(
                time(), ex.handshake, client.peer_ip, client.peer_port, client.tls_info, head,
                status, ex.body_received, client.sent - ex.sent_at_start,
                self.clock() - head.t0 if head is not None and head.t0 else 0.0, labels,
                backend.settings if backend is not None else None,
                endpoint.name if endpoint is not None else "", ex.server_latency, ex.request_id,
                error or ex.error))

    def session_started(self, session: Any) -> None:
        self.sessions.add(session)
        self.stats.sessions[(session.route.rule.name, session.endpoint.backend.pool.name)] += 1

    def session_ended(self, session: Any) -> None:
        self.sessions.discard(session)
        ended: WebSocketSession = session  # typed (recorder.pxd): its fields are read directly
        release_session(ended.exchange)
        stats = self.stats
        stats.closes[(close_code_label(ended.close_code), ended.closed_by or "unknown")] += 1
        for i, pump in enumerate(ended.pumps):
            scanner = pump.scanner
            stats.frames_closed[i] += scanner.frames
            stats.bytes_closed[i] += scanner.bytes
        stats.durations.observe(ended.duration)
        access_log = self.access_log
        if access_log is not None:
            access_log.write(_session_line(ended, time()))


def _session_line(session: WebSocketSession, now: float) -> bytes:
    """The `session-end` record's line (the values of the session's summary()). Picked here,
    not in accesslog.py, because this layer knows the session's type: the compiled build reads
    its fields directly."""
    client = session.client
    exchange = session.exchange
    endpoint = session.endpoint
    from_client, from_backend = session.pumps
    c = from_client.scanner
    b = from_backend.scanner
    code = session.close_code
    return session_line(
        now, client.peer_ip, client.peer_port, exchange.head.original_url,
        exchange.route.listener.name, session.route.rule.name, endpoint.backend.pool.name,
        exchange.backend.settings.name, endpoint.name, exchange.request_id,
        round(session.duration, 3), code if code is not None else 1005,
        session.closed_by or "unknown", session.close_reason or "", c.frames,
        from_client.bytes_in, b.frames, from_backend.bytes_in, c.messages, b.messages, session.upgrades)
