"""The interfaces between the connection layer and what runs it, written down once.

A client connection (downstream.py) parses requests; everything it needs from outside comes
through three narrow objects, never the whole gateway:

    ConnectionHost    starts the exchange for a request head (the routing decision), and is told
                      when a connection opens and closes (tracking, deadlines, shutdown)
    Recorder          receives the results: an exchange finished (counters, access log), a
                      WebSocket session started or ended
    ExchangeServices  what an exchange asks for on its way to a backend: the WAF of a listener,
                      the TLS context for an https backend, a failed endpoint (passive health),
                      the latency histogram of a backend

What an exchange or a WebSocket session calls on its client connection is `ClientSide` (the
connection implements it), so nothing below the connection imports it.

Every request on a connection becomes an `Exchange`: HttpExchange (proxy.py), WebSocketExchange
(wsproxy.py) and LocalAnswer (local.py) implement this one contract, so the connection never asks
what kind of exchange it holds. An exchange that talks to a backend is a
`ProxiedExchange`, which adds the calls its backend connection (upstream.py) makes.

Compiled (fastgw/native.py), these classes are extension types declared in contracts.pxd: the
calls through them are C calls, and the implementations subclass them. The methods here only
state the contract; each kind of exchange overrides all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.backends import Backend, Endpoint
    from fastgw.http1 import RequestHead
    from fastgw.stats import Histo


class ClientSide:
    """A client connection as its exchanges and sessions see it.

    Fields: `transport` (the asyncio transport), `peer_ip`/`peer_port`, `proto` (b"http" or
    b"https"), `port_bytes` (the listening port, as sent in X-Forwarded-Port), `socket_key`
    ((bind, port) of the listening socket), `tls_info` ((version, cipher) on https, else None),
    `sent` (bytes written to the client so far), `deadline_at` (loop time; the gateway's
    Sweeper calls the connection's on_deadline then), `clock` (the loop's time function),
    `loop`, `write_paused` (the client reads slower than we write), `upstream_keepalive` (idle
    backend connections kept per server), `pages` (the gateway's local.ErrorPages, or None),
    `gate` (the listening socket's clientgate.ClientGate when it has per-client limits or
    the PROXY protocol, else None).
    """

    __slots__ = ("transport", "peer_ip", "peer_port", "proto", "port_bytes", "socket_key",
                 "tls_info", "sent", "deadline_at", "clock", "loop", "write_paused",
                 "upstream_keepalive", "pages", "gate")

    transport: Any
    peer_ip: str
    peer_port: int
    proto: bytes
    port_bytes: bytes
    socket_key: tuple[str, int]
    tls_info: tuple[str, str] | None
    sent: int
    deadline_at: float
    clock: Callable[[], float]
    loop: Any
    write_paused: bool
    upstream_keepalive: int
    pages: Any
    gate: Any

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def writelines(self, chunks: list) -> None:
        raise NotImplementedError

    def exchange_done(self, ex: Exchange) -> None:
        """`ex`, the head of the queue, has written its whole answer."""
        raise NotImplementedError

    def abort_exchange(self, ex: Exchange) -> None:
        """`ex`'s answer broke off midway: the connection closes."""
        raise NotImplementedError

    def upgraded(self, ex: Exchange, session: Any) -> None:
        """`ex` switched protocols: `session` owns the transport from now on."""
        raise NotImplementedError

    def session_ended(self) -> None:
        """The relay session that took the connection over has ended."""
        raise NotImplementedError

    def pause_reading_for(self, reason: object) -> None:
        """Stop reading the client until resume_reading_for(reason) (flow control)."""
        raise NotImplementedError

    def resume_reading_for(self, reason: object) -> None:
        raise NotImplementedError

    @property
    def local_ip(self) -> str:
        """The address the client connected to (only the WAF asks: a system call saved)."""
        local = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return local[0] if isinstance(local, tuple) else ""


class Exchange:
    """One request of a client connection, answered in its turn among pipelined requests.

    The fields are what the recorder needs once the exchange is finished: `head` (None for the
    refusal of a request that could not be parsed), `route`, `backend` and `endpoint` (None
    when no backend was involved), the answer's `status`, `error` (a short cause when the
    gateway answered an error), `request_id`, `server_latency` (seconds, or None),
    `body_received` and `sent_at_start` (the client connection's byte count when the answer
    began). `handshake` says the request asked for a WebSocket upgrade, `upgrading` that the
    exchange performs one (only then does the connection leave HTTP). `keep_client` says the
    client connection stays open after the answer; the connection clears it when the client
    half-closes or the gateway stops. `answering` is true once the answer has begun.
    """

    __slots__ = ("head", "route", "backend", "endpoint", "status", "error", "request_id",
                 "server_latency", "body_received", "sent_at_start", "started", "keep_client",
                 "request_done", "handshake", "upgrading", "answering")

    def __init__(self, head: RequestHead | None, route: Any, backend: Backend | None) -> None:
        self.begin(head, route, backend)

    def begin(self, head: RequestHead | None, route: Any, backend: Backend | None) -> None:
        """Set the contract's fields (what __init__ does; a C call for subclasses' __init__)."""
        self.head = head
        self.route = route
        self.backend = backend
        self.endpoint: Endpoint | None = None
        self.status = 0
        self.error = ""
        self.request_id = b""
        self.server_latency: float | None = None
        self.body_received = 0
        self.sent_at_start = 0
        self.started = 0.0
        self.keep_client = head is None or head.keep_alive
        self.request_done = head is None or not head.has_body
        self.handshake = head is not None and head.upgrade_requested()
        self.upgrading = False
        self.answering = False

    def start(self) -> None:
        """This exchange reached the head of its connection's queue: answer it."""
        raise NotImplementedError

    def request_body(self, data: bytes) -> None:
        """A piece of the request body arrived."""
        raise NotImplementedError

    def request_complete(self) -> None:
        """The request (head and body) has been read completely."""
        raise NotImplementedError

    def client_data(self, data: bytes) -> None:
        """Bytes after an upgrade request's head, before the upgrade completes."""
        raise NotImplementedError

    def client_lost(self) -> None:
        """The client connection is gone: release what the exchange holds."""
        raise NotImplementedError

    def on_deadline(self) -> None:
        """The connection's deadline passed while this exchange was answering."""
        raise NotImplementedError

    def pause_backend(self) -> None:
        """The client reads the answer slower than it comes: stop reading the backend."""
        raise NotImplementedError

    def resume_backend(self) -> None:
        raise NotImplementedError


class ProxiedExchange(Exchange):
    """An exchange served by a backend connection: what upstream.UpstreamConnection calls.
    It always has a request head and a backend."""

    __slots__ = ()

    head: RequestHead
    backend: Backend

    def upstream_data(self, data: bytes) -> None:
        raise NotImplementedError

    def upstream_eof(self) -> None:
        raise NotImplementedError

    def upstream_lost(self, exc: Exception | None) -> None:
        raise NotImplementedError

    def upstream_pause_writing(self) -> None:
        raise NotImplementedError

    def upstream_resume_writing(self) -> None:
        raise NotImplementedError

    # The backend's response, as the connection's parser reads it (httptools callbacks).

    def response_header(self, name: bytes, value: bytes) -> None:
        raise NotImplementedError

    def response_head_complete(self) -> None:
        raise NotImplementedError

    def response_body(self, body: bytes) -> None:
        raise NotImplementedError

    def response_complete(self) -> None:
        raise NotImplementedError


class ConnectionHost:
    """What a client connection calls: the exchange for a request, and its own life."""

    __slots__ = ()

    def start_exchange(self, client: Any, head: RequestHead) -> Exchange:
        """The exchange that answers `head` (routed; a handshake validated first)."""
        raise NotImplementedError

    def connection_opened(self, client: Any) -> bool:
        """A connection was accepted; False: the gateway is stopping, close it."""
        raise NotImplementedError

    def connection_closed(self, client: Any) -> None:
        raise NotImplementedError


class Recorder:
    """Where the results of a connection go: counters, the access log, the open sessions."""

    __slots__ = ()

    def exchange_finished(self, client: Any, ex: Exchange, error: str) -> None:
        """Every answered request and handshake passes here once; `error` is set when the
        answer broke off (the client left, the backend broke off mid-response)."""
        raise NotImplementedError

    def session_started(self, session: Any) -> None:
        raise NotImplementedError

    def session_ended(self, session: Any) -> None:
        raise NotImplementedError


class ExchangeServices:
    """What an exchange asks for on its way to a backend."""

    __slots__ = ()

    def waf_for(self, listener: Any) -> Any:
        """The listener's fastgw.waf.Waf, or None when its requests are not inspected."""
        raise NotImplementedError

    def waf_verdict(self, verdict: Any) -> None:
        """Count and log what the WAF matched in one request."""
        raise NotImplementedError

    def upstream_tls(self, backend: Backend) -> tuple:
        """(SSL context, server name) for connections to the backend's servers; (None, None)
        for plain HTTP backends."""
        raise NotImplementedError

    def endpoint_failed(self, endpoint: Endpoint, reason: str) -> None:
        """A connect to the server failed: passive health (counts like a failed probe)."""
        raise NotImplementedError

    def gateway_shortage(self, reason: str) -> None:
        """A backend connect failed for the gateway's own lack of descriptors or memory
        (`reason`: the errno's name): counted and logged, never against the server."""
        raise NotImplementedError

    def latency_histo(self, backend: Backend) -> Histo:
        """The response-time histogram of the backend's pool."""
        raise NotImplementedError
