"""WebSocket proxying end to end: real clients (websockets, aiohttp, raw sockets) through the
gateway to real backends; every gateway-ended case asserts the exact close code each side saw."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fastgw import frames

from support import (
    AiohttpBackend,
    GatewayThread,
    RawBackend,
    WsBackend,
    frame,
    free_port,
    read_close,
    read_request_head,
    start_cli,
    wait_port,
    ws_gateway_toml,
    ws_raw_handshake,
)


@pytest.fixture
def wsb():
    b = WsBackend()
    yield b
    b.stop()


@pytest.fixture
def gw_factory(gateway_for):
    """A gateway in front of one WebSocket backend port."""
    return lambda backend_port, **kw: gateway_for([f"127.0.0.1:{backend_port}"], **kw)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def ws_url(gw, path="/echo"):
    return f"ws://127.0.0.1:{gw.port}{path}"


# -- relaying with real clients ----------------------------------------------------------------


def test_websockets_client_echo_text_binary_large_fragmented_ping(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw), proxy=None, max_size=None, compression=None) as ws:
            await ws.send("héllo")
            assert await ws.recv() == "héllo"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = os.urandom(1 << 20)
            await ws.send(big)
            assert await ws.recv() == big
            await ws.send(["frag", "mented", " text"])  # one message in three frames
            assert await ws.recv() == "fragmented text"
            latency = await (await ws.ping(b"p"))
            assert latency >= 0
            await ws.close(1000, "bye now")
            return ws.close_code, ws.close_reason
    assert run(go()) == (1000, "bye now")
    assert wsb.wait_closes(1)[0] == ("/echo", 1000, "bye now")


def test_permessage_deflate_passes(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw), proxy=None, compression="deflate") as ws:
            assert "permessage-deflate" in (ws.response.headers.get("Sec-WebSocket-Extensions") or "")
            text = "compress me " * 1000
            await ws.send(text)
            assert await ws.recv() == text
    run(go())


def test_aiohttp_client_subprotocol_and_echo(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(ws_url(gw), protocols=("superchat", "chat")) as ws:
                assert ws.protocol == "superchat" or ws.protocol == "chat"
                await ws.send_str("hi")
                assert (await ws.receive()).data == "hi"
                await ws.send_bytes(b"bin")
                assert (await ws.receive()).data == b"bin"
                await ws.close(code=1000, message=b"done")
                return ws.close_code
    assert run(go()) == 1000


def test_aiohttp_backend(gw_factory):
    backend = AiohttpBackend("aio")
    try:
        gw = gw_factory(backend.port)

        async def go():
            async with connect(ws_url(gw, "/ws"), proxy=None) as ws:
                await ws.send("to aiohttp")
                return await ws.recv()
        assert run(go()) == "to aiohttp"
    finally:
        backend.stop()


def test_backend_greeting_right_after_101(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw, "/greet"), proxy=None) as ws:
            assert await ws.recv() == "hello"
            await ws.send("x")
            assert await ws.recv() == "x"
    run(go())


def test_forwarding_headers_on_upgrade(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw, "/headers"), proxy=None, origin="https://example.com",
                           subprotocols=["chat"]) as ws:
            return json.loads(await ws.recv()), ws.subprotocol
    headers, proto = run(go())
    names = {k.lower(): v for k, v in headers}
    assert proto == "chat"
    assert names["origin"] == "https://example.com"
    assert names["sec-websocket-protocol"] == "chat"
    assert names["upgrade"].lower() == "websocket"
    assert names["x-forwarded-for"] == "127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-original-host"] == f"127.0.0.1:{gw.port}"


def test_backend_close_code_reaches_client(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw, "/close4001"), proxy=None) as ws:
            await ws.send("one")
            assert await ws.recv() == "one"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason
    assert run(go()) == (4001, "custom")


# -- the gateway ends sessions with real close codes ---------------------------------------------


def test_idle_timeout_closes_both_legs_with_1001(wsb, gw_factory):
    gw = gw_factory(wsb.port, request_timeout=1)

    async def go():
        async with connect(ws_url(gw), proxy=None, ping_interval=None) as ws:
            await ws.send("x")
            await ws.recv()
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason, time.monotonic() - t0
    code, reason, waited = run(go())
    assert code == 1001 and reason == "idle timeout"
    assert 0.8 < waited < 3
    assert wsb.wait_closes(1)[0][1] == 1001


def test_backend_lost_gives_client_1014(wsb, gw_factory):
    gw = gw_factory(wsb.port)

    async def go():
        async with connect(ws_url(gw, "/drop"), proxy=None) as ws:
            await ws.send("boom")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code
    assert run(go()) == 1014


def test_client_lost_gives_backend_1001(wsb, gw_factory):
    gw = gw_factory(wsb.port)
    s, head, rest = ws_raw_handshake(gw.port, "/echo")
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(frame(1, b"ping me"))
    s.close()  # no Close frame: the TCP connection just goes
    assert wsb.wait_closes(1)[0][:2] == ("/echo", 1001)


def test_client_protocol_violation(wsb, gw_factory):
    gw = gw_factory(wsb.port)
    s, head, rest = ws_raw_handshake(gw.port, "/echo")
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(frame(1, b"fine") + frame(1, b"unmasked", mask=None))
    code, reason, seen = read_close(s, rest)
    s.close()
    assert code == 1002
    assert wsb.wait_closes(1)[0][1] == 1001
    assert wsb.received == ["fine"]  # the valid frame before the bad one was relayed


@pytest.mark.parametrize("bad, code", [
    (frame(3, b""), 1002),  # reserved opcode
    (frame(1, b"x", rsv=4), 1002),  # RSV1 without permessage-deflate
    (frame(9, b"x" * 126), 1002),  # control frame too long
    (frame(0, b"cont"), 1002),  # continuation with no message open
    (frame(8, b"\x03\xe8\xff\xfe"), 1007),  # close reason not UTF-8
    (frame(8, b"\x03\xed"), 1002),  # close code 1005 may not be sent
])
def test_client_violations_get_engine_codes(wsb, gw_factory, bad, code):
    gw = gw_factory(wsb.port)
    s, head, rest = ws_raw_handshake(gw.port, "/echo")
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(bad)
    assert read_close(s, rest)[0] == code
    assert wsb.wait_closes(1)[0][1] == 1001
    s.close()


def test_message_size_limit_1009_to_sender_1001_to_peer(wsb, gw_factory):
    gw = gw_factory(wsb.port, extra_settings="max_message_size = 1000")

    async def go():
        async with connect(ws_url(gw), proxy=None, compression=None) as ws:
            await ws.send("a" * 1000)
            assert len(await ws.recv()) == 1000
            await ws.send("a" * 1001)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code
    assert run(go()) == 1009
    assert wsb.wait_closes(1)[0][1] == 1001


def test_backend_not_answering_close_is_cut_after_close_timeout(wsb):
    port = free_port()
    gw = GatewayThread(ws_gateway_toml(port, wsb.port, gateway_extra="close_timeout = 0.5"))
    try:
        s, head, rest = ws_raw_handshake(port, "/silent")
        assert head.startswith(b"HTTP/1.1 101")
        s.sendall(frame(8, b"\x03\xe8bye"))
        t0 = time.monotonic()
        s.settimeout(5)
        data = rest
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert time.monotonic() - t0 < 3  # bounded: the gateway did not wait forever
        s.close()
    finally:
        gw.stop()


def test_graceful_shutdown_sends_1001(wsb, tmp_path):
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(ws_gateway_toml(port, wsb.port))
    proc = start_cli("serve", str(cfg))
    try:
        wait_port(port, proc=proc)

        async def go():
            async with connect(f"ws://127.0.0.1:{port}/echo", proxy=None) as ws:
                await ws.send("x")
                await ws.recv()
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason
        assert run(go()) == (1001, "gateway shutting down")
        assert proc.wait(10) == 0
        assert wsb.wait_closes(1)[0][1] == 1001
    finally:
        if proc.poll() is None:
            proc.kill()


# -- the handshake ----------------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\n\r\n", 400),
    (b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", 426),
])
def test_bad_handshakes_never_reach_backend(wsb, gw_factory, request_bytes, status):
    from support import raw_exchange
    gw = gw_factory(wsb.port)
    data = raw_exchange(gw.port, request_bytes)
    assert data.startswith(f"HTTP/1.1 {status}".encode()), data
    if status == 426:
        assert b"Sec-WebSocket-Version: 13" in data
    assert wsb.sessions == 0


def test_non_101_answer_is_relayed(wsb, gw_factory):
    gw = gw_factory(wsb.port)
    s, head, rest = ws_raw_handshake(gw.port, "/nope")
    assert head.startswith(b"HTTP/1.1 404")
    s.close()


def test_wrong_accept_key_is_502():
    async def liar(reader, writer):
        await read_request_head(reader)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmcga2V5IQ==\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
    raw = RawBackend(liar)
    port = free_port()
    gw = GatewayThread(ws_gateway_toml(port, raw.port))
    try:
        s, head, _ = ws_raw_handshake(port, "/x")
        assert head.startswith(b"HTTP/1.1 502")
        s.close()
    finally:
        gw.stop()
        raw.stop()


def test_handshake_to_dead_backend_is_502_and_hung_is_504():
    port = free_port()
    gw = GatewayThread(ws_gateway_toml(port, free_port()))
    try:
        s, head, _ = ws_raw_handshake(port, "/x")
        assert head.startswith(b"HTTP/1.1 502")
        s.close()
    finally:
        gw.stop()

    async def hang(reader, writer):
        await read_request_head(reader)
        await asyncio.sleep(10)
    raw = RawBackend(hang)
    gw = GatewayThread(ws_gateway_toml(port, raw.port, request_timeout=1))
    try:
        s, head, _ = ws_raw_handshake(port, "/x")
        assert head.startswith(b"HTTP/1.1 504")
        s.close()
    finally:
        gw.stop()
        raw.stop()


# -- flow control ------------------------------------------------------------------------------


def test_slow_reader_bounded_memory_and_uncorrupted(wsb, gw_factory):
    """A client that sends much faster than the backend reads: the gateway pauses the client
    instead of buffering, and every byte arrives intact."""
    gw = gw_factory(wsb.port)
    wsb.slow_delay = 0.02
    sizes = []

    async def go():
        async with connect(ws_url(gw, "/slow"), proxy=None, compression=None, max_size=None,
                           write_limit=1 << 20) as ws:
            messages = [os.urandom(256 * 1024) + bytes([i]) for i in range(40)]
            send = asyncio.ensure_future(asyncio.gather(*(ws.send(m) for m in messages)))
            for _ in range(40):
                await ws.recv()
                conns = list(gw.gateway.connections)
                if conns and conns[0].session is not None:
                    session = conns[0].session
                    sizes.append(session.transports[1].get_write_buffer_size())
            await send
            return messages
    messages = run(go())
    assert wsb.received == messages  # nothing lost, reordered or corrupted
    # The gateway's queue towards the slow backend stays bounded (uvloop's high-water mark plus
    # at most one read), far below the 10 MiB the client pushed.
    assert max(sizes) < 2 * 1024 * 1024, sizes


def test_session_end_is_logged(wsb, gw_factory, caplog):
    """The event log has the session-end line at debug level (the access log has it always)."""
    import logging
    gw = gw_factory(wsb.port)
    caplog.set_level(logging.DEBUG, logger="fastgw")

    async def go():
        async with connect(ws_url(gw), proxy=None, compression=None) as ws:
            await ws.send("abc")
            await ws.recv()
            await ws.close(1000, "ok")
    run(go())
    deadline = time.monotonic() + 5
    record = None
    while time.monotonic() < deadline and record is None:
        record = next((r for r in caplog.records if r.getMessage() == "websocket_session_end"), None)
        time.sleep(0.02)
    assert record is not None
    f = record.fields
    assert f["close_code"] == 1000 and f["closed_by"] == "client" and f["rule"] == "rule"
    assert f["client_frames"] == 2 and f["backend_frames"] == 2
    assert f["duration"] >= 0


def test_frames_engine_is_the_one_under_test():
    assert frames.IMPLEMENTATION in ("c", "py")




def test_frames_after_a_close_are_ignored(wsb, gw_factory):
    """Autobahn 7.1.x: a second Close, a ping or a message after a Close is discarded; the close
    handshake completes with the code the backend echoes."""
    gw = gw_factory(wsb.port)
    s, head, rest = ws_raw_handshake(gw.port, "/echo")
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(frame(8, b"\x03\xe8ok") + frame(1, b"late") + frame(8, b"\x03\xe8"))
    code, reason, seen = read_close(s, rest)
    s.close()
    assert code == 1000
    assert wsb.wait_closes(1)[0][1] == 1000
    assert wsb.received == []
