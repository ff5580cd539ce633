"""The gateway: owns listeners, backends, probes and reloads. The one module that wires the parts.

`Gateway(config)` is built inside a running event loop; `await start()` binds every listening
socket, `await stop()` shuts down gracefully (stop accepting, let in-flight requests finish,
close WebSocket sessions with 1001, within shutdown_timeout). `serve(config)` runs one until
SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from fastgw import handshake, log
from fastgw.backends import Backend
from fastgw.config import Config
from fastgw.downstream import ClientConnection, State
from fastgw.errors import HandshakeError
from fastgw.http1 import RequestHead
from fastgw.listener import bind_socket
from fastgw.local import LocalAnswer, redirect_location
from fastgw.proxy import HttpExchange
from fastgw.routing import Router
from fastgw.wsproxy import WebSocketExchange


class Gateway:
    def __init__(self, config: Config, *, sockets: dict | None = None):
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.router = Router(config)
        self.backends: dict[tuple[str, str], Backend] = {}
        self._build_backends(config)
        self.connections: set[ClientConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.presockets = sockets or {}  # (bind, port) -> socket bound by a supervisor
        self.stopping = False
        self.stopped = asyncio.Event()

    def _build_backends(self, config: Config) -> None:
        for rule in config.rules:
            pairs = [(rule.backend_pool, rule.backend_settings)]
            pairs += [(p.backend_pool, p.backend_settings) for p in rule.paths]
            for pool, settings in pairs:
                if pool is not None and settings is not None and (pool, settings) not in self.backends:
                    self.backends[(pool, settings)] = Backend(config.pool(pool), config.settings(settings))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        reuse_port = self.config.gateway.workers > 1
        for key in self.router.socket_keys():
            bind, port = key
            listener = self.router.listener_for(key, None) or next(
                x for x in self.config.listeners if (x.bind, x.port) == key)
            tls = listener.protocol == "https"
            sock = self.presockets.get(key) or bind_socket(bind, port, reuse_port=reuse_port)
            ssl_ctx = self.listener_tls(key) if tls else None
            server = await self.loop.create_server(
                lambda key=key, tls=tls: ClientConnection(self, key, tls),
                sock=sock, ssl=ssl_ctx, backlog=2048)
            self.servers.append(server)
            log.event(log.INFO, "listening", address=f"{bind}:{port}",
                      protocol="https" if tls else "http",
                      listeners=[x.name for x in self.config.listeners if (x.bind, x.port) == key])

    def bound_port(self, key: tuple[str, int]) -> int:
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if name[1] == key[1]:
                    return name[1]
        raise KeyError(key)

    async def stop(self) -> None:
        """Graceful shutdown: see the module docstring."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        for server in self.servers:
            server.close()
        deadline = self.loop.time() + self.config.gateway.shutdown_timeout
        for conn in list(self.connections):
            self._wind_down(conn)
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for backend in self.backends.values():
            for ep in backend.endpoints:
                ep.close_idle()
        self.stopped.set()
        log.event(log.INFO, "stopped")

    def _wind_down(self, conn: ClientConnection) -> None:
        if conn.state == State.RELAYING and conn.upgrade_exchange is not None:
            conn.upgrade_exchange.shutdown()
        elif conn.queue:
            for ex in conn.queue:
                ex.keep_client = False
        elif conn.state < State.CLOSING:
            conn.close()

    # -- connections and exchanges ---------------------------------------------------------

    def connection_opened(self, conn: ClientConnection) -> None:
        if self.stopping:
            conn.transport.close()
            return
        self.connections.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def _route(self, client: ClientConnection, head: RequestHead):
        path, _ = head.path_and_query()
        host = head.host.decode("latin-1") if head.host else None
        return self.router.match(client.socket_key, host, path)

    def http_exchange(self, client: ClientConnection, head: RequestHead) -> Any:
        route = self._route(client, head)
        if route is None:
            return LocalAnswer(client, head, 404, "404 Not Found\nno rule matches this request\n")
        if route.is_redirect:
            location = redirect_location(self.config, route.rule, head)
            return LocalAnswer(client, head, route.rule.status, f"Redirecting to {location}\n",
                               headers=(("Location", location),), route=route)
        backend = self.backends[(route.backend_pool, route.backend_settings)]
        return HttpExchange(client, head, route, backend)

    def websocket_exchange(self, client: ClientConnection, head: RequestHead) -> Any:
        """An upgrade request: validated before anything else, then routed like any request."""
        try:
            offer = handshake.validate_request(head)
        except HandshakeError as exc:
            log.event(log.INFO, "handshake_refused", status=exc.status, reason=exc.reason,
                      client=client.peer_ip)
            self.count_refused(client, exc.status)
            return LocalAnswer(client, head, exc.status, f"{exc.status} {exc.reason}\n",
                               headers=exc.headers, keep=False)
        route = self._route(client, head)
        if route is None:
            return LocalAnswer(client, head, 404, "404 Not Found\nno rule matches this request\n",
                               keep=False)
        if route.is_redirect:
            location = redirect_location(self.config, route.rule, head)
            return LocalAnswer(client, head, route.rule.status, f"Redirecting to {location}\n",
                               headers=(("Location", location),), route=route, keep=False)
        backend = self.backends[(route.backend_pool, route.backend_settings)]
        return WebSocketExchange(client, head, route, backend, offer)

    def session_started(self, session) -> None:
        pass

    def session_ended(self, session, fields: dict) -> None:
        self.connections.discard(session.client)

    # -- hooks for TLS, metrics and logs (filled in by their modules) ---------------------

    def listener_tls(self, key: tuple[str, int]):
        raise NotImplementedError("https listeners")

    def upstream_tls(self, backend: Backend):
        return None, None

    def request_extra(self, exchange) -> tuple:
        return ()

    def response_extra(self, exchange) -> tuple:
        return ()

    def count_upstream_error(self, exchange, error) -> None:
        pass

    def count_refused(self, client, status: int) -> None:
        pass

    def count_local(self, answer) -> None:
        pass

    def endpoint_failed(self, endpoint, reason: str) -> None:
        log.event(log.WARNING, "server_failed", pool=endpoint.backend.pool.name,
                  settings=endpoint.backend.settings.name, server=endpoint.name, cause=reason)


async def serve(config: Config, *, ready: asyncio.Event | None = None) -> int:
    """Run a gateway until SIGTERM or SIGINT; return the exit status."""
    gateway = Gateway(config)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    log.event(log.INFO, "started", config=config.source)
    await stop.wait()
    log.event(log.INFO, "stopping", timeout=config.gateway.shutdown_timeout)
    await gateway.stop()
    return 0




def run(config: Config) -> int:
    """Run the gateway in this process on uvloop until it is told to stop; the exit status."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is for odd platforms
        return asyncio.run(serve(config))
    if hasattr(uvloop, "run"):
        return uvloop.run(serve(config))
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover - uvloop < 0.18
    return asyncio.run(serve(config))  # pragma: no cover
