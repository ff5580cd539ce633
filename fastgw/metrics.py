"""Prometheus metrics (prometheus-client), fed from plain integers.

The request and relay paths only bump plain integers and dicts in `Stats` (per request, per
session, per probe — never per frame: frame and byte counts live in the frame scanners already).
`Metrics.sync()` moves the deltas into prometheus-client objects four times a second and before every
scrape, so exporting costs nothing on the hot path.

With several worker processes (`workers > 1`) prometheus-client's multiprocess mode is used: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before the workers start, each worker writes its values
to its own mmap files there, and whichever worker answers a scrape of `/metrics` (they share the
admin port with SO_REUSEPORT) aggregates all of them with MultiProcessCollector. Counters of a
worker that died and was restarted are kept (they are totals); its gauges are dropped by the
supervisor (mark_process_dead).

No label takes unbounded values: listener, rule and pool are configuration names; status codes
are classes (2xx...); close codes are the registered ones, with 3000-3999 and 4000-4999 grouped.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.gateway import Gateway

def Tally() -> defaultdict:
    """Counts by label tuple: `tally[labels] += 1`. A defaultdict(int), whose item access is C
    all the way (a collections.Counter, a Python subclass, goes through slot wrappers)."""
    return defaultdict(int)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# FASTGW_METRICS_INTERVAL: benchmarks/instructions.py sets it high to keep this periodic work
# out of its per-request instruction counts.
SYNC_INTERVAL = float(os.environ.get("FASTGW_METRICS_INTERVAL", "0.25"))


_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    return _CLASSES[status // 100] if 100 <= status <= 599 else "other"


def close_code_label(code: int | None) -> str:
    if code is None:
        return "none"
    if 3000 <= code <= 3999:
        return "3000-3999"
    if 4000 <= code <= 4999:
        return "4000-4999"
    return str(code) if 1000 <= code <= 1015 else "other"


class Histo:
    """A histogram of plain integers: observing is a short scan and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = 0  # the first bucket with value <= its bound (le), else the last one (+Inf)
        for bound in self.bounds:  # a dozen bounds: a scan (compiled, a C loop) beats bisect
            if value <= bound:
                break
            i += 1
        self.counts[i] += 1
        self.sum += value


class Stats:
    """Plain counters, bumped where things happen; read by Metrics.sync()."""

    def __init__(self) -> None:
        self.requests: Tally = Tally()  # (listener, rule, pool, class)
        self.upgrades: Tally = Tally()  # outcome: 101, 4xx, 5xx, timeout
        self.sessions: Tally = Tally()  # (rule, pool)
        self.closes: Tally = Tally()  # (code label, side)
        self.probes: Tally = Tally()  # (pool, settings, result)
        self.waf: Tally = Tally()  # (rule id, action)
        # Relay totals of sessions that ended; live sessions are read from their scanners.
        self.frames_closed = [0, 0]  # client->backend, backend->client
        self.bytes_closed = [0, 0]
        self.latency: dict[str, Histo] = {}  # pool -> upstream response times
        self.durations = Histo(DURATION_BUCKETS)

    def latency_histo(self, pool: str) -> Histo:
        """The upstream response-time histogram of a pool (a Backend keeps it at hand)."""
        histo = self.latency.get(pool)
        if histo is None:
            histo = self.latency[pool] = Histo(LATENCY_BUCKETS)
        return histo


class Metrics:
    def __init__(self, gateway: "Gateway") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.gateway = gateway
        self.stats: Stats = gateway.stats
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in mmap files, not in a registry of ours.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg = {"registry": self.registry} if self.registry is not None else {"registry": None}
        live = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.m_requests = Counter("fastgw_http_requests", "HTTP requests answered, by status class",
                                  ["listener", "rule", "pool", "code_class"], **reg)
        self.m_latency = Histogram("fastgw_upstream_response_seconds",
                                   "Time from sending a request to a backend to its response head",
                                   ["pool"], buckets=LATENCY_BUCKETS, **reg)
        self.m_connections = Gauge("fastgw_connections", "Open client connections", **live, **reg)
        self.m_sessions_open = Gauge("fastgw_websocket_sessions_open", "Open WebSocket sessions",
                                     **live, **reg)
        self.m_sessions = Counter("fastgw_websocket_sessions", "WebSocket sessions started",
                                  ["rule", "pool"], **reg)
        self.m_upgrades = Counter("fastgw_websocket_upgrades", "WebSocket upgrade requests by outcome",
                                  ["outcome"], **reg)
        self.m_duration = Histogram("fastgw_websocket_session_duration_seconds",
                                    "WebSocket session durations", buckets=DURATION_BUCKETS, **reg)
        self.m_closes = Counter("fastgw_websocket_closes", "WebSocket sessions ended, by close code "
                                "and by the side that closed first", ["code", "side"], **reg)
        self.m_frames = Counter("fastgw_websocket_frames", "WebSocket frames relayed", ["direction"], **reg)
        self.m_bytes = Counter("fastgw_websocket_bytes", "WebSocket bytes relayed", ["direction"], **reg)
        self.m_servers = Gauge("fastgw_backend_servers", "Servers per pool and state",
                               ["pool", "settings", "state"],
                               **({"multiprocess_mode": "liveall"} if self.multiprocess else {}), **reg)
        self.m_probes = Counter("fastgw_probes", "Health probe results", ["pool", "settings", "result"], **reg)
        self.m_waf = Counter("fastgw_waf_matches", "WAF rule matches by rule id and action",
                             ["rule_id", "action"], **reg)
        self.synced: dict[tuple, float] = {}
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.sync()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            self.sync()

    def _add(self, metric: Any, labels: tuple, key: tuple, total: float) -> None:
        previous = self.synced.get(key, 0)
        if total > previous:
            (metric.labels(*labels) if labels else metric).inc(total - previous)
            self.synced[key] = total

    def _add_histo(self, child: Any, key: tuple, histo: Histo) -> None:
        """Add a plain histogram's growth to a prometheus-client one. prometheus-client keeps
        per-bucket (not cumulative) values in `_buckets` and the sum in `_sum`, in every mode."""
        before = self.synced.get(key)
        counts = list(histo.counts)
        if before is None:
            before = ([0] * len(counts), 0.0)
        if counts == before[0]:
            return
        for i, (now, then) in enumerate(zip(counts, before[0])):
            if now > then:
                child._buckets[i].inc(now - then)
        child._sum.inc(histo.sum - before[1])
        self.synced[key] = (counts, histo.sum)

    def sync(self) -> None:
        """Move what Stats gathered since the last sync into the prometheus objects."""
        s = self.stats
        for labels, n in list(s.requests.items()):
            self._add(self.m_requests, labels, ("req",) + labels, n)
        for (outcome,), n in list(s.upgrades.items()):
            self._add(self.m_upgrades, (outcome,), ("upg", outcome), n)
        for labels, n in list(s.sessions.items()):
            self._add(self.m_sessions, labels, ("ses",) + labels, n)
        for labels, n in list(s.closes.items()):
            self._add(self.m_closes, labels, ("close",) + labels, n)
        for labels, n in list(s.probes.items()):
            self._add(self.m_probes, labels, ("probe",) + labels, n)
        for labels, n in list(s.waf.items()):
            self._add(self.m_waf, tuple(map(str, labels)), ("waf",) + labels, n)
        frames = list(s.frames_closed)
        sent = list(s.bytes_closed)
        for session in self.gateway.sessions:
            for i, pump in enumerate(session.pumps):
                frames[i] += pump.scanner.frames
                sent[i] += pump.scanner.bytes
        for i, direction in enumerate(("client_to_backend", "backend_to_client")):
            self._add(self.m_frames, (direction,), ("frames", direction), frames[i])
            self._add(self.m_bytes, (direction,), ("bytes", direction), sent[i])
        for pool, histo in list(s.latency.items()):
            self._add_histo(self.m_latency.labels(pool), ("lat", pool), histo)
        self._add_histo(self.m_duration, ("dur",), s.durations)
        self.m_connections.set(len(self.gateway.connections))
        self.m_sessions_open.set(len(self.gateway.sessions))
        counts: Tally = Tally()
        for backend in self.gateway.backends.values():
            for state in ("healthy", "unhealthy", "draining"):
                counts[(backend.pool.name, backend.settings.name, state)] += 0
            for ep in backend.endpoints + self.gateway.draining_endpoints(backend):
                counts[(backend.pool.name, backend.settings.name, ep.state)] += 1
        for labels, n in counts.items():
            self.m_servers.labels(*labels).set(n)

    def render(self) -> tuple[int, str, bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        self.sync()
        if self.multiprocess:
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
