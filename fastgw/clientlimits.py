"""Per-client limits of a listening socket: open connections and requests per client IP.

Pure decisions on plain values; the clock is passed in (loop time), never read here.

`ConnectionCounts` (max_connections_per_ip): open connections per IP. An entry lives while the
IP has a connection open, so the table is bounded by the open connections.

`RequestRate` (requests_per_ip over rate_window): a token bucket per IP, kept as one number
(GCRA, the "virtual scheduling" form of a token bucket): each IP has a bucket of
`requests_per_ip` tokens, refilled continuously at `requests_per_ip / rate_window` tokens a
second (a full bucket refills in rate_window seconds). A request or handshake takes a token;
with none left it is refused (429), takes nothing, and is told to retry in the seconds until the
next token (rounded up, at least 1). So a client may burst `requests_per_ip` at once, then goes
at the steady rate; a client idle for rate_window seconds has its whole budget again.

The bucket is stored as the time at which it will be full again (`full_at`); an entry whose
`full_at` has passed carries nothing and may be dropped. Entries are kept in least-recently-used
order: each decision drops the idle entries at the old end, and beyond `capacity` entries the
least recently used one is dropped whatever its state (that client gets a full bucket back:
memory stays bounded under a flood of addresses).
"""

from __future__ import annotations

import math
from collections import OrderedDict

# Entries of a RequestRate at most (see the README for the memory this amounts to).
RATE_CAPACITY = 100_000
# Idle entries dropped per decision at most: amortised cleaning, never a long scan.
_SWEEP = 2


class ConnectionCounts:
    __slots__ = ("limit", "open")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, ip: str) -> bool:
        """A connection from `ip`: True (counted) if under the limit, else False."""
        n = self.open.get(ip, 0)
        if n >= self.limit:
            return False
        self.open[ip] = n + 1
        return True

    def release(self, ip: str) -> None:
        """A connection admitted for `ip` has closed."""
        n = self.open.get(ip, 0)
        if n <= 1:
            self.open.pop(ip, None)
        else:
            self.open[ip] = n - 1


class RequestRate:
    __slots__ = ("rate", "window", "interval", "capacity", "full_at")

    def __init__(self, rate: int, window: float, capacity: int = RATE_CAPACITY) -> None:
        self.rate = rate
        self.window = window
        self.interval = window / rate  # seconds per token
        self.capacity = capacity
        self.full_at: OrderedDict[str, float] = OrderedDict()

    def take(self, ip: str, now: float) -> int:
        """A request from `ip` at `now`: 0 if allowed (a token taken), else the seconds after
        which one will be (Retry-After, RFC 9110 section 10.2.3)."""
        table = self.full_at
        full_at = table.get(ip, now)
        if full_at < now:
            full_at = now
        # Tokens in use: (full_at - now) / interval; one more must fit in the bucket.
        after = full_at + self.interval
        if after - now > self.window + 1e-9:
            return max(1, math.ceil(after - now - self.window))
        table[ip] = after
        table.move_to_end(ip)
        self._trim(now)
        return 0

    def _trim(self, now: float) -> None:
        table = self.full_at
        for _ in range(_SWEEP):
            ip, full_at = next(iter(table.items()))
            if full_at > now:
                break
            del table[ip]
        while len(table) > self.capacity:
            table.popitem(last=False)
