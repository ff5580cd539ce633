"""Choosing a server: round robin or least connections over the available endpoints. Pure.

`pick(backend, exclude)` returns an Endpoint, or None when no server can take the request. Only
endpoints whose state is healthy are candidates (probes and connect failures set that state);
`exclude` holds the endpoints that already failed for the request at hand, so a retry goes to
another server; `preferred` is the server a request's affinity cookie names.
"""

from __future__ import annotations

from fastgw.backends import Backend, Endpoint


def pick(backend: Backend, exclude: tuple = (), preferred: Endpoint | None = None) -> Endpoint | None:
    """`preferred` (cookie affinity) wins while it is healthy and not excluded."""
    if preferred is not None and preferred.state == "healthy" and preferred not in exclude:
        return preferred
    endpoints = backend.endpoints
    n = len(endpoints)
    if n == 0:
        return None
    if backend.pool.load_balancing == "least_connections":
        best = None
        # Start at the round-robin cursor so that ties rotate instead of piling on server 0.
        start = backend.rr_next
        for i in range(n):
            ep = endpoints[(start + i) % n]
            if ep.state != "healthy" or ep in exclude:
                continue
            if best is None or ep.active < best.active:
                best = ep
        if best is not None:
            backend.rr_next = (best.index + 1) % n
        return best
    start = backend.rr_next
    for i in range(n):
        ep = endpoints[(start + i) % n]
        if ep.state == "healthy" and ep not in exclude:
            backend.rr_next = (ep.index + 1) % n
            return ep
    return None
