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
import struct
import time
from dataclasses import dataclass

import httptools

from fastgw import log
from fastgw.backends import DRAINING, HEALTHY, UNHEALTHY, Backend, Endpoint
from fastgw.config import ProbeConfig
from fastgw.handshake import accept_key

MAX_BODY = 64 * 1024  # match_body looks at most this far into a probe response


def default_probe(backend: Backend) -> ProbeConfig:
    return ProbeConfig(name=f"default:{backend.pool.name}:{backend.settings.name}",
                       protocol=backend.settings.protocol)


def probe_for(backend: Backend, probes: dict[str, ProbeConfig]) -> ProbeConfig:
    name = backend.settings.probe
    return probes[name] if name else default_probe(backend)


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    reason: str
    status: int | None = None


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
        return ProbeResult(False, f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}")
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
    # Close 1000, masked as a client must (RFC 6455 section 5.3), then wait for the server's.
    mask = os.urandom(4)
    payload = struct.pack("!H", 1000) + b"probe"
    writer.write(bytes([0x88, 0x80 | len(payload)]) + mask
                 + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    buf = rest
    while True:
        frame = _next_frame(buf)
        if frame is None:
            data = await reader.read(65536)
            if not data:
                return ProbeResult(False, "connection closed without a Close frame", status)
            buf += data
            continue
        opcode, used = frame
        if opcode == 0x8:
            return ProbeResult(True, "websocket handshake and close", status)
        buf = buf[used:]  # a message the server sent first: skip it


def _next_frame(buf: bytes) -> tuple[int, int] | None:
    """(opcode, frame length) of the first complete frame in buf, or None."""
    if len(buf) < 2:
        return None
    length, pos = buf[1] & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, pos = struct.unpack_from("!H", buf, 2)[0], 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, pos = struct.unpack_from("!Q", buf, 2)[0], 10
    if buf[1] & 0x80:
        pos += 4
    if len(buf) < pos + length:
        return None
    return buf[0] & 0x0F, pos + length


def _ranges(probe: ProbeConfig) -> str:
    return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in probe.match_status)


class HealthChecker:
    """Runs the probe loops of a gateway and applies their results to endpoint states."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.tasks: dict[Endpoint, asyncio.Task] = {}
        self.results = {"ok": 0, "fail": 0}

    def start(self) -> None:
        probes = {p.name: p for p in self.gateway.config.probes}
        for backend in self.gateway.backends.values():
            probe = probe_for(backend, probes)
            for endpoint in backend.endpoints:
                if endpoint not in self.tasks:
                    self.tasks[endpoint] = asyncio.get_running_loop().create_task(
                        self._loop(probe, endpoint))

    def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()

    def restart(self) -> None:
        self.stop()
        self.start()

    async def _loop(self, probe: ProbeConfig, endpoint: Endpoint) -> None:
        # Spread the first probes of many servers over a moment instead of one burst.
        await asyncio.sleep(random.uniform(0, min(0.2, probe.interval / 10)))
        while True:
            started = time.monotonic()
            ssl_context, sni = self.gateway.probe_tls(endpoint.backend, probe)
            result = await run_probe(probe, endpoint, ssl_context, sni)
            self.record(endpoint, probe, result)
            await asyncio.sleep(max(0.0, probe.interval - (time.monotonic() - started)))

    def record(self, endpoint: Endpoint, probe: ProbeConfig, result: ProbeResult) -> None:
        endpoint.last_probe = time.time()
        endpoint.last_result = "ok" if result.ok else "fail"
        self.results[endpoint.last_result] += 1
        self.gateway.count_probe(endpoint, result.ok)
        if endpoint.state == DRAINING:
            return
        if result.ok:
            endpoint.consecutive_failures = 0
            endpoint.last_reason = None
            if endpoint.state != HEALTHY:
                set_state(endpoint, HEALTHY, result.reason)
        else:
            endpoint.consecutive_failures += 1
            endpoint.last_reason = result.reason
            if endpoint.state == HEALTHY and endpoint.consecutive_failures >= probe.unhealthy_threshold:
                set_state(endpoint, UNHEALTHY, result.reason)


def set_state(endpoint: Endpoint, state: str, reason: str) -> None:
    old = endpoint.state
    endpoint.state = state
    if state != HEALTHY:
        endpoint.close_idle()  # no new requests: idle keep-alive connections are of no use
    level = log.WARNING if state == UNHEALTHY else log.INFO
    log.event(level, "server_state", pool=endpoint.backend.pool.name,
              settings=endpoint.backend.settings.name, server=endpoint.name, state=state,
              previous=old, reason=reason)
