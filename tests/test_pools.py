"""Health probes, load balancing, cookie affinity, connection draining and reload, with real
backends that the tests stop, break, restart and hang."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
import urllib.request

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from fastgw import config as config_mod

from support import AiohttpBackend, GatewayThread, RawBackend, WsBackend, free_port, start_cli, wait_port


def toml(port, servers, *, probe="", settings="", pool="", admin_port=None, gateway=""):
    servers_toml = ", ".join(f'"127.0.0.1:{p}"' for p in servers)
    admin = f'admin = "127.0.0.1:{admin_port}"' if admin_port else ""
    return f"""
[gateway]
{admin}
{gateway}

[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "pool"
servers = [{servers_toml}]
{pool}

[[backend_settings]]
name = "settings"
port = 80
request_timeout = 5
{settings}

{probe}

[[rules]]
name = "rule"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"
"""


FAST_PROBE = """
[[probes]]
name = "fast"
path = "{path}"
interval = 0.2
timeout = {timeout}
unhealthy_threshold = 2
{extra}
"""


def fast(path="/", extra="", timeout=1):
    return FAST_PROBE.format(path=path, extra=extra, timeout=timeout), 'probe = "fast"'


@pytest.fixture
def two():
    a, b = AiohttpBackend("a"), AiohttpBackend("b")
    yield a, b
    a.stop()
    b.stop()


def get(url, headers=None, cookies=None):
    async def go():
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            async with s.get(url, headers=headers or {}) as r:
                return r.status, r.headers, await r.read()
    return asyncio.run(go())


def server_of(url, **kw):
    status, headers, body = get(url, **kw)
    assert status == 200, (status, body)
    return json.loads(body)["server"]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def endpoint(gw, i):
    return gw.gateway.backends[("pool", "settings")].endpoints[i]


def admin_json(port, path="/backend-health"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, json.loads(r.read()) if path != "/healthz" else r.read()


# -- probes --------------------------------------------------------------------------------------


def test_default_probe_is_get_root_every_30s(two):
    a, b = two
    port = free_port()
    gw = GatewayThread(toml(port, [a.port, b.port]))
    try:
        # The first probe runs at once, with the cloud gateway's defaults.
        assert wait_for(lambda: a.probes >= 1 and b.probes >= 1, 3)
        probe = config_mod.ProbeConfig(name="x")
        assert (probe.interval, probe.timeout, probe.unhealthy_threshold, probe.match_status) == \
            (30.0, 30.0, 3, ((200, 399),))
        assert endpoint(gw, 0).last_result == "ok"
    finally:
        gw.stop()


def test_unhealthy_server_leaves_and_one_success_brings_it_back(two):
    a, b = two
    port, admin_port = free_port(), free_port()
    probe, ref = fast()
    gw = GatewayThread(toml(port, [a.port, b.port], probe=probe, settings=ref, admin_port=admin_port))
    try:
        a.healthy = False
        assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")
        status, health = admin_json(admin_port)
        servers = health["pools"][0]["servers"]
        assert servers[0]["state"] == "unhealthy" and "status 500" in servers[0]["reason"]
        assert servers[1]["state"] == "healthy"
        assert {server_of(f"http://127.0.0.1:{port}/x") for _ in range(6)} == {"b"}
        a.healthy = True
        assert wait_for(lambda: endpoint(gw, 0).state == "healthy", 3)
        assert {server_of(f"http://127.0.0.1:{port}/x") for _ in range(6)} == {"a", "b"}
    finally:
        gw.stop()


def test_match_status_and_body(two):
    a, b = two
    port = free_port()
    probe, ref = fast("/status/418", 'match_status = ["418"]')
    gw = GatewayThread(toml(port, [a.port], probe=probe, settings=ref))
    try:
        time.sleep(0.8)
        assert endpoint(gw, 0).state == "healthy"
    finally:
        gw.stop()
    probe, ref = fast("/", 'match_body = "no such text"')
    gw = GatewayThread(toml(port, [a.port], probe=probe, settings=ref))
    try:
        assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")
        assert "body does not contain" in endpoint(gw, 0).last_reason
    finally:
        gw.stop()


def test_hung_server_fails_by_timeout_and_killed_server_by_connect(two):
    a, b = two

    async def hang(reader, writer):
        await asyncio.sleep(30)
    raw = RawBackend(hang)
    port = free_port()
    probe, ref = fast("/", timeout=0.3)
    gw = GatewayThread(toml(port, [raw.port, a.port], probe=probe, settings=ref))
    try:
        assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")
        assert "timeout" in endpoint(gw, 0).last_reason
        a.stop()
        assert wait_for(lambda: endpoint(gw, 1).state == "unhealthy")
        assert "Connect" in endpoint(gw, 1).last_reason or "refused" in endpoint(gw, 1).last_reason
        # No healthy server at all: 502, and the log line names the pool.
        status, _, body = get(f"http://127.0.0.1:{port}/")
        assert status == 502
        # The killed server comes back on the same port: one success makes it healthy.
        restarted = AiohttpBackend("a2", port=a.port)
        try:
            assert wait_for(lambda: endpoint(gw, 1).state == "healthy")
            assert server_of(f"http://127.0.0.1:{port}/") == "a2"
        finally:
            restarted.stop()
    finally:
        gw.stop()
        raw.stop()


def test_websocket_probe_against_websocket_only_backend():
    wsb = WsBackend()  # answers a plain GET with 404, a handshake on /echo with 101
    port = free_port()
    try:
        probe, ref = fast("/echo")
        gw = GatewayThread(toml(port, [wsb.port], probe=probe, settings=ref))
        try:
            assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")  # an HTTP probe fails
        finally:
            gw.stop()
        probe, ref = fast("/echo", 'type = "websocket"')
        gw = GatewayThread(toml(port, [wsb.port], probe=probe, settings=ref))
        try:
            time.sleep(1.0)
            ep = endpoint(gw, 0)
            assert ep.state == "healthy" and ep.last_result == "ok"
            n = wsb.sessions
            assert n >= 3  # real upgrades
            closes = [c for c in wsb.closes if c[0] == "/echo"]
            assert closes and all(c[1] == 1000 for c in closes)  # each closed with 1000
        finally:
            gw.stop()
        probe, ref = fast("/nope", 'type = "websocket"')
        gw = GatewayThread(toml(port, [wsb.port], probe=probe, settings=ref))
        try:
            assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")
            assert "expected 101" in endpoint(gw, 0).last_reason
        finally:
            gw.stop()
    finally:
        wsb.stop()


def test_connect_failure_tries_next_server_at_once(two, caplog):
    a, b = two
    dead = free_port()
    port = free_port()
    gw = GatewayThread(toml(port, [dead, a.port]))
    try:
        caplog.set_level(logging.WARNING, logger="fastgw")
        for _ in range(4):
            assert server_of(f"http://127.0.0.1:{port}/") == "a"  # never a 502
        assert endpoint(gw, 0).failures >= 1
        failed = [r for r in caplog.records if r.getMessage() == "server_failed"]
        assert failed and failed[0].fields["pool"] == "pool"
        # Counted as failures: after unhealthy_threshold (3) the dead server is out.
        assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy", 5)
    finally:
        gw.stop()


def test_no_healthy_server_502_names_pool(two, caplog):
    a, _ = two
    port = free_port()
    probe, ref = fast()
    gw = GatewayThread(toml(port, [a.port], probe=probe, settings=ref))
    try:
        caplog.set_level(logging.WARNING, logger="fastgw")
        a.healthy = False
        assert wait_for(lambda: endpoint(gw, 0).state == "unhealthy")
        assert get(f"http://127.0.0.1:{port}/")[0] == 502
        errors = [r for r in caplog.records if r.getMessage() == "upstream_error"]
        assert errors[-1].fields["pool"] == "pool" and errors[-1].fields["status"] == 502
        assert "no healthy server" in errors[-1].fields["cause"]
    finally:
        gw.stop()


def test_session_survives_server_turning_unhealthy(two):
    a, b = two
    port = free_port()
    probe, ref = fast()
    gw = GatewayThread(toml(port, [a.port], probe=probe, settings=ref))
    try:
        async def go():
            async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                a.healthy = False
                while endpoint(gw, 0).state != "unhealthy":
                    await asyncio.sleep(0.05)
                await ws.send("after")
                return await ws.recv()
        assert asyncio.run(asyncio.wait_for(go(), 15)) == "after"
    finally:
        gw.stop()


# -- balancing and affinity ------------------------------------------------------------------------


def test_least_connections_counts_websocket_sessions(two):
    a, b = two
    port = free_port()
    gw = GatewayThread(toml(port, [a.port, b.port], pool='load_balancing = "least_connections"'))
    try:
        async def go():
            # Two long-lived sessions pinned by least-connections...
            s1 = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
            s2 = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
            s3 = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
            actives = [endpoint(gw, 0).active, endpoint(gw, 1).active]
            for s in (s1, s2, s3):
                await s.close()
            return actives
        actives = asyncio.run(asyncio.wait_for(go(), 15))
        assert sorted(actives) == [1, 2]
        # With one session open on the busier server, plain requests go to the other.
        async def busy():
            ws = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
            loaded = 0 if endpoint(gw, 0).active else 1
            servers = set()
            for _ in range(4):
                async with aiohttp.ClientSession() as s:
                    async with s.get(f"http://127.0.0.1:{port}/") as r:
                        servers.add((await r.json())["server"])
            await ws.close()
            return loaded, servers
        loaded, servers = asyncio.run(asyncio.wait_for(busy(), 15))
        assert servers == {"b" if loaded == 0 else "a"}
    finally:
        gw.stop()


def test_cookie_affinity_http_and_websocket(two):
    a, b = two
    port = free_port()
    probe, ref = fast()
    gw = GatewayThread(toml(port, [a.port, b.port], probe=probe,
                            settings=ref + "\ncookie_affinity = true"))
    try:
        status, headers, body = get(f"http://127.0.0.1:{port}/")
        cookies = headers.getall("Set-Cookie")
        first = json.loads(body)["server"]
        value = cookies[0].split(";")[0].split("=", 1)[1]
        assert cookies[0] == f"ApplicationGatewayAffinity={value}; Path=/"
        assert cookies[1] == f"ApplicationGatewayAffinityCORS={value}; Path=/; SameSite=None; Secure"
        assert f"{a.port}" not in value and "127.0.0.1" not in value  # no address revealed
        for _ in range(5):
            assert server_of(f"http://127.0.0.1:{port}/",
                             headers={"Cookie": f"ApplicationGatewayAffinity={value}"}) == first
            assert server_of(f"http://127.0.0.1:{port}/",
                             headers={"Cookie": f"x=1; ApplicationGatewayAffinityCORS={value}"}) == first

        async def handshake():
            async with connect(f"ws://127.0.0.1:{port}/headers", proxy=None,
                               additional_headers={"Cookie": f"ApplicationGatewayAffinity={value}"}) as ws:
                return ws.response.headers.get_all("Set-Cookie")
        before = (a.ws_sessions, b.ws_sessions)
        del before
        # The pinned server goes unhealthy: the next request goes elsewhere, with new cookies.
        (a if first == "a" else b).healthy = False
        idx = 0 if first == "a" else 1
        assert wait_for(lambda: endpoint(gw, idx).state == "unhealthy")
        status, headers, body = get(f"http://127.0.0.1:{port}/",
                                    headers={"Cookie": f"ApplicationGatewayAffinity={value}"})
        assert json.loads(body)["server"] != first
        new_value = headers.getall("Set-Cookie")[0].split(";")[0].split("=", 1)[1]
        assert new_value != value
    finally:
        gw.stop()


def test_affinity_cookie_on_websocket_handshake(two):
    a, b = two
    port = free_port()
    gw = GatewayThread(toml(port, [a.port, b.port], settings="cookie_affinity = true"))
    try:
        async def go():
            async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None) as ws:
                cookies = ws.response.headers.get_all("Set-Cookie")
            value = cookies[0].split(";")[0].split("=", 1)[1]
            counts = []
            for _ in range(4):
                async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None,
                                   additional_headers={"Cookie": f"ApplicationGatewayAffinity={value}"}) as ws:
                    assert ws.response.headers.get_all("Set-Cookie") == []  # already pinned
                    counts.append((a.ws_sessions, b.ws_sessions))
            return counts
        counts = asyncio.run(asyncio.wait_for(go(), 15))
        # All five sessions went to one server.
        assert counts[-1] in ((5, 0), (0, 5))
    finally:
        gw.stop()


# -- draining and reload -----------------------------------------------------------------------------


def test_reload_drains_removed_server_then_closes_its_session(two):
    a, b = two
    port = free_port()
    text = toml(port, [a.port, b.port], settings="connection_draining = 1")
    gw = GatewayThread(text)
    try:
        async def go():
            sessions = [await connect(f"ws://127.0.0.1:{port}/ws", proxy=None) for _ in range(2)]
            on_a = [s for s, n in zip(sessions, range(2)) if n == 0][0] if a.ws_sessions else None
            del on_a
            new = config_mod.loads(toml(port, [b.port], settings="connection_draining = 1"))
            t0 = time.monotonic()
            asyncio.run_coroutine_threadsafe(gw.gateway.reload(new), gw.lt.loop).result(5)
            results = []
            for s in sessions:
                try:
                    await s.send("still here")
                    results.append(await asyncio.wait_for(s.recv(), 5))
                except ConnectionClosed:
                    results.append(("closed", s.close_code))
            # Within the draining window both sessions still work...
            assert results == ["still here", "still here"]
            # ...then the one on the removed server gets 1001, the other stays.
            codes = []
            for s in sessions:
                try:
                    await asyncio.wait_for(s.recv(), 3)
                except ConnectionClosed:
                    codes.append((s.close_code, s.close_reason, round(time.monotonic() - t0, 1)))
                except asyncio.TimeoutError:
                    codes.append("open")
                    await s.close()
            return codes
        codes = asyncio.run(asyncio.wait_for(go(), 20))
        assert "open" in codes
        closed = [c for c in codes if c != "open"][0]
        assert closed[0] == 1001 and closed[1] == "server removed from the pool"
        assert 0.8 <= closed[2] <= 3
        # New traffic only goes to the remaining server.
        assert {server_of(f"http://127.0.0.1:{port}/") for _ in range(4)} == {"b"}
    finally:
        gw.stop()


def test_sighup_reload_good_and_bad_with_sessions_open(two, tmp_path):
    a, b = two
    port, admin_port = free_port(), free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(toml(port, [a.port], admin_port=admin_port))
    proc = start_cli("serve", str(cfg))
    try:
        wait_port(port, proc=proc)

        async def go():
            ws = await connect(f"ws://127.0.0.1:{port}/ws", proxy=None)
            await ws.send("1")
            assert await ws.recv() == "1"
            # A bad config is refused; the old one keeps serving.
            cfg.write_text(toml(port, [a.port, b.port]).replace("port = 80\n", "port = 0\n"))
            proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            await ws.send("2")
            assert await ws.recv() == "2"
            # A good one adds server b; the session on a (still configured) is untouched.
            cfg.write_text(toml(port, [a.port, b.port], admin_port=admin_port))
            proc.send_signal(signal.SIGHUP)
            for _ in range(50):
                await asyncio.sleep(0.1)
                _, health = admin_json(admin_port)
                if len(health["pools"][0]["servers"]) == 2:
                    break
            await ws.send("3")
            assert await ws.recv() == "3"
            await ws.close()
            return health
        health = asyncio.run(asyncio.wait_for(go(), 20))
        assert [s["state"] for s in health["pools"][0]["servers"]] == ["healthy", "healthy"]
        assert {server_of(f"http://127.0.0.1:{port}/") for _ in range(4)} == {"a", "b"}
        status, body = admin_json(admin_port, "/healthz")
        assert status == 200 and body == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    err = proc.stderr.read()
    # The problem as the JSON log line carries it (its quotes escaped).
    assert "reload_refused" in err and 'backend_settings[0] \\"settings\\".port: 0 is out' in err
    assert "Traceback" not in err


