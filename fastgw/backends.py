"""Runtime state of backend pools: servers as reached with given settings, and their health.

A routing rule targets a (backend pool, backend settings) pair; the pair is the unit that health
probes, load balancing and affinity work on, as in a cloud application gateway. `Backend` is that
pair at runtime, with the probe that watches it; `Endpoint` is one server of the pool reached with
the pair's settings (address, port, protocol), holding its idle keep-alive connections, its
counters and its health.

Endpoint states (EndpointState), and what moves them:

    HEALTHY    -- unhealthy_threshold consecutive failures (probes or connects) -->  UNHEALTHY
    UNHEALTHY  -- one successful probe -->                                          HEALTHY
    HEALTHY, UNHEALTHY  -- removed from its pool by a reload -->                    DRAINING

DRAINING is final: the endpoint takes no new traffic and its WebSocket sessions are closed after
the settings' connection_draining. Servers start HEALTHY (traffic flows from the first second;
the first probe runs at once).
"""

from __future__ import annotations

import enum
from typing import Any

from fastgw import log
from fastgw.affinity import server_id
from fastgw.balancer import pick
from fastgw.config import PoolConfig, ProbeConfig, ServerAddress, SettingsConfig


class EndpointState(str, enum.Enum):
    """A server's health, as a string where it is shown (logs, /backend-health, metrics)."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"

    def __str__(self) -> str:
        return self.value


HEALTHY, UNHEALTHY, DRAINING = EndpointState  # module globals: cheaper to read on every request


def default_probe(pool: PoolConfig, settings: SettingsConfig) -> ProbeConfig:
    """The cloud gateway's default probe: GET / on the server with the settings' port and
    protocol, every 30 s, timeout 30 s, unhealthy after 3 failures, healthy on 200-399."""
    return ProbeConfig(name=f"default:{pool.name}:{settings.name}", protocol=settings.protocol)


class Endpoint:
    """One server of a pool, as reached with one backend settings object."""

    __slots__ = ("backend", "address", "host", "port", "index", "state", "active", "idle",
                 "requests", "failures", "last_probe", "last_result", "last_reason",
                 "consecutive_failures", "affinity_id", "name")

    def __init__(self, backend: Backend, address: ServerAddress, index: int):
        self.backend = backend
        self.address = address
        self.host = address.host
        self.port = address.port or backend.settings.port
        self.index = index
        self.state = HEALTHY
        self.active = 0  # open requests and WebSocket sessions (least_connections)
        # Idle keep-alive connections (upstream.UpstreamConnection), most recent last.
        self.idle: list[Any] = []
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_probe: float | None = None
        self.last_result: str | None = None
        self.last_reason: str | None = None
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.name = f"{host}:{self.port}"  # for logs and /backend-health
        self.affinity_id = server_id(backend.pool.name, backend.settings.name, self.name)

    # -- idle keep-alive connections ------------------------------------------------------

    def put_idle(self, conn: Any, limit: int) -> None:
        if len(self.idle) >= limit:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: Any) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    # -- health ---------------------------------------------------------------------------

    def set_state(self, state: EndpointState, reason: str) -> None:
        old = self.state
        self.state = state
        if state != HEALTHY:
            self.close_idle()  # no new requests: idle keep-alive connections are of no use
        level = log.WARNING if state == UNHEALTHY else log.INFO
        log.event(level, "server_state", pool=self.backend.pool.name,
                  settings=self.backend.settings.name, server=self.name, state=str(state),
                  previous=str(old), reason=reason)

    def probed(self, ok: bool, reason: str, now: float) -> None:
        """A probe result (`now`: wall-clock time, for /backend-health)."""
        self.last_probe = now
        self.last_result = "ok" if ok else "fail"
        if self.state == DRAINING:
            return
        if ok:
            self.consecutive_failures = 0
            self.last_reason = None
            if self.state != HEALTHY:
                self.set_state(HEALTHY, reason)
        else:
            self.failed(reason)

    def failed(self, reason: str) -> None:
        """A failed probe, or a failed connect (passive health): both count toward the
        probe's unhealthy_threshold."""
        self.consecutive_failures += 1
        self.last_reason = reason
        if self.state == HEALTHY \
                and self.consecutive_failures >= self.backend.probe.unhealthy_threshold:
            self.set_state(UNHEALTHY, reason)


class SessionCount:
    """The WebSocket sessions open on one backend settings object in this process, handshakes
    under way included, across every pool used with those settings (`max_sessions` limits
    them; 0 = no limit). Shared by those pairs' Backends, and kept across reloads by name."""

    __slots__ = ("open", "limit")

    def __init__(self, limit: int) -> None:
        self.open = 0
        self.limit = limit


class Backend:
    """A (backend pool, backend settings) pair: the servers a rule sends traffic to, and the
    probe that watches them (the settings' own, or the default one). `sessions` is the
    SessionCount of its settings; `ws_checks` says a handshake has an allowlist to pass
    (websocket_allowed_origins or _subprotocols: read once per handshake, the flag is cheaper)."""

    __slots__ = ("pool", "settings", "probe", "endpoints", "by_affinity", "rr_next", "latency",
                 "sessions", "ws_checks")

    def __init__(self, pool: PoolConfig, settings: SettingsConfig, probe: ProbeConfig | None):
        self.pool = pool
        self.settings = settings
        self.probe = probe or default_probe(pool, settings)
        self.endpoints: list[Endpoint] = []
        self.by_affinity: dict[str, Endpoint] = {}
        self.rr_next = 0
        self.latency: Any = None  # the pool's stats.Histo of response times, set on first use
        self.sessions = SessionCount(settings.max_sessions)
        self.ws_checks = bool(settings.websocket_allowed_origins
                              or settings.websocket_allowed_subprotocols)
        self.set_servers(pool.servers)

    def update(self, pool: PoolConfig, settings: SettingsConfig, probe: ProbeConfig | None
               ) -> list[Endpoint]:
        """A reload: the pair's new configuration; returns the endpoints no longer configured."""
        self.pool, self.settings = pool, settings
        self.probe = probe or default_probe(pool, settings)
        self.ws_checks = bool(settings.websocket_allowed_origins
                              or settings.websocket_allowed_subprotocols)
        return self.set_servers(pool.servers, keep=self.endpoints)

    def set_servers(self, servers: tuple[ServerAddress, ...],
                    keep: list[Endpoint] | None = None) -> list[Endpoint]:
        """(Re)build the endpoint list; endpoints in `keep` whose address is still configured
        are reused (health, counters and idle connections survive a reload). Returns the
        endpoints that are no longer configured."""
        old = {ep.address: ep for ep in (keep or [])}
        endpoints = []
        for i, addr in enumerate(servers):
            ep = old.get(addr)
            if ep is not None and ep.port == (addr.port or self.settings.port):
                del old[addr]
            else:  # a new server, or one now reached on another port
                ep = Endpoint(self, addr, i)
            ep.index = i
            endpoints.append(ep)
        self.endpoints = endpoints
        self.by_affinity = {ep.affinity_id: ep for ep in endpoints}
        self.rr_next = 0
        return list(old.values())

    def choose(self, exclude: tuple = (), preferred: Endpoint | None = None) -> Endpoint | None:
        """The server for the next request or session (balancer.pick), or None."""
        endpoints = self.endpoints
        ep = pick(endpoints, self.pool.load_balancing == "least_connections", self.rr_next,
                  exclude, preferred)
        if ep is not None:
            self.rr_next = (ep.index + 1) % len(endpoints)
        return ep

    def __repr__(self) -> str:
        return f"<Backend pool={self.pool.name!r} settings={self.settings.name!r}>"
