"""The exception tree. Each error carries the answer it turns into on the wire.

    FastgwError
    ├── ConfigError      one or more (file, key path, reason) problems; exit status 2
    ├── HandshakeError   a WebSocket upgrade request we refuse: HTTP status (400, 403, 426, 503)
    ├── RequestError     a malformed or refused HTTP request: HTTP status (400, 413, 431, ...)
    ├── UpstreamError    the backend failed us: HTTP status 502, 503 or 504, and the cause
    └── FrameError       a WebSocket protocol violation: close code (1002, 1007, 1009)

`side` says who was at fault ("client", "backend" or "gateway"), so the one place that turns an
error into bytes on the wire can also log it and count it by side.
"""

from __future__ import annotations

import errno

# OSError numbers that are the gateway's own shortage, never a peer's fault (DESIGN.md section
# 4): out of descriptors (per process, system-wide) or of kernel memory for sockets. By name.
SHORTAGES = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE", errno.ENOBUFS: "ENOBUFS",
             errno.ENOMEM: "ENOMEM"}


class FastgwError(Exception):
    """Base class of every error fastgw raises on purpose."""


class ConfigError(FastgwError):
    """A configuration that cannot be served.

    `problems` is a list of (file, key_path, reason); `str()` renders one line per problem as
    `FILE:key.path: reason`, the format `fastgw check` prints.
    """

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"{file}:{key}: {reason}" for file, key, reason in self.problems)


class HandshakeError(FastgwError):
    """A WebSocket opening handshake the gateway refuses (RFC 6455 section 4.2.1)."""

    side = "client"

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()):
        self.status = status
        self.reason = reason
        self.headers = headers
        super().__init__(f"{status}: {reason}")


class RequestError(FastgwError):
    """An HTTP request the gateway refuses before anything reaches a backend."""

    side = "client"
    headers: tuple[tuple[str, str], ...] = ()  # none of its answers needs extra headers

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class UpstreamError(FastgwError):
    """The backend could not be reached or misbehaved: 502, 503 or 504."""

    side = "backend"

    def __init__(self, status: int, cause: str):
        self.status = status
        self.cause = cause
        super().__init__(f"{status}: {cause}")


class FrameError(FastgwError):
    """A WebSocket frame stream broke RFC 6455 or a configured limit.

    `code` is the close code to send to the offender (1002 protocol error, 1007 invalid data,
    1009 too big); `reason` a short human text for the close frame and the log; `offset` how
    many bytes of the chunk being scanned were valid and may still be forwarded.
    """

    def __init__(self, code: int, reason: str, offset: int = 0):
        self.code = code
        self.reason = reason
        self.offset = offset
        super().__init__(code, reason, offset)

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.code, self.reason, self.offset))
