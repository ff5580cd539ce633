"""Prometheus metrics (prometheus-client): the exporter of stats.Stats.

The request and relay paths only bump plain integers and dicts in `stats.Stats` (see there).
`Metrics.sync()` moves the deltas into prometheus-client objects four times a second and before
every scrape, so exporting costs nothing on the hot path. What is not a counter (open
connections and sessions, server states) is read from a `MetricsSource` at each sync.

With several worker processes (`workers > 1`) prometheus-client's multiprocess mode is used: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before the workers start, each worker writes its values
to its own mmap files there, and whichever worker answers a scrape of `/metrics` (they share the
admin port with SO_REUSEPORT) aggregates all of them with MultiProcessCollector. Counters of a
worker that died and was restarted are kept (they are totals); its gauges are dropped by the
supervisor (mark_process_dead).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Sized
from typing import Any, Literal, Protocol, TypedDict

from fastgw.backends import EndpointState
from fastgw.stats import DURATION_BUCKETS, LATENCY_BUCKETS, Histo, Stats, Tally

# FASTGW_METRICS_INTERVAL: benchmarks/instructions.py sets it high to keep this periodic work
# out of its per-request instruction counts.
SYNC_INTERVAL = float(os.environ.get("FASTGW_METRICS_INTERVAL", "0.25"))


class MetricsSource(Protocol):
    """What the exporter reads besides the counters (the gateway implements it)."""

    @property
    def sessions(self) -> Collection[Any]:
        """The open relay sessions (their frame scanners hold the live frame and byte counts)."""

    @property
    def connections(self) -> Sized:
        """The open client connections."""

    @property
    def connection_limit(self) -> int:
        """`[gateway] max_connections` as in force."""

    def servers_by_backend(self) -> list[tuple[Any, list[Any]]]:
        """Each backends.Backend with its endpoints, those draining out of it included."""


class _GaugeMode(TypedDict, total=False):
    """A Gauge's aggregation across worker processes (prometheus-client's multiprocess_mode)."""

    multiprocess_mode: Literal["livesum", "liveall"]


class Metrics:
    def __init__(self, stats: Stats, source: MetricsSource) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        self.source = source
        self.stats = stats
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in mmap files, not in a registry of ours.
        self.registry = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        reg = {"registry": self.registry} if self.registry is not None else {"registry": None}
        live: _GaugeMode = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        per_process: _GaugeMode = {"multiprocess_mode": "liveall"} if self.multiprocess else {}
        self.m_requests = Counter("fastgw_http_requests", "HTTP requests answered, by status class",
                                  ["listener", "rule", "pool", "code_class"], **reg)
        self.m_latency = Histogram("fastgw_upstream_response_seconds",
                                   "Time from sending a request to a backend to its response head",
                                   ["pool"], buckets=LATENCY_BUCKETS, **reg)
        self.m_connections = Gauge("fastgw_connections", "Open client connections", **live, **reg)
        self.m_connection_limit = Gauge("fastgw_connections_limit", "Client connections accepted "
                                        "at most ([gateway] max_connections)", **live, **reg)
        self.m_accept_errors = Counter("fastgw_accept_errors", "Times accepting paused for lack of "
                                       "descriptors or socket memory, by errno", ["error"], **reg)
        self.m_connect_errors = Counter("fastgw_gateway_connect_errors", "Backend connects the "
                                        "gateway could not make for its own shortage (answered "
                                        "503), by errno", ["error"], **reg)
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
                               **per_process, **reg)
        self.m_probes = Counter("fastgw_probes", "Health probe results", ["pool", "settings", "result"], **reg)
        self.m_log_errors = Counter("fastgw_log_write_errors", "Failed writes of the access or "
                                    "firewall log, by log and errno", ["log", "error"], **reg)
        self.m_log_dropped = Counter("fastgw_log_dropped_lines", "Log lines dropped after failed "
                                     "writes (beyond what is kept for a retry)", ["log"], **reg)
        self.m_client_refusals = Counter("fastgw_client_refusals", "Clients refused by a listener's "
                                         "PROXY protocol or per-client limits, by reason",
                                         ["reason"], **reg)
        self.m_handovers = Counter("fastgw_upgrade_sessions", "WebSocket sessions this process "
                                   "received from its predecessor in a live upgrade, by outcome "
                                   "(resumed, refused)", ["outcome"], **reg)
        self.m_waf = Counter("fastgw_waf_matches", "WAF rule matches by rule id and action",
                             ["rule_id", "action"], **reg)
        # key -> the total last synced: a number for a counter, (bucket counts, sum) for a histogram
        self.synced: dict[tuple, Any] = {}
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
        before: tuple[list[int], float] | None = self.synced.get(key)
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
        for labels, n in list(s.accept_errors.items()):
            self._add(self.m_accept_errors, labels, ("accepterr",) + labels, n)
        for labels, n in list(s.connect_errors.items()):
            self._add(self.m_connect_errors, labels, ("connecterr",) + labels, n)
        for labels, n in list(s.log_errors.items()):
            self._add(self.m_log_errors, labels, ("logerr",) + labels, n)
        for labels, n in list(s.log_dropped.items()):
            self._add(self.m_log_dropped, labels, ("logdrop",) + labels, n)
        for labels, n in list(s.client_refusals.items()):
            self._add(self.m_client_refusals, labels, ("refused",) + labels, n)
        for labels, n in list(s.handovers.items()):
            self._add(self.m_handovers, labels, ("handover",) + labels, n)
        for labels, n in list(s.waf.items()):
            self._add(self.m_waf, tuple(map(str, labels)), ("waf",) + labels, n)
        frames = list(s.frames_closed)
        sent = list(s.bytes_closed)
        source = self.source
        for session in source.sessions:
            for i, pump in enumerate(session.pumps):
                frames[i] += pump.scanner.frames
                sent[i] += pump.scanner.bytes
        for i, direction in enumerate(("client_to_backend", "backend_to_client")):
            self._add(self.m_frames, (direction,), ("frames", direction), frames[i])
            self._add(self.m_bytes, (direction,), ("bytes", direction), sent[i])
        for pool, histo in list(s.latency.items()):
            self._add_histo(self.m_latency.labels(pool), ("lat", pool), histo)
        self._add_histo(self.m_duration, ("dur",), s.durations)
        self.m_connections.set(len(source.connections))
        self.m_connection_limit.set(source.connection_limit)
        self.m_sessions_open.set(len(source.sessions))
        counts = Tally()
        for backend, endpoints in source.servers_by_backend():
            for state in EndpointState:
                counts[(backend.pool.name, backend.settings.name, state.value)] += 0
            for ep in endpoints:
                counts[(backend.pool.name, backend.settings.name, ep.state.value)] += 1
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
            assert self.registry is not None  # None only in multiprocess mode
            registry = self.registry
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
