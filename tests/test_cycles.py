"""A finished request, connection or WebSocket session leaves no reference cycle behind.

Reference counting frees such objects the moment they are done; cycles wait for the cyclic
garbage collector, which then walks them (before relay.WebSocketSession._untie and the parsers'
release, every handshake's ~60 objects were garbage cycles and the collector took a tenth of the
handshake benchmark's CPU). The gateway runs in this process (GatewayThread), so the collector
here sees its garbage: with automatic collection off during the traffic, `gc.collect()` with
DEBUG_SAVEALL lists every object that only the collector could have freed.
"""

from __future__ import annotations

import asyncio
import gc
import time

import aiohttp
import pytest
from websockets.asyncio.client import connect

from support import AiohttpBackend, WsBackend

FASTGW_TYPES = {"ClientConnection", "HttpExchange", "WebSocketExchange", "UpstreamConnection",
                "WebSocketSession", "Pump", "FrameScanner", "RequestHead", "ResponseHead",
                "LocalAnswer", "Offer", "Agreement", "HttpRequestParser", "HttpResponseParser"}


@pytest.fixture
def backends():
    http, ws = AiohttpBackend("b"), WsBackend()
    yield http, ws
    http.stop()
    ws.stop()


def collected_garbage_of_ours() -> dict[str, int]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found: dict[str, int] = {}
        for obj in gc.garbage:
            name = type(obj).__name__
            if name in FASTGW_TYPES:
                found[name] = found.get(name, 0) + 1
        return found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_no_reference_cycles_per_request_connection_or_session(backends, gateway_for):
    http, ws = backends
    gw_http = gateway_for([f"127.0.0.1:{http.port}"])
    gw_ws = gateway_for([f"127.0.0.1:{ws.port}"])

    async def traffic():
        for _ in range(3):  # connections opened and closed, several requests each
            async with aiohttp.ClientSession() as session:
                for i in range(5):
                    async with session.get(f"http://127.0.0.1:{gw_http.port}/hello?i={i}") as r:
                        assert r.status == 200
                        await r.read()
        for i in range(10):  # sessions opened, used and closed
            async with connect(f"ws://127.0.0.1:{gw_ws.port}/echo") as client:
                await client.send(f"m{i}")
                assert await client.recv() == f"m{i}"

    gc.collect()
    gc.disable()
    try:
        asyncio.run(asyncio.wait_for(traffic(), 30))
        deadline = time.monotonic() + 5  # let the gateway see both legs of each session close
        while gw_ws.gateway.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert collected_garbage_of_ours() == {}
    finally:
        gc.enable()
