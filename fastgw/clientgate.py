"""What a listening socket checks about a client before HTTP or TLS starts, and per request.

A socket whose listeners set none of proxy_protocol, max_connections_per_ip or requests_per_ip
has no gate: its accepted connections go straight to the transport (acceptor.py), and nothing
here runs. Otherwise the acceptor hands each accepted socket to the `ClientGate`:

1. `proxy_protocol_from`: a peer outside these ranges is closed at once.
2. `proxy_protocol`: the PROXY header (proxyproto.py) is read from the raw socket *before* the
   transport exists, so that on https the TLS layer starts at the ClientHello. Bytes are peeked
   (MSG_PEEK) and only the header's own bytes are consumed: what follows stays in the kernel for
   HTTP or TLS. A header that is missing, malformed, cut short by the peer, or not complete
   within header_timeout closes the connection; nothing reaches a backend. The header's source
   becomes the connection's client address (`peer_ip`/`peer_port`: logs, X-Forwarded-For,
   limits, WAF, affinity).
3. `max_connections_per_ip`: counted by the client address, so behind the PROXY protocol only
   once the header is read (a connection still sending it is bounded by header_timeout).
   Beyond the limit the connection is closed before any HTTP.
4. `requests_per_ip`: the dispatcher takes a token of `rate` (clientlimits.RequestRate) for
   every request and handshake, and tells `request_refused` about a 429.

Every refusal is counted (stats.client_refusals, by reason) and logged, one line a second at
most per socket; a request over the rate also gets a firewall-log record.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from fastgw import log
from fastgw.clientlimits import ConnectionCounts, RequestRate
from fastgw.config import ListenerConfig
from fastgw.proxyproto import ProxyHeaderError, parse
from fastgw.stats import Stats
from fastgw.timeouts import NEVER, Sweeper

PEEK = 4096  # bytes looked at per read of a PROXY header (a v2 header with TLVs may be longer)


def wants_gate(listener: ListenerConfig) -> bool:
    return bool(listener.proxy_protocol or listener.max_connections_per_ip
                or listener.requests_per_ip)


class ClientGate:
    def __init__(self, loop: Any, stats: Stats, sweeper: Sweeper, name: str,
                 listener: ListenerConfig, header_timeout: float, services: Any) -> None:
        self.loop = loop
        self.stats = stats
        self.sweeper = sweeper
        self.name = name  # "address:port", for the log
        self.services = services  # the firewall log
        self.connect: Any = None  # acceptor.Acceptor.connect(sock, client)
        self.counts: ConnectionCounts | None = None
        self.rate: RequestRate | None = None
        self.warned_at = -1.0
        self.pending: set[HeaderRead] = set()
        self.configure(listener, header_timeout)

    def configure(self, listener: ListenerConfig, header_timeout: float) -> None:
        """(Re)load: the counts of open connections are kept; the request buckets restart only
        when the rate changes."""
        self.proxy = listener.proxy_protocol
        self.trusted = [ipaddress.ip_network(c) for c in listener.proxy_protocol_from]
        self.header_timeout = header_timeout
        limit = listener.max_connections_per_ip
        if self.counts is None:
            self.counts = ConnectionCounts(limit) if limit else None
        elif limit:
            self.counts.limit = limit
        else:
            self.counts.limit = 1 << 62  # open ones still release their count
        rate, window = listener.requests_per_ip, listener.rate_window
        if not rate:
            self.rate = None
        elif self.rate is None or (self.rate.rate, self.rate.window) != (rate, window):
            self.rate = RequestRate(rate, window)

    # -- connections -----------------------------------------------------------------------

    def accepted(self, sock: socket.socket, address: Any) -> None:
        peer = (address[0], address[1]) if isinstance(address, tuple) else ("", 0)
        if not self.proxy:
            self.admit(sock, peer)
            return
        if self.trusted and not self._trusted(peer[0]):
            self.refuse(sock, "proxy_protocol_from", peer[0],
                        "peer not in proxy_protocol_from")
            return
        HeaderRead(self, sock, peer)

    def _trusted(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in net or (mapped is not None and mapped in net) for net in self.trusted)

    def admit(self, sock: socket.socket, client: tuple[str, int]) -> None:
        counts = self.counts
        if counts is not None and not counts.admit(client[0]):
            self.refuse(sock, "max_connections_per_ip", client[0],
                        f"more than {counts.limit} connections from this client")
            return
        self.connect(sock, client)

    def closed(self, ip: str) -> None:
        """A connection admitted for `ip` has ended."""
        if self.counts is not None:
            self.counts.release(ip)

    def refuse(self, sock: socket.socket, reason: str, ip: str, detail: str) -> None:
        self.refused(reason, ip, detail)
        sock.close()

    def refused(self, reason: str, ip: str, detail: str) -> None:
        self.stats.client_refusals[(reason,)] += 1
        now = self.loop.time()
        if now - self.warned_at >= 1.0:  # one line a second at most: a flood must not flood
            self.warned_at = now
            log.event(log.WARNING, "client_refused", listener=self.name, reason=reason,
                      client=ip, detail=detail, total=self.stats.client_refusals[(reason,)])

    def close(self) -> None:
        for read in list(self.pending):
            read.fail("", quiet=True)

    # -- requests --------------------------------------------------------------------------

    def request_refused(self, ip: str, port: int, head: Any, request_id: bytes, retry: int
                        ) -> None:
        """A request (or handshake) over requests_per_ip, answered 429 with `request_id`: counted,
        logged, and recorded in the firewall log as a WAF block is."""
        rate = self.rate
        assert rate is not None  # the dispatcher asks only a gate with a rate
        detail = f"more than {rate.rate} requests in {rate.window:g} s from this client"
        self.refused("requests_per_ip", ip, detail)
        self.services.firewall_record({
            "time": log.timestamp(),
            "clientIp": ip,
            "clientPort": port,
            "requestUri": head.url.decode("latin-1"),
            "hostname": (head.host or b"").decode("latin-1"),
            "transactionId": request_id.decode("latin-1"),
            "policyMode": "Prevention",
            "ruleSetType": "fastgw",
            "ruleSetVersion": "",
            "ruleGroup": "client-limits",
            "ruleId": "requests-per-ip",
            "message": f"Rate limit: {detail}",
            "action": "Blocked",
            "details": {"message": "", "data": f"Retry-After: {retry}", "file": "",
                        "line": "", "severity": "WARNING", "tags": []},
        })


class HeaderRead:
    """Reading the PROXY header of one accepted socket (its deadline checked by the Sweeper)."""

    __slots__ = ("gate", "sock", "peer", "buffered", "deadline_at")

    def __init__(self, gate: ClientGate, sock: socket.socket, peer: tuple[str, int]) -> None:
        self.gate = gate
        self.sock = sock
        self.peer = peer
        self.buffered = b""  # header bytes consumed so far
        self.deadline_at = gate.loop.time() + gate.header_timeout
        gate.pending.add(self)
        gate.sweeper.add(self)
        gate.loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        try:
            peeked = self.sock.recv(PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"read failed: {exc.strerror}")
            return
        if not peeked:
            self.fail("connection closed before the end of the PROXY header")
            return
        data = self.buffered + peeked
        try:
            header = parse(data)
        except ProxyHeaderError as exc:
            self.fail(str(exc))
            return
        if header is None:  # every byte seen is the header's: take them, wait for the rest
            self.sock.recv(len(peeked))
            self.buffered = data
            return
        self.sock.recv(header.length - len(self.buffered))  # exactly the header: it is there
        self._done()
        self.gate.admit(self.sock, header.source or self.peer)

    def on_deadline(self) -> None:
        self.fail("no complete PROXY header within header_timeout")

    def fail(self, detail: str, quiet: bool = False) -> None:
        self._done()
        if not quiet:
            self.gate.refused("proxy_header", self.peer[0], detail)
        self.sock.close()

    def _done(self) -> None:
        gate = self.gate
        self.deadline_at = NEVER
        gate.pending.discard(self)
        gate.sweeper.discard(self)
        gate.loop.remove_reader(self.sock.fileno())
