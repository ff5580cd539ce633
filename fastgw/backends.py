"""Runtime state of backend pools: servers as reached with given settings, and their connections.

A routing rule targets a (backend pool, backend settings) pair; the pair is the unit that health
probes, load balancing and affinity work on, as in a cloud application gateway. `Backend` is that
pair at runtime; `Endpoint` is one server of the pool reached with the pair's settings (address,
port, protocol), holding its idle keep-alive connections and its counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw.config import PoolConfig, ServerAddress, SettingsConfig

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.upstream import UpstreamConnection

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
DRAINING = "draining"


class Endpoint:
    """One server of a pool, as reached with one backend settings object."""

    __slots__ = ("backend", "address", "host", "port", "index", "state", "active", "idle",
                 "requests", "failures", "last_probe", "last_result", "last_reason",
                 "consecutive_failures", "affinity_id", "name")

    def __init__(self, backend: "Backend", address: ServerAddress, index: int):
        self.backend = backend
        self.address = address
        self.host = address.host
        self.port = address.port or backend.settings.port
        self.index = index
        self.state = HEALTHY  # until a probe says otherwise
        self.active = 0  # open requests and WebSocket sessions (least_connections)
        # Idle keep-alive connections, most recent last; HttpExchange._dispatch pops from the end.
        self.idle: list[UpstreamConnection] = []
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_probe: float | None = None
        self.last_result: str | None = None
        self.last_reason: str | None = None
        self.affinity_id = ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.name = f"{host}:{self.port}"  # for logs and /backend-health

    @property
    def available(self) -> bool:
        return self.state == HEALTHY

    def put_idle(self, conn: "UpstreamConnection", limit: int) -> None:
        if len(self.idle) >= limit:
            conn.close()
        else:
            self.idle.append(conn)

    def forget(self, conn: "UpstreamConnection") -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class Backend:
    """A (backend pool, backend settings) pair: the servers a rule sends traffic to."""

    def __init__(self, pool: PoolConfig, settings: SettingsConfig):
        self.pool = pool
        self.settings = settings
        self.endpoints: list[Endpoint] = []
        self.by_affinity: dict[str, Endpoint] = {}
        self.rr_next = 0
        self.latency = None  # its pool's metrics.Histo of response times, set on first use
        self.set_servers(pool.servers)

    def set_servers(self, servers, keep: "list[Endpoint] | None" = None) -> list[Endpoint]:
        """(Re)build the endpoint list; endpoints in `keep` whose address is still configured
        are reused (health, counters and idle connections survive a reload). Returns the
        endpoints that are no longer configured."""
        from fastgw.affinity import server_id
        old = {ep.address: ep for ep in (keep or [])}
        endpoints = []
        for i, addr in enumerate(servers):
            ep = old.get(addr)
            if ep is not None and ep.port == (addr.port or self.settings.port):
                del old[addr]
            else:  # a new server, or one now reached on another port
                ep = Endpoint(self, addr, i)
            ep.index = i
            ep.affinity_id = server_id(self, ep)
            endpoints.append(ep)
        self.endpoints = endpoints
        self.by_affinity = {ep.affinity_id: ep for ep in endpoints}
        self.rr_next = 0
        return list(old.values())

    @property
    def key(self) -> tuple[str, str]:
        return self.pool.name, self.settings.name

    def __repr__(self) -> str:
        return f"<Backend pool={self.pool.name!r} settings={self.settings.name!r}>"
