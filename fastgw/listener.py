"""Listening sockets: one per (bind address, port), shared by the listeners on it.

With several worker processes each binds its own socket with SO_REUSEPORT and the kernel spreads
new connections across them; a single process binds without it, so that a second gateway started
on the same port by mistake fails loudly instead of silently sharing the traffic.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import cast


class BindError(Exception):
    def __init__(self, bind: str, port: int, reason: str):
        self.bind = bind
        self.port = port
        self.reason = reason
        super().__init__(f"cannot listen on {bind}:{port}: {reason}")


def bind_socket(bind: str, port: int, *, reuse_port: bool = False, backlog: int = 2048
                ) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:  # a host name (the admin address may be "localhost")
        try:
            family, *_, address = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM)[0]
            # An IP address string: typeshed also allows (int, bytes), what an AF_INET6 address
            # looks like in a Python built with --disable-ipv6.
            bind = cast(str, address[0])
        except OSError as exc:
            raise BindError(bind, port, f"cannot resolve: {exc}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - not on Linux/macOS
                raise BindError(bind, port, "SO_REUSEPORT is not available for workers > 1")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((bind, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(bind, port, exc.strerror or str(exc)) from None
    except BaseException:
        sock.close()
        raise
    return sock
