"""The gateway: builds the parts from a configuration, wires them, and runs their lifecycle.

`Gateway(config)` is built inside a running event loop; `await start()` binds every listening
socket and starts the probes; `reload(config)` swaps in a new configuration without dropping
connections; `await stop()` shuts down gracefully (stop accepting, let in-flight requests finish,
close WebSocket sessions with 1001 — after `connection_draining` seconds where a backend asks for
it — within the deadlines). `serve(config)` runs one until SIGTERM/SIGINT, reloading on SIGHUP.

The parts, and who holds what (every one is given only what it calls):

    Router, Backends       routing.py, backends.py: the configuration as runtime state
    Services               services.py: WAF, TLS contexts, passive health (what exchanges ask)
    GatewayRecorder        recorder.py: counters, access log, the open sessions
    Dispatcher             dispatch.py: request head -> exchange; the open connections
    ClientConnection       downstream.py: one per accepted socket, given the three above
    HealthChecker          health.py: probe loops, given Services
    Metrics, admin         metrics.py, admin.py: read the gateway through narrow views
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import socket

from fastgw import admin, capacity, log, preflight, upgrade
from fastgw.acceptor import Acceptor
from fastgw.backends import DRAINING, Backend, Endpoint
from fastgw.clientgate import ClientGate, wants_gate
from fastgw.closepolicy import Ending
from fastgw.config import Config
from fastgw.dispatch import Dispatcher
from fastgw.downstream import CLOSING, RELAYING, ClientConnection
from fastgw.errors import ConfigError
from fastgw.health import HealthChecker, backend_health
from fastgw.listener import bind_socket
from fastgw.local import ErrorPages
from fastgw.logfile import LogFile
from fastgw.metrics import Metrics
from fastgw.recorder import GatewayRecorder
from fastgw.routing import Router
from fastgw.services import Services
from fastgw.stats import Stats
from fastgw.timeouts import Sweeper


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


def build_backends(config: Config, old: dict[tuple[str, str], Backend]
                   ) -> tuple[dict[tuple[str, str], Backend], list[Endpoint]]:
    """The Backend of every pair in use, reusing those of `old` (their endpoints keep health,
    counters and idle connections); and the endpoints no longer configured."""
    probes = {p.name: p for p in config.probes}
    backends: dict[tuple[str, str], Backend] = {}
    removed: list[Endpoint] = []
    # One session count per settings name, across pools and reloads (max_sessions).
    counts = {b.settings.name: b.sessions for b in old.values()}
    for pool_name, settings_name in backend_pairs(config):
        pool, settings = config.pool(pool_name), config.settings(settings_name)
        probe = probes[settings.probe] if settings.probe else None
        backend = old.get((pool_name, settings_name))
        if backend is None:
            backend = Backend(pool, settings, probe)
        else:
            removed += backend.update(pool, settings, probe)
        backend.sessions = counts.setdefault(settings_name, backend.sessions)
        backend.sessions.limit = settings.max_sessions
        backends[(pool_name, settings_name)] = backend
    for key, backend in old.items():
        if key not in backends:
            removed += backend.endpoints
    return backends, removed


class Gateway:
    def __init__(self, config: Config, *, sockets: dict | None = None):
        self.loop = asyncio.get_running_loop()
        self.config = config
        self.presockets = sockets or {}  # (bind, port) -> socket bound by a supervisor
        self.acceptors: dict[tuple[str, int], Acceptor] = {}
        self.admin_server: asyncio.AbstractServer | None = None
        self.draining: dict[Endpoint, asyncio.TimerHandle | None] = {}
        self.stopped = asyncio.Event()
        self.stats = Stats()
        self.router = Router(config)
        self.pages = ErrorPages()
        self.pages.load(config, self.router)
        self.backends, _ = build_backends(config, {})
        self.sweeper = Sweeper(self.loop)
        self.services = Services(config, self.stats, self.loop)
        self.access_log = self._access_log(config.gateway.access_log)
        self.recorder = GatewayRecorder(self.stats, self.access_log, self.router, self.loop.time)
        soft, _ = capacity.nofile()
        self.dispatcher = Dispatcher(config, self.router, self.backends, self.services,
                                     self.recorder, self.sweeper,
                                     capacity.max_connections(config.gateway.max_connections, soft),
                                     self)
        self.health = HealthChecker(self.services)
        self.metrics = Metrics(self.stats, self)

    # -- what metrics, admin and tests read ------------------------------------------------

    @property
    def sessions(self) -> set:
        return self.recorder.sessions

    @property
    def connections(self) -> set:
        return self.dispatcher.connections

    @property
    def stopping(self) -> bool:
        return self.dispatcher.stopping

    @property
    def connection_limit(self) -> int:
        return self.dispatcher.limit

    def servers_by_backend(self) -> list[tuple[Backend, list[Endpoint]]]:
        return [(backend, backend.endpoints + [ep for ep in self.draining if ep.backend is backend])
                for backend in self.backends.values()]

    def backend_health(self) -> dict:
        return backend_health(self.servers_by_backend())

    def render_metrics(self) -> tuple[int, str, bytes]:
        return self.metrics.render()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self._open_listeners()
        if self.config.gateway.admin is not None:
            host, port = self.config.gateway.admin
            self.admin_server = await admin.start(self, host, port, self.presockets.get("admin"),
                                                  reuse_port=self.config.gateway.workers > 1)
            log.event(log.INFO, "admin_listening", address=f"{host}:{port}")
        self.health.start(self.backends.values())
        self.metrics.start()

    async def _open_listeners(self) -> None:
        reuse_port = self.config.gateway.workers > 1
        for key in self.router.socket_keys():
            if key in self.acceptors:
                continue
            bind, port = key
            tls = next(x.protocol for x in self.config.listeners
                       if (x.bind, x.port) == key) == "https"
            sock = self.presockets.get(key) or bind_socket(bind, port, reuse_port=reuse_port)
            acceptor = Acceptor(self.loop, sock, functools.partial(self._connection, key, tls),
                                self.dispatcher.connection_closed,
                                self.services.listener_tls(key) if tls else None,
                                f"{bind}:{port}", self.stats, self.config.gateway.header_timeout)
            self._gate(acceptor, key)
            if self.dispatcher.accepting:
                acceptor.start()
            self.acceptors[key] = acceptor
            log.event(log.INFO, "listening", address=f"{bind}:{port}",
                      protocol="https" if tls else "http",
                      listeners=[x.name for x in self.config.listeners if (x.bind, x.port) == key])

    def _gate(self, acceptor: Acceptor, key: tuple[str, int]) -> None:
        """The socket's PROXY protocol and per-client limits (clientgate.py), as configured now:
        none at all costs its connections nothing."""
        listener = next(x for x in self.config.listeners if (x.bind, x.port) == key)
        gate = acceptor.gate
        if not wants_gate(listener):
            if gate is not None:
                gate.close()
            acceptor.gate = None  # connections still open keep theirs, to release their counts
        elif gate is None:
            gate = ClientGate(self.loop, self.stats, self.sweeper, acceptor.name, listener,
                              self.config.gateway.header_timeout, self.services)
            gate.connect = acceptor.connect
            acceptor.gate = gate
        else:
            gate.configure(listener, self.config.gateway.header_timeout)

    def _connection(self, key: tuple[str, int], tls: bool) -> ClientConnection:
        # The limits of the configuration current when the connection is accepted.
        conn = ClientConnection(self.dispatcher, self.recorder, self.config.gateway, self.loop,
                                key, tls, self.pages)
        self.dispatcher.admit(conn)
        return conn

    # -- dispatch.AcceptControl: max_connections -------------------------------------------

    def pause_accepting(self) -> None:
        for acceptor in self.acceptors.values():
            acceptor.pause()
        log.event(log.WARNING, "max_connections_reached", limit=self.dispatcher.limit)

    def resume_accepting(self) -> None:
        for acceptor in self.acceptors.values():
            acceptor.resume()
        log.event(log.INFO, "accepting_again", connections=len(self.connections))

    async def stop(self, keep_sessions: float = 0.0) -> None:
        """Graceful shutdown: see the module docstring. `keep_sessions`: seconds the WebSocket
        sessions still here may go on before their 1001 (what stayed after a live upgrade)."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.dispatcher.stopping = True
        for acceptor in self.acceptors.values():
            acceptor.close()
            if acceptor.gate is not None:
                acceptor.gate.close()
        self.health.stop()
        gw = self.config.gateway
        longest_drain = 0.0
        for conn in list(self.connections):
            if conn.state == RELAYING and conn.session is not None:
                session = conn.session
                drain = max(session.exchange.backend.settings.connection_draining, keep_sessions)
                longest_drain = max(longest_drain, drain)
                if drain > 0:
                    self.loop.call_later(drain, session.end, Ending.SHUTDOWN)
                else:
                    session.end(Ending.SHUTDOWN)
            elif conn.queue:
                for ex in conn.queue:
                    ex.keep_client = False  # finish what is in flight, then close
            elif conn.state < CLOSING:
                conn.close()
        deadline = self.loop.time() + max(gw.shutdown_timeout, longest_drain + gw.close_timeout)
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)  # their connection_lost (and 499 records) before the logs close
        for backend in self.backends.values():
            for ep in backend.endpoints:
                ep.close_idle()
        if self.admin_server is not None:
            self.admin_server.close()
        self.sweeper.stop()
        self.metrics.stop()
        if self.access_log is not None:
            self.access_log.close()
        self.services.close()
        self.stopped.set()
        log.event(log.INFO, "stopped")

    # -- reload (SIGHUP) -------------------------------------------------------------------

    async def reload(self, new: Config) -> None:
        """Serve `new` from now on. Connections, sessions and the health of servers that are
        still configured are kept; servers no longer configured drain."""
        old_keys = set(self.router.socket_keys())
        router = Router(new)
        self.pages.load(new, router)  # first: a page that cannot be read leaves all as it was
        self.config = new
        self.router = router
        self.backends, removed = build_backends(new, self.backends)
        self.dispatcher.configure(new, self.router, self.backends)
        dispatcher = self.dispatcher
        dispatcher.limit = capacity.max_connections(new.gateway.max_connections,
                                                    capacity.nofile()[0])
        if not dispatcher.accepting and len(dispatcher.connections) < dispatcher.limit:
            dispatcher.accepting = True  # a raised limit lets the waiting clients in now
            self.resume_accepting()
        self.recorder.router = self.router
        for endpoint in removed:
            self.drain(endpoint)
        self.health.restart(self.backends.values())
        self.services.configure(new)
        self._reopen_access_log(new.gateway.access_log)
        for key in old_keys - set(self.router.socket_keys()):
            acceptor = self.acceptors.pop(key, None)
            if acceptor is not None:
                acceptor.close()
                if acceptor.gate is not None:
                    acceptor.gate.close()
        for key, acceptor in self.acceptors.items():
            self._gate(acceptor, key)
        await self._open_listeners()
        log.event(log.INFO, "reloaded", config=new.source, removed_servers=[e.name for e in removed])

    def _reopen_access_log(self, destination: str) -> None:
        """The same destination is reopened (log rotation); another one replaces it."""
        if self.access_log is not None and self.access_log.destination == destination:
            self.access_log.reopen()
            return
        if self.access_log is not None:
            self.access_log.close()
        self.access_log = self.recorder.access_log = self._access_log(destination)

    def _access_log(self, destination: str) -> LogFile | None:
        return LogFile(destination, "access", self.loop, self.stats) if destination != "off" else None

    def drain(self, endpoint: Endpoint) -> None:
        """A server left its pool: no new traffic; its WebSocket sessions get Close 1001 after
        the settings' connection_draining seconds (at once when draining is off)."""
        endpoint.set_state(DRAINING, "removed from the pool")
        seconds = endpoint.backend.settings.connection_draining
        if seconds > 0:
            self.draining[endpoint] = self.loop.call_later(seconds, self._drained, endpoint)
        else:
            self._drained(endpoint)

    def _drained(self, endpoint: Endpoint) -> None:
        self.draining.pop(endpoint, None)
        for session in list(self.sessions):
            if session.endpoint is endpoint:
                session.end(Ending.DRAINED)


async def serve(config: Config, *, reload_from: str | None = None,
                ready: asyncio.Event | None = None, own_process: bool = False) -> int:
    """Run a gateway until SIGTERM or SIGINT; SIGHUP re-reads `reload_from`. Exit status.

    `own_process`: the gateway is all this process does (`fastgw serve`), so the garbage
    collector may be tuned for it."""
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_error)
    # A live upgrade's new process (fastgw.upgrade): the listeners come from the old one.
    successor = upgrade.Successor.from_environment()
    presockets = await successor.listeners() if successor is not None else None
    gateway = Gateway(config, sockets=presockets)
    await gateway.start()
    for key, sock in (presockets or {}).items():
        if key != "admin" and key not in gateway.acceptors:
            sock.close()  # a listener the new configuration no longer has
    if successor is not None:
        await successor.ready(gateway)
    if own_process:
        tune_gc()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload_from is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(gateway, reload_from)))
    # A worker starts with SIGHUP blocked (fastgw.supervisor): one that came meanwhile is
    # delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    predecessor = upgrade.Predecessor(gateway)
    supervisor = upgrade.supervisor_channel()
    following: asyncio.Task | None = None
    if supervisor is None:
        loop.add_signal_handler(signal.SIGUSR2,
                                lambda: loop.create_task(_upgrade(predecessor, stop)))
    else:
        # A worker: its supervisor upgrades it, starting the new worker in its place (so that
        # it stays the parent of every worker) and handing us our end of their channel.
        loop.add_signal_handler(signal.SIGUSR2, upgrade.refuse,
                                f"a worker is upgraded by its supervisor: signal {os.getppid()}",
                                "this worker, unchanged")
        following = loop.create_task(upgrade.follow(
            supervisor, lambda channel: loop.create_task(_upgrade(predecessor, stop, channel))))
    if ready is not None:
        ready.set()
    log.event(log.INFO, "started", config=config.source)
    await stop.wait()
    if following is not None:
        following.cancel()
    if predecessor.done:
        drain = gateway.config.gateway.upgrade_drain_timeout
        await gateway.stop(keep_sessions=drain)
        log.event(log.INFO, "upgrade_predecessor_exited")
        return 0
    log.event(log.INFO, "stopping", timeout=config.gateway.shutdown_timeout)
    await gateway.stop()
    return 0


async def _upgrade(predecessor: upgrade.Predecessor, stop: asyncio.Event,
                   channel: socket.socket | None = None) -> None:
    if await predecessor.run(channel):
        stop.set()  # what stayed here finishes (upgrade_drain_timeout), then this process exits


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
    try:
        new = preflight.load_checked(path)
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
