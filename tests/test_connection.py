"""The client connection and its exchanges: regressions of the connection layer's contract.

- A refused upgrade request behind a pipelined GET never puts the connection in UPGRADING: the
  GET gets its 200, the upgrade its refusal, then the connection closes cleanly, whatever bytes
  follow (before the exchange contract, the next read called `client_data` on a LocalAnswer and
  an AttributeError reached the event loop, losing the 200).
- Every handshake the gateway refuses is counted in fastgw_websocket_upgrades by outcome.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from support import AiohttpBackend, GatewayThread, free_port, gateway_toml, parse_responses

GET = b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"
NO_KEY = (b"GET /ws HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Version: 13\r\n\r\n")
KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
BAD_VERSION = NO_KEY.replace(b"13", b"8").replace(b"\r\n\r\n", b"\r\n" + KEY + b"\r\n")
VALID = NO_KEY.replace(b"\r\n\r\n", b"\r\n" + KEY + b"\r\n")


@pytest.fixture
def backend():
    b = AiohttpBackend("b1")
    yield b
    b.stop()


def loop_errors(gw: GatewayThread) -> list:
    """Record what reaches the gateway loop's exception handler from now on."""
    errors: list = []
    gw.lt.call_soon(gw.lt.loop.set_exception_handler, lambda loop, context: errors.append(context))
    time.sleep(0.05)
    return errors


def talk(port: int, *parts: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send each part (a pause between them), read until the gateway closes: (bytes, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        for part in parts:
            s.sendall(part)
            time.sleep(0.1)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return received, False
            if not chunk:
                return received, True
            received += chunk
        return received, False


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-later"])
def test_pipelined_get_then_refused_upgrade_then_a_byte(backend, gateway_for, split):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    errors = loop_errors(gw)
    parts = (GET + NO_KEY, b"x") if split else (GET + NO_KEY + b"x",)
    received, closed = talk(gw.port, *parts)
    statuses = [status for status, _, _ in parse_responses(received)]
    assert statuses == [200, 400], received
    assert closed  # a clean close (FIN), not a reset
    assert errors == []
    deadline = time.monotonic() + 2
    while gw.gateway.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not gw.gateway.connections  # the gateway let go of it too


def test_refused_upgrade_alone_closes_after_its_answer(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    errors = loop_errors(gw)
    received, closed = talk(gw.port, NO_KEY + b"\x81\x85garbage")
    [(status, headers, _)] = parse_responses(received)
    assert status == 400 and headers["connection"] == ["close"]
    assert closed and errors == []


def upgrade_counts(gw: GatewayThread) -> dict[str, float]:
    async def scrape():
        return gw.gateway.render_metrics()
    _, _, text = gw.lt.call(scrape())
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        rb'fastgw_websocket_upgrades_total\{outcome="([^"]+)"\} (\S+)', text)}


def test_refused_handshakes_are_counted_by_outcome(backend):
    port = free_port()
    # Host-named listener: a handshake for another host matches no rule (404).
    toml = gateway_toml(port, [f"127.0.0.1:{backend.port}"]).replace(
        'bind = "127.0.0.1"', 'bind = "127.0.0.1"\nhost_names = ["gw"]')
    gw = GatewayThread(toml)
    try:
        for request in (NO_KEY, BAD_VERSION, VALID.replace(b"Host: gw", b"Host: other")):
            talk(port, request)
        counts = upgrade_counts(gw)
        assert counts == {b"4xx": 3.0}, counts
    finally:
        gw.stop()


def test_handshake_to_a_dead_backend_is_counted_5xx(gateway_for):
    gw = gateway_for([f"127.0.0.1:{free_port()}"])  # nothing listens there
    received, _ = talk(gw.port, VALID)
    assert parse_responses(received)[0][0] == 502
    assert upgrade_counts(gw) == {b"5xx": 1.0}
