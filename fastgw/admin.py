"""The admin listener (`[gateway] admin = "host:port"`): /healthz, /backend-health, /metrics.

Kept apart from the traffic listeners so that it can be bound to loopback or a management
network. /healthz answers 200 while the gateway serves and 503 once it is stopping (a Kubernetes
readiness probe then takes the instance out of the Service before its sessions are closed).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Callable

import httptools

from fastgw.listener import bind_socket

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.gateway import Gateway


def backend_health(gateway: "Gateway") -> dict:
    pools = []
    for backend in gateway.backends.values():
        servers = []
        for ep in backend.endpoints + gateway.draining_endpoints(backend):
            servers.append({
                "address": ep.name,
                "state": ep.state,
                "active": ep.active,
                "requests": ep.requests,
                "last_probe": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ep.last_probe))
                               if ep.last_probe else None),
                "last_result": ep.last_result,
                "reason": ep.last_reason,
                "consecutive_failures": ep.consecutive_failures,
            })
        pools.append({
            "pool": backend.pool.name,
            "settings": backend.settings.name,
            "load_balancing": backend.pool.load_balancing,
            "healthy": sum(1 for ep in backend.endpoints if ep.state == "healthy"),
            "servers": servers,
        })
    return {"pools": pools}


class AdminConnection(asyncio.Protocol):
    def __init__(self, routes: dict[str, Callable[[], tuple[int, str, bytes]]]):
        self.routes = routes
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
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
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
        keep = self.parser.should_keep_alive()
        head = (f"HTTP/1.1 {status} {reason.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n").encode()
        self.transport.write(head if method == b"HEAD" else head + body)
        if not keep:
            self.transport.close()


def routes(gateway: "Gateway") -> dict[str, Callable[[], tuple[int, str, bytes]]]:
    def healthz():
        if gateway.stopping:
            return 503, "text/plain", b"stopping\n"
        return 200, "text/plain", b"ok\n"

    def health_json():
        return 200, "application/json", json.dumps(backend_health(gateway), indent=2).encode() + b"\n"

    table = {"/healthz": healthz, "/backend-health": health_json}
    metrics = getattr(gateway, "metrics", None)
    if metrics is not None:
        table["/metrics"] = metrics.render
    return table


async def start(gateway: "Gateway", host: str, port: int, sock=None) -> "asyncio.AbstractServer":
    """Serve the admin endpoints; with several workers each binds the address with SO_REUSEPORT
    (any of them can answer: /metrics sums over all workers, see metrics.py)."""
    loop = asyncio.get_running_loop()
    if sock is None:
        sock = bind_socket(host, port, reuse_port=gateway.config.gateway.workers > 1, backlog=128)
    return await loop.create_server(lambda: AdminConnection(routes(gateway)), sock=sock)
