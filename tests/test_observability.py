"""Metrics and access logs agree with what real clients did."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import aiohttp
from websockets.asyncio.client import connect

from support import AiohttpBackend, GatewayThread, WsBackend, free_port, gateway_toml


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = float(value)
    return values


def delta(after, before, name):
    return after.get(name, 0.0) - before.get(name, 0.0)


def read_log(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = [json.loads(x) for x in open(path).read().splitlines() if x.strip()]
        except FileNotFoundError:
            lines = []
        if len(lines) >= n:
            return lines
        time.sleep(0.05)
    return lines


def test_metrics_and_access_log_follow_real_traffic(tmp_path):
    backend = AiohttpBackend("b")
    wsb = WsBackend()
    port, admin = free_port(), free_port()
    log_path = tmp_path / "access.log"
    text = gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                        gateway_extra=f'admin = "127.0.0.1:{admin}"\naccess_log = "{log_path}"')
    text += f"""
[[backend_pools]]
name = "ws"
servers = ["127.0.0.1:{wsb.port}"]

[[rules]]
name = "ws-rule"
type = "path_based"
listener = "web"
priority = 1
  [[rules.paths]]
  paths = ["/echo", "/close4001"]
  backend_pool = "ws"
  backend_settings = "settings"
"""
    gw = GatewayThread(text)
    try:
        before = scrape(admin)

        async def traffic():
            async with aiohttp.ClientSession() as s:
                for _ in range(5):
                    async with s.get(f"http://127.0.0.1:{port}/ok") as r:
                        await r.read()
                async with s.get(f"http://127.0.0.1:{port}/status/503") as r:
                    await r.read()
                async with s.get(f"http://127.0.0.1:{port}/x", headers={"X-Request-Id": "abc-123"}) as r:
                    await r.read()
            async with connect(f"ws://127.0.0.1:{port}/echo", proxy=None, compression=None) as ws:
                await ws.send("a" * 100)
                await ws.recv()
                await ws.close(1000, "done")
            async with connect(f"ws://127.0.0.1:{port}/close4001", proxy=None, compression=None) as ws:
                await ws.send("x")
                await ws.recv()
                try:
                    await ws.recv()
                except Exception:
                    pass
        asyncio.run(asyncio.wait_for(traffic(), 20))
        time.sleep(0.3)
        after = scrape(admin)
        req = 'fastgw_http_requests_total{code_class="%s",listener="web",pool="%s",rule="%s"}'
        assert delta(after, before, req % ("2xx", "pool", "rule")) == 6
        assert delta(after, before, req % ("5xx", "pool", "rule")) == 1
        assert delta(after, before, req % ("1xx", "ws", "ws-rule")) == 2
        assert delta(after, before, 'fastgw_websocket_upgrades_total{outcome="101"}') == 2
        assert delta(after, before, 'fastgw_websocket_sessions_total{pool="ws",rule="ws-rule"}') == 2
        assert delta(after, before, 'fastgw_websocket_closes_total{code="1000",side="client"}') == 1
        assert delta(after, before, 'fastgw_websocket_closes_total{code="4000-4999",side="backend"}') == 1
        # Client to backend: 2 data frames (100 B + 1 B payload, masked) and 2 close frames.
        assert delta(after, before, 'fastgw_websocket_frames_total{direction="client_to_backend"}') == 4
        c2b = delta(after, before, 'fastgw_websocket_bytes_total{direction="client_to_backend"}')
        assert c2b == (2 + 4 + 100) + (2 + 4 + 1) + (2 + 4 + 6) + (2 + 4 + 8)
        assert after['fastgw_backend_servers{pool="pool",settings="settings",state="healthy"}'] == 1
        assert after["fastgw_websocket_sessions_open"] == 0
        assert delta(after, before, 'fastgw_upstream_response_seconds_count{pool="pool"}') == 7
        assert not any(re.search(r'127\.0\.0\.1|/ok', k) for k in after)  # no unbounded labels

        lines = read_log(log_path, 11)
        requests = [x for x in lines if x["type"] == "request"]
        assert len(requests) == 7
        first = requests[0]
        for field in ("clientIp", "clientPort", "httpMethod", "requestUri", "httpStatus", "httpVersion",
                      "receivedBytes", "sentBytes", "timeTaken", "host", "originalHost", "listenerName",
                      "ruleName", "backendPoolName", "backendSettingName", "serverRouted", "serverStatus",
                      "serverResponseLatency", "transactionId"):
            assert field in first, field
        assert first["httpStatus"] == 200 and first["requestUri"] == "/ok"
        assert first["serverRouted"] == f"127.0.0.1:{backend.port}"
        assert first["sentBytes"] > 0 and first["receivedBytes"] > 0
        # The transactionId is what the backend saw as X-Request-Id.
        seen_ids = [{k.lower(): v for k, v in r["headers"].items()}.get("x-request-id")
                    for r in backend.requests]
        assert first["transactionId"] == seen_ids[0]
        assert requests[6]["transactionId"] == "abc-123" and seen_ids[6] == "abc-123"
        handshakes = [x for x in lines if x["type"] == "websocket"]
        assert [h["httpStatus"] for h in handshakes] == [101, 101]
        ends = [x for x in lines if x["type"] == "session-end"]
        assert sorted((e["closeCode"], e["closedBy"]) for e in ends) == [(1000, "client"), (4001, "backend")]
        assert all(e["duration"] >= 0 and e["clientFrames"] >= 2 for e in ends)
    finally:
        gw.stop()
        backend.stop()
        wsb.stop()
