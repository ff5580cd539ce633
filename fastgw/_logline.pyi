"""The access log's line writer: fastgw._logline (Cython) and fastgw._logline_py (its twin).

Both modules expose exactly this API and return the same bytes for the same arguments; import
it through `fastgw.logline`, which picks one and sets `IMPLEMENTATION` ("c" or "py").

A line is one JSON object (RFC 8259) in the log envelope (`time`, `level`, `log`), without its
newline, UTF-8. `now` is seconds since the epoch (time.time()): the record's `time` and
`timeStamp`. Wire values (bytes) are latin-1; durations are seconds with microseconds at most.
"""

from typing import Any

__all__ = ["timestamp", "request_line", "session_line", "transaction_id"]


def timestamp(now: float) -> str:
    """ISO 8601 UTC with milliseconds: 2026-12-05T09:00:00.123Z."""


def request_line(now: float, handshake: bool, client_ip: str, client_port: int, tls: Any,
                 method: bytes, uri: bytes, agent: bytes, version: str, status: int,
                 received: int, sent: int, taken: float, host: str | None,
                 original_host: bytes, listener: str, rule: str, pool: str, settings: str,
                 server: str, latency: float | None, transaction_id: bytes,
                 error: str) -> bytes:
    """One answered request or handshake. `tls` is None or (protocol, cipher); `host` the Host
    sent to the backend when the settings override it, else None (the client's, `original_host`);
    `serverStatus` is `status` when the server answered (`latency` not None), else empty."""


def session_line(now: float, client_ip: str, client_port: int, uri: bytes, listener: str,
                 rule: str, pool: str, settings: str, server: str, transaction_id: bytes,
                 duration: float, close_code: int, closed_by: str, close_reason: str,
                 client_frames: int, client_bytes: int, backend_frames: int, backend_bytes: int,
                 client_messages: int, backend_messages: int, upgrades: int) -> bytes:
    """The `session-end` record of one WebSocket session."""


def transaction_id() -> bytes:
    """The next transaction id of this process (X-Request-Id, the access log's transactionId,
    error pages): 32 hex digits, a random per-process prefix and a counter, unique without a
    system call per request. Here because it is built per request like a line: `bytes % int`
    costs about 1.4 k instructions, the C engine a few dozen."""
