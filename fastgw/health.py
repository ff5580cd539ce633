"""Active health probes: one loop per server of each (pool, settings) pair, on the event loop.

Defaults are the cloud application gateway's (a pair without a custom probe): `GET /` to the
server's address with the settings' port and protocol, every 30 s, timeout 30 s, unhealthy after
3 consecutive failures, healthy on a status 200-399 — and one success makes a server healthy
again. Custom probes (`[[probes]]`) set protocol, host, port, path, interval, timeout, threshold,
`match_status` ranges and a `match_body` substring.

A probe of `type = "websocket"` performs a real opening handshake on its path (101 with the right
Sec-WebSocket-Accept), sends Close 1000 and waits for the server's Close: the check that a
WebSocket-only backend (which answers a plain GET with 400) really serves WebSocket.

A probe never blocks traffic: each runs as its own task, bounded by its timeout. Servers start
healthy (traffic flows from the first second; the first probe runs at once).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from fastgw.backends import HEALTHY, Backend, Endpoint
from fastgw.config import ProbeConfig
from fastgw.errors import SHORTAGES, FrameError
from fastgw.frames import FrameScanner, build_close
from fastgw.handshake import accept_key

MAX_BODY = 64 * 1024  # match_body looks at most this far into a probe response



class ProbeServices(Protocol):
    """What the probes ask the gateway for (services.Services implements it)."""

    def probe_tls(self, backend: Backend, probe: ProbeConfig) -> tuple[Any, str | None]:
        """(SSL context, server name) for an https probe; (None, None) for http."""

    def probe_done(self, endpoint: Endpoint, ok: bool) -> None:
        """Count one probe result."""

    def gateway_shortage(self, reason: str) -> None:
        """A probe could not run for the gateway's own lack of descriptors."""


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    reason: str
    status: int | None = None
    shortage: str = ""  # errno name: the gateway lacked descriptors or memory (not the server)


class _Response:
    """httptools callbacks collecting a probe response."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.headers: dict[bytes, bytes] = {}
        self.head_done = False
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        if len(self.body) < MAX_BODY:
            self.body += body[: MAX_BODY - len(self.body)]

    def on_message_complete(self) -> None:
        self.done = True


async def run_probe(probe: ProbeConfig, endpoint: Endpoint, ssl_context=None,
                    server_hostname: str | None = None) -> ProbeResult:
    """One probe of one server, bounded by probe.timeout."""
    try:
        return await asyncio.wait_for(_probe(probe, endpoint, ssl_context, server_hostname),
                                      probe.timeout)
    except asyncio.TimeoutError:
        return ProbeResult(False, f"timeout after {probe.timeout:g}s")
    except (OSError, EOFError) as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}",
                           shortage=SHORTAGES.get(getattr(exc, "errno", None) or 0, ""))
    except Exception as exc:  # TLS errors and anything a broken server provokes
        return ProbeResult(False, f"{type(exc).__name__}: {exc}")


async def _probe(probe: ProbeConfig, endpoint: Endpoint, ssl_context, server_hostname) -> ProbeResult:
    port = probe.port or endpoint.port
    kwargs = {}
    if ssl_context is not None:
        kwargs = {"ssl": ssl_context, "server_hostname": server_hostname or endpoint.host}
    reader, writer = await asyncio.open_connection(endpoint.host, port, **kwargs)
    try:
        host = probe.host or (f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host)
        if probe.host == "" and port not in (80, 443):
            host = f"{host}:{port}"
        if probe.type == "websocket":
            return await _websocket_probe(probe, reader, writer, host)
        writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fastgw-probe\r\n"
                     f"Accept: */*\r\nConnection: close\r\n\r\n".encode())
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
            if response.head_done and len(response.body) >= MAX_BODY:
                break
        if not response.head_done:
            return ProbeResult(False, "no response")
        status = parser.get_status_code()
        if not any(lo <= status <= hi for lo, hi in probe.match_status):
            return ProbeResult(False, f"status {status} not in {_ranges(probe)}", status)
        if probe.match_body and probe.match_body.encode() not in response.body:
            return ProbeResult(False, f"body does not contain {probe.match_body!r}", status)
        return ProbeResult(True, f"status {status}", status)
    finally:
        writer.close()


async def _websocket_probe(probe: ProbeConfig, reader, writer, host: str) -> ProbeResult:
    key = base64.b64encode(os.urandom(16))
    writer.write(f"GET {probe.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fastgw-probe\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n".encode())
    response = _Response()
    parser = httptools.HttpResponseParser(response)
    rest = b""
    while not response.head_done:
        data = await reader.read(65536)
        if not data:
            return ProbeResult(False, "connection closed during the handshake")
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            rest = data[exc.args[0]:]
            break
    status = parser.get_status_code()
    if status != 101:
        return ProbeResult(False, f"status {status}, expected 101 Switching Protocols", status)
    if response.headers.get(b"sec-websocket-accept", b"").strip() != accept_key(key):
        return ProbeResult(False, "wrong Sec-WebSocket-Accept", status)
    # Close 1000, masked as a client must (RFC 6455 section 5.3), then wait for the server's;
    # a message the server sent first is skipped by the scanner.
    writer.write(build_close(1000, "probe", mask=True))
    scanner = FrameScanner(masked=False)
    buf = rest
    while True:
        try:
            buf = buf[scanner.scan(buf):]
        except FrameError as exc:
            return ProbeResult(False, f"invalid frame from the server: {exc.reason}", status)
        if scanner.closed:
            return ProbeResult(True, "websocket handshake and close", status)
        data = await reader.read(65536)
        if not data:
            return ProbeResult(False, "connection closed without a Close frame", status)
        buf += data


def _ranges(probe: ProbeConfig) -> str:
    return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in probe.match_status)


class HealthChecker:
    """Runs one probe loop per server of each backend and applies the results to the endpoints
    (backends.Endpoint.probed: the state transitions are there)."""

    def __init__(self, services: ProbeServices) -> None:
        self.services = services
        self.tasks: dict[Endpoint, asyncio.Task] = {}

    def start(self, backends: Iterable[Backend]) -> None:
        loop = asyncio.get_running_loop()
        for backend in backends:
            for endpoint in backend.endpoints:
                if endpoint not in self.tasks:
                    self.tasks[endpoint] = loop.create_task(self._loop(endpoint))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    def restart(self, backends: Iterable[Backend]) -> None:
        """A reload: every probe loop again, with each backend's probe as configured now."""
        self.stop()
        self.start(backends)

    async def _loop(self, endpoint: Endpoint) -> None:
        probe = endpoint.backend.probe
        # Spread the first probes of many servers over a moment instead of one burst.
        await asyncio.sleep(random.uniform(0, min(0.2, probe.interval / 10)))
        while True:
            started = time.monotonic()
            ssl_context, sni = self.services.probe_tls(endpoint.backend, probe)
            result = await run_probe(probe, endpoint, ssl_context, sni)
            if result.shortage:  # the gateway's own shortage is not the server's (DESIGN.md 4)
                self.services.gateway_shortage(result.shortage)
            else:
                self.services.probe_done(endpoint, result.ok)
                endpoint.probed(result.ok, result.reason, time.time())
            await asyncio.sleep(max(0.0, probe.interval - (time.monotonic() - started)))


def backend_health(servers: Iterable[tuple[Backend, list[Endpoint]]]) -> dict:
    """The admin listener's /backend-health document: each backend with its servers (those
    draining out of it included), their state, counters and last probe."""
    pools = []
    for backend, endpoints in servers:
        pools.append({
            "pool": backend.pool.name,
            "settings": backend.settings.name,
            "load_balancing": backend.pool.load_balancing,
            "healthy": sum(1 for ep in backend.endpoints if ep.state == HEALTHY),
            "servers": [{
                "address": ep.name,
                "state": str(ep.state),
                "active": ep.active,
                "requests": ep.requests,
                "last_probe": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ep.last_probe))
                               if ep.last_probe else None),
                "last_result": ep.last_result,
                "reason": ep.last_reason,
                "consecutive_failures": ep.consecutive_failures,
            } for ep in endpoints],
        })
    return {"pools": pools}
