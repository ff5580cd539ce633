"""Cookie-based session affinity, as the cloud application gateway does it. Pure.

With `cookie_affinity = true` the gateway answers a request it routed freely with two cookies:
`<name>=<id>; Path=/` and `<name>CORS=<id>; Path=/; SameSite=None; Secure` (the twin that
cross-site requests and WebSocket handshakes from other origins still carry). The id names the
server without revealing its address: a hash of pool, settings and address, the same on every
gateway instance, so many instances behind one load balancer keep a client on one server. A later
request (or WebSocket handshake) carrying either cookie goes to that server while it is healthy;
otherwise to another one, and the cookies are replaced.
"""

from __future__ import annotations

import hashlib


def server_id(pool: str, settings: str, server: str) -> str:
    """The affinity id of `server` ("host:port") in the (pool, settings) pair."""
    digest = hashlib.sha256(f"fastgw-affinity\0{pool}\0{settings}\0{server}".encode())
    return digest.hexdigest()[:32]


def requested(cookies: list[bytes] | None, name: str) -> str | None:
    """The affinity id a request's Cookie headers carry in `name` or `nameCORS`, if any."""
    if not cookies:
        return None
    wanted = (name.encode(), name.encode() + b"CORS")
    for value in cookies:
        for part in value.split(b";"):
            cname, sep, cvalue = part.strip().partition(b"=")
            if sep and cname in wanted and cvalue:
                return cvalue.strip(b'"').decode("latin-1")
    return None


def set_cookies(name: str, value: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"Set-Cookie", f"{name}={value}; Path=/".encode()),
            (b"Set-Cookie", f"{name}CORS={value}; Path=/; SameSite=None; Secure".encode()))
