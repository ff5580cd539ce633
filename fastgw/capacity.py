"""Descriptor capacity: how many client connections this process can hold, and asking for more.

Each WebSocket session holds two descriptors (client and backend); an HTTP keep-alive client one,
plus its share of the backend keep-alive pool. A shell's usual soft RLIMIT_NOFILE (1024) allows
~500 sessions although the hard limit is often 20 times that: `fastgw serve` raises the soft limit
to the hard one at start (workers inherit it), as nginx's `worker_rlimit_nofile` and HAProxy do,
and logs what it allows. `[gateway] max_connections` defaults to what the limit allows with a
reserve kept for listening sockets, probes, log files and the event loop.
"""

from __future__ import annotations

import resource

PER_SESSION = 2  # descriptors per WebSocket session: client and backend
# Without a hard limit: ask for this many (the kernel's fs.nr_open is usually 1,048,576).
UNLIMITED_ASK = 1 << 20


def reserve(nofile: int) -> int:
    """Descriptors kept out of the connection budget: listening and admin sockets, probes, log
    files, the loop's own (64), plus 1 % for backend keep-alive pools."""
    return 64 + nofile // 100


def nofile() -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of this process."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_nofile() -> tuple[int, int]:
    """Raise the soft limit to the hard limit (or UNLIMITED_ASK without one); the new
    (soft, hard). A refusal leaves the soft limit as it was."""
    soft, hard = nofile()
    target = hard if hard != resource.RLIM_INFINITY else max(soft, UNLIMITED_ASK)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, hard
        soft = target
    return soft, hard


def sessions(soft: int) -> int:
    """WebSocket sessions that fit in `soft` descriptors, the reserve kept."""
    return max(0, (soft - reserve(soft)) // PER_SESSION)


def max_connections(configured: int, soft: int) -> int:
    """`[gateway] max_connections`, or (0) what the descriptor limit allows."""
    return configured if configured > 0 else max(1, sessions(soft))
