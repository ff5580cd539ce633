"""The gateway: owns listeners, backends, probes and reloads. The one module that wires the parts.

`Gateway(config)` is built inside a running event loop; `await start()` binds every listening
socket and starts the probes; `reload(config)` swaps in a new configuration without dropping
connections; `await stop()` shuts down gracefully (stop accepting, let in-flight requests finish,
close WebSocket sessions with 1001 — after `connection_draining` seconds where a backend asks for
it — within the deadlines). `serve(config)` runs one until SIGTERM/SIGINT, reloading on SIGHUP.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

from fastgw import accesslog, admin, handshake, log
from fastgw.accesslog import AccessLog
from fastgw.backends import DRAINING, Backend, Endpoint
from fastgw.config import Config
from fastgw.downstream import ClientConnection, State
from fastgw.errors import ConfigError, HandshakeError
from fastgw.health import HealthChecker, probe_for, set_state
from fastgw.http1 import RequestHead
from fastgw.listener import bind_socket
from fastgw.metrics import Metrics, Stats, close_code_label, status_class
from fastgw.local import LocalAnswer, redirect_location
from fastgw.proxy import HttpExchange
from fastgw.routing import Router
from fastgw.timeouts import Sweeper
from fastgw.wsproxy import WebSocketExchange


def backend_pairs(config: Config) -> list[tuple[str, str]]:
    """Every (pool, settings) pair some rule sends traffic to, in file order."""
    pairs: list[tuple[str, str]] = []
    for rule in config.rules:
        candidates = [(rule.backend_pool, rule.backend_settings)]
        candidates += [(p.backend_pool, p.backend_settings) for p in rule.paths]
        for pool, settings in candidates:
            if pool is not None and settings is not None and (pool, settings) not in pairs:
                pairs.append((pool, settings))
    return pairs


class Gateway:
    def __init__(self, config: Config, *, sockets: dict | None = None, tls: Any = None):
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.router = Router(config)
        self.backends: dict[tuple[str, str], Backend] = {
            (pool, settings): Backend(config.pool(pool), config.settings(settings))
            for pool, settings in backend_pairs(config)}
        self.draining: dict[Endpoint, asyncio.TimerHandle | None] = {}
        self.connections: set[ClientConnection] = set()
        self.sessions: set = set()
        self.servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self.admin_server: asyncio.AbstractServer | None = None
        self.presockets = sockets or {}  # (bind, port) -> socket bound by a supervisor
        self.health = HealthChecker(self)
        self.sweeper = Sweeper(self.loop)
        self.stopping = False
        self.stopped = asyncio.Event()
        self.tls = tls  # fastgw.tls.TlsManager, set by start() when https is configured
        self.stats = Stats()
        self.metrics = Metrics(self)
        access = config.gateway.access_log
        self.access_log = AccessLog(access) if access != "off" else None
        self.wafs: dict = {}  # WafConfig -> fastgw.waf.Waf, one per distinct policy in use
        self.labels_memo: dict = {}  # exchange_finished's request-counter labels
        self.firewall_log: AccessLog | None = None
        self._build_wafs(config)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._open_listeners()
        if self.config.gateway.admin is not None:
            host, port = self.config.gateway.admin
            self.admin_server = await admin.start(self, host, port, self.presockets.get("admin"))
            log.event(log.INFO, "admin_listening", address=f"{host}:{port}")
        self.health.start()
        self.metrics.start()

    async def _open_listeners(self) -> None:
        reuse_port = self.config.gateway.workers > 1
        for key in self.router.socket_keys():
            if key in self.servers:
                continue
            bind, port = key
            tls = self._socket_protocol(key) == "https"
            sock = self.presockets.get(key) or bind_socket(bind, port, reuse_port=reuse_port)
            ssl_ctx = self.listener_tls(key) if tls else None
            server = await self.loop.create_server(
                lambda key=key, tls=tls: ClientConnection(self, key, tls),
                sock=sock, ssl=ssl_ctx, backlog=2048)
            self.servers[key] = server
            log.event(log.INFO, "listening", address=f"{bind}:{port}",
                      protocol="https" if tls else "http",
                      listeners=[x.name for x in self.config.listeners if (x.bind, x.port) == key])

    def _socket_protocol(self, key: tuple[str, int]) -> str:
        return next(x.protocol for x in self.config.listeners if (x.bind, x.port) == key)

    async def stop(self) -> None:
        """Graceful shutdown: see the module docstring."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        for server in self.servers.values():
            server.close()
        self.health.stop()
        gw = self.config.gateway
        longest_drain = 0.0
        for conn in list(self.connections):
            if conn.state == State.RELAYING and conn.upgrade_exchange is not None:
                drain = conn.upgrade_exchange.exchange.backend.settings.connection_draining
                longest_drain = max(longest_drain, drain)
                if drain > 0:
                    self.loop.call_later(drain, conn.upgrade_exchange.shutdown)
                else:
                    conn.upgrade_exchange.shutdown()
            elif conn.queue:
                for ex in conn.queue:
                    ex.keep_client = False  # finish what is in flight, then close
            elif conn.state < State.CLOSING:
                conn.close()
        deadline = self.loop.time() + max(gw.shutdown_timeout, longest_drain + gw.close_timeout)
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for backend in self.backends.values():
            for ep in backend.endpoints:
                ep.close_idle()
        if self.admin_server is not None:
            self.admin_server.close()
        self.sweeper.stop()
        self.metrics.stop()
        if self.access_log is not None:
            self.access_log.close()
        if self.firewall_log is not None:
            self.firewall_log.close()
        self.stopped.set()
        log.event(log.INFO, "stopped")

    # -- reload (SIGHUP) -------------------------------------------------------------------

    async def reload(self, new: Config) -> None:
        """Serve `new` from now on. Connections, sessions and the health of servers that are
        still configured are kept; servers no longer configured drain."""
        old_keys = set(self.router.socket_keys())
        self.config = new
        self.router = Router(new)
        self.labels_memo = {}
        backends: dict[tuple[str, str], Backend] = {}
        removed: list[Endpoint] = []
        for pool, settings in backend_pairs(new):
            backend = self.backends.get((pool, settings))
            if backend is None:
                backend = Backend(new.pool(pool), new.settings(settings))
            else:
                backend.pool, backend.settings = new.pool(pool), new.settings(settings)
                removed += backend.set_servers(backend.pool.servers, keep=backend.endpoints)
            backends[(pool, settings)] = backend
        for key, backend in self.backends.items():
            if key not in backends:
                removed += backend.endpoints
        self.backends = backends
        for endpoint in removed:
            self.drain(endpoint)
        self.health.restart()
        self._build_wafs(new)
        if self.tls is not None:
            self.tls.reload(new)
        if self.access_log is not None and self.access_log.destination == new.gateway.access_log:
            self.access_log.reopen()
        elif self.access_log is not None or new.gateway.access_log != "off":
            if self.access_log is not None:
                self.access_log.close()
            access = new.gateway.access_log
            self.access_log = AccessLog(access) if access != "off" else None
        new_keys = set(self.router.socket_keys())
        for key in old_keys - new_keys:
            server = self.servers.pop(key, None)
            if server is not None:
                server.close()
        await self._open_listeners()
        log.event(log.INFO, "reloaded", config=new.source, removed_servers=[e.name for e in removed])

    def drain(self, endpoint: Endpoint) -> None:
        """A server left its pool: no new traffic; its WebSocket sessions get Close 1001 after
        the settings' connection_draining seconds (at once when draining is off)."""
        set_state(endpoint, DRAINING, "removed from the pool")
        seconds = endpoint.backend.settings.connection_draining
        if seconds > 0:
            self.draining[endpoint] = self.loop.call_later(seconds, self._drained, endpoint)
        else:
            self._drained(endpoint)

    def _drained(self, endpoint: Endpoint) -> None:
        self.draining.pop(endpoint, None)
        for session in list(self.sessions):
            if session.endpoint is endpoint:
                session.close(1001, "server removed from the pool")

    def draining_endpoints(self, backend: Backend) -> list[Endpoint]:
        return [ep for ep in self.draining if ep.backend is backend]

    # -- the web application firewall ------------------------------------------------------

    def _build_wafs(self, config: Config) -> None:
        """One Waf per distinct policy in use (loading the CRS takes ~75 ms: never per request)."""
        policies = {config.waf} | {lst.waf for lst in config.listeners if lst.waf is not None}
        policies = {p for p in policies if p.mode != "off"}
        old = self.wafs
        wafs = {}
        for policy in policies:
            waf = old.get(policy)
            if waf is None:
                from fastgw.waf import Waf
                waf = Waf(policy)
                log.event(log.INFO, "waf_loaded", policy=waf.describe())
            wafs[policy] = waf
        self.wafs = wafs
        for policy, waf in old.items():
            if policy not in wafs:
                waf.close()
        destination = config.gateway.firewall_log
        if self.firewall_log is not None and (not wafs or self.firewall_log.destination != destination):
            self.firewall_log.close()
            self.firewall_log = None
        if wafs and self.firewall_log is None and destination != "off":
            self.firewall_log = AccessLog(destination)

    def waf_for(self, listener):
        if not self.wafs:
            return None
        policy = listener.waf if listener.waf is not None else self.config.waf
        return self.wafs.get(policy)

    def waf_verdict(self, exchange, verdict) -> None:
        if not verdict.matches and verdict.clean:
            return
        from fastgw.waf import firewall_log_records
        records = firewall_log_records(verdict)
        for record in records:
            self.stats.waf[(str(record.get("ruleId", "")), record.get("action", ""))] += 1
            if self.firewall_log is not None:
                self.firewall_log.write(record)

    # -- connections and exchanges ---------------------------------------------------------

    def connection_opened(self, conn: ClientConnection) -> None:
        if self.stopping:
            conn.transport.close()
            return
        self.connections.add(conn)
        self.sweeper.add(conn)

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)
        self.sweeper.discard(conn)

    def _route(self, client: ClientConnection, head: RequestHead):
        return self.router.match(client.socket_key, head.host, head.path())

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
        self.sessions.add(session)
        self.stats.sessions[(session.route.rule.name, session.endpoint.backend.pool.name)] += 1

    def session_ended(self, session) -> None:
        self.sessions.discard(session)
        self.connection_closed(session.client)
        stats = self.stats
        stats.closes[(close_code_label(session.close_code), session.closed_by or "unknown")] += 1
        for i, pump in enumerate(session.pumps):
            stats.frames_closed[i] += pump.scanner.frames
            stats.bytes_closed[i] += pump.scanner.bytes
        stats.durations.observe(session.duration)
        if self.access_log is not None:
            self.access_log.write(self._session_record(session))

    def endpoint_failed(self, endpoint: Endpoint, reason: str) -> None:
        """A connect failure counts like a failed probe (passive health)."""
        log.event(log.WARNING, "server_failed", pool=endpoint.backend.pool.name,
                  settings=endpoint.backend.settings.name, server=endpoint.name, cause=reason)
        endpoint.consecutive_failures += 1
        endpoint.last_reason = reason
        probe = probe_for(endpoint.backend, {p.name: p for p in self.config.probes})
        if endpoint.state == "healthy" and endpoint.consecutive_failures >= probe.unhealthy_threshold:
            set_state(endpoint, "unhealthy", reason)

    # -- hooks for TLS, metrics and logs ---------------------------------------------------

    def listener_tls(self, key: tuple[str, int]):
        if self.tls is None:
            from fastgw.tls import TlsManager
            self.tls = TlsManager(self.config)
        return self.tls.server_context(key)

    def upstream_tls(self, backend: Backend):
        if backend.settings.protocol != "https":
            return None, None
        if self.tls is None:
            from fastgw.tls import TlsManager
            self.tls = TlsManager(self.config)
        return self.tls.client_context(backend.settings), backend.settings.host_name or None

    def probe_tls(self, backend: Backend, probe) -> tuple:
        if probe.protocol != "https":
            return None, None
        if self.tls is None:
            from fastgw.tls import TlsManager
            self.tls = TlsManager(self.config)
        sni = probe.host or backend.settings.host_name or None
        return self.tls.client_context(backend.settings), sni


    def count_probe(self, endpoint: Endpoint, ok: bool) -> None:
        backend = endpoint.backend
        self.stats.probes[(backend.pool.name, backend.settings.name, "ok" if ok else "fail")] += 1

    # -- the access log and the counters behind the metrics -------------------------------

    def exchange_finished(self, client: ClientConnection, ex, error: str = "") -> None:
        """Every answered request and handshake passes here once (ClientConnection calls it)."""
        head = ex.head
        route = ex.route
        backend = ex.backend
        status = ex.status if not error else (ex.status or 499)
        # The request counter's labels, worked out once per (route, backend, status) and then
        # looked up: the memo holds the route and backend, so their ids stay theirs; a reload
        # empties it.
        memo = self.labels_memo
        memo_key = (id(route), id(backend), status)
        entry = memo.get(memo_key) if route is not None else None
        if entry is not None:
            labels = entry[2]
        else:
            if route is not None:
                listener_name = route.listener.name
            else:
                listener = self.router.listener_for(client.socket_key,
                                                    head.host if head is not None else None)
                listener_name = listener.name if listener is not None else ""
            labels = (listener_name, route.rule.name if route is not None else "",
                      backend.pool.name if backend is not None else "", status_class(status))
            if route is not None:
                if len(memo) > 4096:
                    memo.clear()
                memo[memo_key] = (route, backend, labels)
        stats = self.stats
        stats.requests[labels] += 1
        listener_name, rule_name, pool, code_class = labels
        websocket = type(ex) is WebSocketExchange
        if websocket:
            outcome = "101" if status == 101 else "timeout" if status == 504 else code_class
            stats.upgrades[(outcome,)] += 1
        if self.access_log is None:
            return
        now = self.loop.time()
        endpoint = ex.endpoint
        record = {
            "timeStamp": accesslog.timestamp(),
            "type": "websocket" if websocket else "request",
            "clientIp": client.peer_ip,
            "clientPort": client.peer_port,
            "httpMethod": head.method.decode("latin-1") if head is not None else "",
            "requestUri": head.original_url.decode("latin-1") if head is not None else "",
            "userAgent": (head.header(b"user-agent") or b"").decode("latin-1") if head is not None else "",
            "httpStatus": status,
            "httpVersion": f"HTTP/{head.version}" if head is not None else "",
            "receivedBytes": (head.size + ex.body_received) if head is not None else 0,
            "sentBytes": client.sent - ex.sent_at_start,
            "timeTaken": round(now - head.t0, 6) if head is not None and head.t0 else 0.0,
            "sslEnabled": "on" if client.tls_info else "off",
            "sslProtocol": client.tls_info[0] if client.tls_info else "",
            "sslCipher": client.tls_info[1] if client.tls_info else "",
            "host": self._backend_host(ex),
            "originalHost": (head.host or b"").decode("latin-1") if head is not None else "",
            "listenerName": listener_name,
            "ruleName": rule_name,
            "backendPoolName": pool,
            "backendSettingName": backend.settings.name if backend is not None else "",
            "serverRouted": endpoint.name if endpoint is not None else "",
            "serverStatus": str(ex.status) if endpoint is not None and ex.server_latency is not None else "",
            "serverResponseLatency": (round(ex.server_latency, 6) if ex.server_latency is not None
                                      else None),
            "transactionId": (ex.request_id.decode("latin-1") if getattr(ex, "request_id", None)
                              else ""),
            "error_info": error or ex.error,
        }
        self.access_log.write(record)

    @staticmethod
    def _backend_host(ex) -> str:
        if ex.backend is not None and ex.backend.settings.host_name:
            return ex.backend.settings.host_name
        head = ex.head
        return (head.host or b"").decode("latin-1") if head is not None else ""

    @staticmethod
    def _session_record(session) -> dict:
        """The access log's `session-end` line."""
        fields = session.summary()
        client = session.client
        exchange = session.exchange
        return {
            "timeStamp": accesslog.timestamp(), "type": "session-end",
            "clientIp": client.peer_ip, "clientPort": client.peer_port,
            "requestUri": exchange.head.original_url.decode("latin-1"),
            "listenerName": exchange.route.listener.name,
            "ruleName": fields["rule"], "backendPoolName": fields["pool"],
            "backendSettingName": exchange.backend.settings.name,
            "serverRouted": fields["server"],
            "transactionId": exchange.request_id.decode("latin-1"),
            "duration": fields["duration"], "closeCode": fields["close_code"],
            "closedBy": fields["closed_by"], "closeReason": fields["close_reason"],
            "clientFrames": fields["client_frames"], "clientBytes": fields["client_bytes"],
            "backendFrames": fields["backend_frames"], "backendBytes": fields["backend_bytes"],
            "clientMessages": fields["client_messages"],
            "backendMessages": fields["backend_messages"],
        }


async def serve(config: Config, *, reload_from: str | None = None,
                ready: asyncio.Event | None = None, own_process: bool = False) -> int:
    """Run a gateway until SIGTERM or SIGINT; SIGHUP re-reads `reload_from`. Exit status.

    `own_process`: the gateway is all this process does (`fastgw serve`), so the garbage
    collector may be tuned for it."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_error)
    gateway = Gateway(config)
    await gateway.start()
    if own_process:
        tune_gc()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload_from is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(gateway, reload_from)))
    if ready is not None:
        ready.set()
    log.event(log.INFO, "started", config=config.source)
    await stop.wait()
    log.event(log.INFO, "stopping", timeout=config.gateway.shutdown_timeout)
    await gateway.stop()
    return 0


def tune_gc() -> None:
    """What start-up built (modules, configuration, routing) lives as long as the process: freeze
    it, so that a collection never walks it again; and collect the young generation less often.
    The request and session paths leave no reference cycles behind (relay.WebSocketSession._untie,
    the parsers dropped at the end), so the collector has little to find; before that was so it
    took ~10 % of the CPU of the handshake benchmark."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


# Container allocations between young-generation collections (CPython's default: 700).
GC_THRESHOLD = 10_000


def _loop_error(loop, context: dict) -> None:
    """What the event loop could not hand to anyone (an exception in a callback): one JSON log
    line with the traceback, in the format of every other line, instead of asyncio's text."""
    exc = context.get("exception")
    fields = {"message": context.get("message", "")}
    if exc is not None:
        import traceback
        fields["error"] = repr(exc)
        fields["traceback"] = "".join(traceback.format_exception(exc))
    log.event(log.ERROR, "loop_error", **fields)


async def _reload(gateway: Gateway, path: str) -> None:
    from fastgw.cli import load_checked
    try:
        new = load_checked(path)
    except ConfigError as exc:
        # The same messages as `fastgw check`; the running configuration stays.
        for file, key, reason in exc.problems:
            log.event(log.ERROR, "reload_refused", problem=f"{file}:{key}: {reason}")
        return
    try:
        await gateway.reload(new)
    except Exception as exc:  # e.g. a new port that cannot be bound
        log.event(log.ERROR, "reload_failed", error=str(exc))


def run(config: Config, reload_from: str | None = None) -> int:
    """Run the gateway in this process on uvloop until it is told to stop; the exit status."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is for odd platforms
        return asyncio.run(serve(config, reload_from=reload_from, own_process=True))
    if hasattr(uvloop, "run"):
        return uvloop.run(serve(config, reload_from=reload_from, own_process=True))
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # pragma: no cover - uvloop < 0.18
    return asyncio.run(serve(config, reload_from=reload_from, own_process=True))  # pragma: no cover
