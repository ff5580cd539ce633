"""The admin listener (`[gateway] admin = "host:port"`): /healthz, /backend-health, /metrics.

Kept apart from the traffic listeners so that it can be bound to loopback or a management
network. /healthz answers 200 while the gateway serves and 503 once it is stopping (a Kubernetes
readiness probe then takes the instance out of the Service before its sessions are closed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

import httptools

from fastgw.http1 import reason
from fastgw.listener import bind_socket

Handler = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)


class AdminView(Protocol):
    """What the admin endpoints read (the gateway implements it)."""

    @property
    def stopping(self) -> bool: ...

    def backend_health(self) -> dict:
        """The /backend-health document (health.backend_health)."""

    def render_metrics(self) -> tuple[int, str, bytes]:
        """The /metrics answer: status, content type, body."""


class AdminConnection(asyncio.Protocol):
    def __init__(self, routes: dict[str, Handler]):
        self.routes = routes
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        path = self.url.split(b"?")[0].decode("latin-1")
        self.url = b""
        method = self.parser.get_method()
        handler = self.routes.get(path)
        if handler is None:
            status, ctype, body = 404, "text/plain", b"not found\n"
        elif method not in (b"GET", b"HEAD"):
            status, ctype, body = 405, "text/plain", b"method not allowed\n"
        else:
            status, ctype, body = handler()
        keep = self.parser.should_keep_alive()
        head = (f"HTTP/1.1 {status} {reason(status)}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n").encode()
        self.transport.write(head if method == b"HEAD" else head + body)
        if not keep:
            self.transport.close()


def routes(view: AdminView) -> dict[str, Handler]:
    def healthz() -> tuple[int, str, bytes]:
        if view.stopping:
            return 503, "text/plain", b"stopping\n"
        return 200, "text/plain", b"ok\n"

    def health_json() -> tuple[int, str, bytes]:
        return (200, "application/json",
                json.dumps(view.backend_health(), indent=2).encode() + b"\n")

    return {"/healthz": healthz, "/backend-health": health_json, "/metrics": view.render_metrics}


async def start(view: AdminView, host: str, port: int, sock: Any = None, *,
                reuse_port: bool = False) -> asyncio.AbstractServer:
    """Serve the admin endpoints; with several workers each binds the address with SO_REUSEPORT
    (any of them can answer: /metrics sums over all workers, see metrics.py)."""
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = bind_socket(host, port, reuse_port=reuse_port, backlog=128)
    table = routes(view)
    return await loop.create_server(lambda: AdminConnection(table), sock=sock)
