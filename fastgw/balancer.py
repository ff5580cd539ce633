"""Choosing a server: round robin or least connections over the available endpoints. Pure.

`pick(endpoints, least_connections, start, exclude, preferred)` returns one of `endpoints`, or
None when none can take the request. Only endpoints whose state is "healthy" are candidates
(probes and connect failures set that state); `exclude` holds the endpoints that already failed
for the request at hand, so a retry goes to another server; `preferred` is the server a request's
affinity cookie names. `start` is the round-robin cursor: the caller moves it past the endpoint
chosen (backends.Backend.choose). An endpoint is anything with `state`, `active` (open requests
and sessions) and `index` (its position in `endpoints`).
"""

from __future__ import annotations

from typing import Any

HEALTHY = "healthy"


def pick(endpoints: list, least_connections: bool, start: int, exclude: tuple = (),
         preferred: Any = None) -> Any:
    """`preferred` (cookie affinity) wins while it is healthy and not excluded."""
    if preferred is not None and preferred.state == HEALTHY and preferred not in exclude:
        return preferred
    n = len(endpoints)
    if least_connections:
        best = None
        # From the round-robin cursor, so that ties rotate instead of piling on server 0.
        for i in range(n):
            ep = endpoints[(start + i) % n]
            if ep.state == HEALTHY and ep not in exclude \
                    and (best is None or ep.active < best.active):
                best = ep
        return best
    for i in range(n):
        ep = endpoints[(start + i) % n]
        if ep.state == HEALTHY and ep not in exclude:
            return ep
    return None
