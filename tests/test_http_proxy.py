"""The HTTP/1.1 reverse proxy, end to end: real clients, real backends, real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import aiohttp
import pytest

from support import (
    AiohttpBackend,
    GatewayThread,
    RawBackend,
    free_port,
    gateway_toml,
    parse_responses,
    raw_exchange,
    read_request_head,
)


@pytest.fixture
def backend():
    b = AiohttpBackend("b1")
    yield b
    b.stop()


def get(url: str, **kw):
    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.request(kw.pop("method", "GET"), url, **kw) as r:
                return r.status, dict(r.headers), await r.read()
    return asyncio.run(go())


def test_get_through_gateway(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    status, headers, body = get(f"http://127.0.0.1:{gw.port}/hello?x=1")
    assert status == 200
    data = json.loads(body)
    assert data["server"] == "b1" and data["path"] == "/hello?x=1"


def test_keepalive_both_legs(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])

    async def go():
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=conn) as s:
            for i in range(20):
                async with s.get(f"http://127.0.0.1:{gw.port}/n{i}") as r:
                    assert r.status == 200
                    await r.read()
    asyncio.run(go())
    # One client connection and one reused upstream connection: the backend saw the requests
    # arrive from a single gateway socket.
    peers = {r["headers"].get("X-Forwarded-Port") for r in backend.requests}
    assert peers == {str(gw.port)}
    ep = gw.gateway.backends[("pool", "settings")].endpoints[0]
    assert ep.requests == 20
    assert len(ep.idle) == 1 and ep.idle[0].uses == 20


def test_large_upload_and_download_streamed(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    payload = bytes(range(256)) * (4 * 4096)  # 4 MiB
    status, headers, body = get(f"http://127.0.0.1:{gw.port}/echo", method="POST", data=payload)
    assert status == 200 and body == payload
    status, headers, body = get(f"http://127.0.0.1:{gw.port}/big?size={8 << 20}")
    assert status == 200 and len(body) == 8 << 20
    assert body[:512] == bytes(range(256)) * 2


def test_chunked_upload_is_rechunked(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    req = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"X-Echo-Chunked: 1\r\nConnection: close\r\n\r\n"
           b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    (status, headers, body), = parse_responses(raw_exchange(gw.port, req))
    assert status == 200 and body == b"hello world"
    assert headers["transfer-encoding"] == ["chunked"]


def test_chunked_download(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    status, headers, body = get(f"http://127.0.0.1:{gw.port}/chunked?n=20")
    assert status == 200
    assert body == b"".join(f"chunk-{i};".encode() for i in range(20))
    assert headers.get("Transfer-Encoding") == "chunked"


def test_http10_client_gets_close_delimited_body(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    data = raw_exchange(gw.port, b"GET /chunked?n=3 HTTP/1.0\r\nHost: x\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower()
    assert body == b"chunk-0;chunk-1;chunk-2;"


def test_http_version_with_and_without_keep_alive_tokens(backend, gateway_for):
    """The request's version decides keep-alive, framing and Host rules; the gateway asks llhttp
    for it only when its keep-alive verdict leaves a doubt (downstream._version)."""
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    # HTTP/1.0 keep-alive: two pipelined requests answered on one connection, close-delimited
    # chunked bodies impossible, so the second (and last) closes it.
    data = raw_exchange(gw.port, b"GET /hello HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
                                 b"GET /chunked?n=2 HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n")
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and b"connection: keep-alive" in first.lower()
    assert b"chunk-0;chunk-1;" in rest and b"transfer-encoding" not in rest.lower()
    # HTTP/1.1 naming keep-alive: still HTTP/1.1 (a chunked body is relayed chunked).
    data = raw_exchange(gw.port, b"GET /chunked?n=2 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
                                 b"\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    (s1, h1, b1), (s2, _, _) = parse_responses(data)
    assert (s1, s2) == (200, 200) and h1["transfer-encoding"] == ["chunked"] and b1 == b"chunk-0;chunk-1;"
    # HTTP/1.0 may omit Host; HTTP/1.1 may not.
    assert raw_exchange(gw.port, b"GET /hello HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
    assert raw_exchange(gw.port, b"GET /hello HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"
                        ).startswith(b"HTTP/1.1 400")


def test_head_204_304(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    req = (b"HEAD /big?size=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /status/204 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /status/304 HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = raw_exchange(gw.port, req)
    # HEAD: the Content-Length of the GET, no body; the next response follows directly.
    assert data.startswith(b"HTTP/1.1 200")
    first_head, _, rest = data.partition(b"\r\n\r\n")
    assert b"Content-Length: 1000" in first_head
    assert rest.startswith(b"HTTP/1.1 204")
    second, _, rest = rest.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 304")
    third, _, rest = rest.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")
    assert b'"path": "/hello"' in rest


def test_pipelined_requests_answered_in_order(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    req = b"".join(f"GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(10))
    req += b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    req += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    responses = parse_responses(raw_exchange(gw.port, req))
    assert len(responses) == 12
    for i in range(10):
        assert json.loads(responses[i][2])["path"] == f"/p{i}"
    assert responses[10][2] == b"abc"
    assert json.loads(responses[11][2])["path"] == "/last"


def test_forwarding_and_hop_by_hop_headers(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    req = (b"GET /headers HTTP/1.1\r\nHost: Example.COM:8443\r\n"
           b"Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
           b"TE: trailers\r\nProxy-Authorization: Basic Zm9v\r\nX-Forwarded-For: 10.0.0.1\r\n"
           b"X-Forwarded-Proto: gopher\r\nX-Custom: kept\r\nConnection: close\r\n\r\n")
    (status, _, body), = parse_responses(raw_exchange(gw.port, req))
    assert status == 200
    headers = {}
    for k, v in json.loads(body)["headers"]:
        headers.setdefault(k.lower(), []).append(v)
    for dropped in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert dropped not in headers, dropped
    assert headers["host"] == ["Example.COM:8443"]
    assert headers["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-port"] == [str(gw.port)]
    assert headers["x-original-host"] == ["Example.COM:8443"]
    assert headers["x-custom"] == ["kept"]


def test_host_override(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"], extra_settings='host_name = "internal.example"')
    status, _, body = get(f"http://127.0.0.1:{gw.port}/headers")
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert headers["host"] == "internal.example"
    assert headers["x-original-host"] == f"127.0.0.1:{gw.port}"


def test_round_robin(gateway_for):
    b1, b2 = AiohttpBackend("one"), AiohttpBackend("two")
    try:
        gw = gateway_for([f"127.0.0.1:{b1.port}", f"127.0.0.1:{b2.port}"])
        servers = [json.loads(get(f"http://127.0.0.1:{gw.port}/x")[2])["server"] for _ in range(6)]
        assert servers.count("one") == 3 and servers.count("two") == 3
    finally:
        b1.stop()
        b2.stop()


# -- failure answers -------------------------------------------------------------------------


def test_refused_backend_is_502(gateway_for):
    gw = gateway_for([f"127.0.0.1:{free_port()}"])
    status, _, body = get(f"http://127.0.0.1:{gw.port}/")
    assert status == 502 and b"502" in body


def test_garbage_backend_is_502(gateway_for):
    async def garbage(reader, writer):
        await read_request_head(reader)
        writer.write(b"this is not HTTP at all\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)
    raw = RawBackend(garbage)
    try:
        gw = gateway_for([f"127.0.0.1:{raw.port}"])
        assert get(f"http://127.0.0.1:{gw.port}/")[0] == 502
    finally:
        raw.stop()


def test_reset_backend_is_502(gateway_for):
    async def reset(reader, writer):
        await read_request_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()
    raw = RawBackend(reset)
    try:
        gw = gateway_for([f"127.0.0.1:{raw.port}"])
        assert get(f"http://127.0.0.1:{gw.port}/")[0] == 502
    finally:
        raw.stop()


def test_hung_backend_is_504(gateway_for):
    async def hang(reader, writer):
        await read_request_head(reader)
        await asyncio.sleep(30)
    raw = RawBackend(hang)
    try:
        gw = gateway_for([f"127.0.0.1:{raw.port}"], request_timeout=1)
        t0 = time.monotonic()
        status = get(f"http://127.0.0.1:{gw.port}/")[0]
        assert status == 504
        assert 0.9 < time.monotonic() - t0 < 5
    finally:
        raw.stop()


def test_empty_pool_is_503(gateway_for):
    gw = gateway_for([])
    assert get(f"http://127.0.0.1:{gw.port}/")[0] == 503


def test_unmatched_host_is_404(backend):
    port = free_port()
    toml = gateway_toml(port, [f"127.0.0.1:{backend.port}"]).replace(
        'bind = "127.0.0.1"', 'bind = "127.0.0.1"\nhost_names = ["app.example.com"]')
    gw = GatewayThread(toml)
    try:
        assert get(f"http://127.0.0.1:{port}/", headers={"Host": "other.example.com"})[0] == 404
        assert get(f"http://127.0.0.1:{port}/", headers={"Host": "APP.example.com:99"})[0] == 200
    finally:
        gw.stop()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Many: 1234567890\r\n" * 3000 + b"\r\n", 431),
])
def test_bad_requests_refused_before_backend(backend, gateway_for, request_bytes, status):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    data = raw_exchange(gw.port, request_bytes)
    assert data.startswith(f"HTTP/1.1 {status}".encode()), data[:200]
    assert b"Connection: close" in data
    assert backend.requests == []


def test_header_timeout_408(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])  # header_timeout = 2
    t0 = time.monotonic()
    data = raw_exchange(gw.port, b"GET / HTTP/1.1\r\nHost: a\r\n", timeout=6)
    assert data.startswith(b"HTTP/1.1 408")
    assert 1.5 < time.monotonic() - t0 < 5


def test_idle_connection_closed_silently(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"], gateway_extra="keepalive_timeout = 1")
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.3)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(65536) == b""  # closed by the gateway, no 408 for an idle connection
        assert time.monotonic() - t0 < 4


def test_expect_100_continue(backend, gateway_for):
    gw = gateway_for([f"127.0.0.1:{backend.port}"])
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = s.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100")
        s.sendall(b"hello")
        data = interim
        while not data.endswith(b"hello"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
        assert data.endswith(b"\r\n\r\nhello")


def test_bytes_after_a_response_do_not_reach_the_next_request():
    """A backend that sends more than its Content-Length: the extra bytes belong to no response;
    the connection is dropped rather than pooled, and the next request gets its own answer."""
    # The answer goes by path, not by arrival order: the pool's health probe may reach the
    # backend before the first client request does.
    async def handler(reader, writer):
        while True:
            head = await read_request_head(reader)
            if head.startswith(b"GET /first "):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloXYZ")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    backend = RawBackend(handler)
    port = free_port()
    gw = GatewayThread(gateway_toml(port, [f"127.0.0.1:{backend.port}"]))
    try:
        for path, body in ((b"/first", b"hello"), (b"/second", b"ok")):
            data = raw_exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            [(status, _, got)] = parse_responses(data)
            assert (status, got) == (200, body)
            time.sleep(0.1)
    finally:
        gw.stop()
        backend.stop()
