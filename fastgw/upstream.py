"""The upstream leg: one TCP (or TLS) connection from the gateway to a backend server.

An UpstreamConnection carries one exchange at a time (no pipelining towards backends) and goes
back to its endpoint's keep-alive pool when a response completed cleanly. It keeps one httptools
response parser for the responses it carries (building one costs more than parsing a small
response) and passes the parser's callbacks to the exchange it serves. After a response without
a body (HEAD, 204, 304) the exchange drops the parser: a response to HEAD has no body whatever its
Content-Length says, llhttp cannot be told so, and would wait for that body.
"""

from __future__ import annotations

from collections.abc import Coroutine
from functools import partial
from typing import Any

from httptools import HttpResponseParser

from fastgw.backends import Endpoint
from fastgw.contracts import ProxiedExchange

# Idle keep-alive connections are dropped after this long: most backends close theirs after
# 5-75 s, and reusing a connection the server is closing costs a retry.
IDLE_TIMEOUT = 4.0


class UpstreamConnection:
    """An asyncio protocol by its methods (no base class: compiled, it is an extension type)."""

    __slots__ = ("endpoint", "transport", "exchange", "closed", "uses", "idle_since", "paused",
                 "parser")

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.transport: Any = None
        self.exchange: ProxiedExchange | None = None  # the exchange this connection serves
        self.closed = False
        self.uses = 0
        self.idle_since = 0.0
        self.paused = False
        self.parser: Any = None  # httptools.HttpResponseParser, made on first use

    def response_parser(self) -> Any:
        """The parser of this connection's responses (made again after one was dropped)."""
        parser = self.parser
        if parser is None:
            parser = self.parser = HttpResponseParser(self)
        return parser

    # -- httptools callbacks: the exchange being served reads the response ------------------
    # Without one, the backend spoke out of turn (RFC 9112 section 9.3.2): the connection is
    # dropped. The one exception: llhttp ends a response without a body (204, 304) after the
    # exchange has already finished it.

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_header(name, value)
        else:
            self.close()

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_head_complete()
        else:
            self.close()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_body(body)
        else:
            self.close()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.response_complete()

    def connection_made(self, transport) -> None:
        self.transport = transport  # TCP_NODELAY: set by uvloop/asyncio on every TCP transport

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # A backend must not speak on an idle connection (RFC 9112 section 9.3.2): drop it.
            self.close()
            return
        exchange.upstream_data(data)

    def eof_received(self) -> bool:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_eof()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None  # it holds our bound methods: a cycle the collector would have to find
        self.endpoint.forget(self)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.upstream_lost(exc)

    def pause_writing(self) -> None:
        # The backend reads the request body slower than the client sends it.
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_pause_writing()

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_resume_writing()

    def release(self, limit: int, now: float) -> None:
        """The response completed cleanly: park the connection for the next request."""
        self.exchange = None
        if self.paused:
            self.transport.resume_reading()
            self.paused = False
        self.idle_since = now
        self.endpoint.put_idle(self, limit)

    def close(self) -> None:
        self.exchange = None
        self.parser = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        self.parser = None
        if self.transport is not None:
            self.transport.abort()


def connect(loop: Any, endpoint: Endpoint, ssl_context=None, server_hostname: str | None = None
            ) -> Coroutine[Any, Any, tuple]:
    """The coroutine that opens a new connection to `endpoint` ((transport, UpstreamConnection)
    when done; the caller drives it and bounds it with a timeout). uvloop converts a literal
    address itself, without name resolution."""
    if ssl_context is None:
        # UpstreamConnection is an asyncio protocol by its methods (compiled, an extension type).
        return loop.create_connection(partial(UpstreamConnection, endpoint), endpoint.host,
                                      endpoint.port)
    return loop.create_connection(partial(UpstreamConnection, endpoint), endpoint.host,
                                  endpoint.port, ssl=ssl_context,
                                  server_hostname=server_hostname or endpoint.host)
