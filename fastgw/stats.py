"""Plain counters, bumped where things happen; exported by metrics.py.

The request and relay paths only add to plain integers and dicts here (per request, per session,
per probe; never per frame: frame and byte counts live in the frame scanners already), so
counting costs next to nothing on the hot path. `metrics.Metrics` moves the totals into
prometheus-client four times a second and before every scrape.

No label takes unbounded values: listener, rule and pool are configuration names; status codes
are classes (2xx...); close codes are the registered ones, with 3000-3999 and 4000-4999 grouped.
"""

from __future__ import annotations

from collections import defaultdict


def Tally() -> defaultdict:
    """Counts by label tuple: `tally[labels] += 1`. A defaultdict(int), whose item access is C
    all the way (a collections.Counter, a Python subclass, goes through slot wrappers)."""
    return defaultdict(int)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

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
    """The counters of one gateway process."""

    __slots__ = ("requests", "upgrades", "sessions", "closes", "probes", "waf",
                 "frames_closed", "bytes_closed", "latency", "durations", "log_errors",
                 "log_dropped", "accept_errors", "connect_errors", "client_refusals", "handovers")

    def __init__(self) -> None:
        self.requests = Tally()  # (listener, rule, pool, class)
        self.upgrades = Tally()  # (outcome,): 101, 4xx, 5xx, timeout
        self.sessions = Tally()  # (rule, pool)
        self.closes = Tally()  # (code label, side)
        self.probes = Tally()  # (pool, settings, result)
        self.waf = Tally()  # (rule id, action)
        # Relay totals of sessions that ended; live sessions are read from their scanners.
        self.frames_closed = [0, 0]  # client->backend, backend->client
        self.bytes_closed = [0, 0]
        self.latency: dict[str, Histo] = {}  # pool -> upstream response times
        self.durations = Histo(DURATION_BUCKETS)
        self.log_errors = Tally()  # (log, errno name): failed writes of the access/firewall log
        self.log_dropped = Tally()  # (log,): lines dropped after failed writes
        self.accept_errors = Tally()  # (errno name,): accepting paused for lack of descriptors
        self.connect_errors = Tally()  # (errno name,): backend connects the gateway could not make
        self.client_refusals = Tally()  # (reason,): clientgate.py's per-client refusals
        self.handovers = Tally()  # (outcome,): sessions a live upgrade brought: resumed, refused

    def latency_histo(self, pool: str) -> Histo:
        """The upstream response-time histogram of a pool (a Backend keeps it at hand)."""
        histo = self.latency.get(pool)
        if histo is None:
            histo = self.latency[pool] = Histo(LATENCY_BUCKETS)
        return histo
