"""Gateway policies: the operator's error pages on the gateway's own 4xx/5xx answers, and the
WebSocket policies of backend settings (allowed origins, allowed subprotocols, max_sessions).
Real sockets, real backends and real clients (websockets, raw sockets)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fastgw import config as config_mod
from fastgw import gateway as gateway_mod
from fastgw import handshake, http1, preflight
from fastgw.errors import ConfigError, HandshakeError

from support import (
    GatewayThread,
    RawBackend,
    WsBackend,
    free_port,
    gateway_toml,
    parse_responses,
    raw_exchange,
    ws_gateway_toml,
    ws_raw_handshake,
)

PAGE = "<html><body><h1>{status}</h1><p>id {transaction_id}</p><style>p {color: red}</style>" \
       "</body></html>\n"


def access_records(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    records: list = []
    while time.monotonic() < deadline:
        if path.exists():
            records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            records = [r for r in records if r.get("log") == "access"]
            if len(records) >= n:
                break
        time.sleep(0.02)
    return records


def page_id(body: bytes) -> str:
    return body.decode().split("<p>id ", 1)[1].split("</p>", 1)[0]


# ------------------------------------------------------------------------------------------
# Error pages


def write_config(tmp_path, text: str):
    (tmp_path / "pages").mkdir(exist_ok=True)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def pages_toml(port, servers, tmp_path, listener_pages=""):
    text = gateway_toml(port, servers, request_timeout=2, gateway_extra=(
        f'access_log = "{tmp_path / "access.log"}"\n'
        'error_pages = { 502 = "pages/502.html", "404" = "pages/404.html" }'))
    return text.replace('bind = "127.0.0.1"', f'bind = "127.0.0.1"\n{listener_pages}')


def pages_gateway(tmp_path, server: str):
    """A gateway with [gateway] pages for 502 and 404, in front of `server`."""
    port = free_port()
    path = write_config(tmp_path, pages_toml(port, [server], tmp_path))
    (tmp_path / "pages" / "502.html").write_text(PAGE)
    (tmp_path / "pages" / "404.html").write_text("not here: {transaction_id}")
    return port, GatewayThread(path.read_text(), path=str(path))


def test_custom_502_from_a_dead_backend_carries_the_logged_transaction_id(tmp_path):
    port, gw = pages_gateway(tmp_path, f"127.0.0.1:{free_port()}")
    try:
        raw = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, body = parse_responses(raw)[0]
        assert status == 502
        assert headers["content-type"][0] == "text/html; charset=utf-8"
        assert int(headers["content-length"][0]) == len(body)
        assert body.startswith(b"<html><body><h1>502</h1>") and b"p {color: red}" in body
        tid = page_id(body)
        record = access_records(tmp_path / "access.log", 1)[0]
        assert record["httpStatus"] == 502 and record["transactionId"] == tid and tid
        # A client's own X-Request-Id is the transaction id: escaped in the page.
        raw = raw_exchange(port, b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: <b>&\r\n"
                                 b"Connection: close\r\n\r\n")
        assert page_id(parse_responses(raw)[0][2]) == "&lt;b&gt;&amp;"
        # HEAD: the page's length, no body.
        raw = raw_exchange(port, b"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head = raw.split(b"\r\n\r\n", 1)
        assert b"Content-Type: text/html" in head[0] and head[1] == b""
    finally:
        gw.stop()


def test_no_page_for_a_status_keeps_the_plain_answer_and_backend_errors_pass_untouched(tmp_path):
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nbackend")
        await writer.drain()

    backend = RawBackend(handler)
    port, gw = pages_gateway(tmp_path, f"127.0.0.1:{backend.port}")
    try:
        raw = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_responses(raw)[0][2] == b"backend"  # the backend's own 502
        # 400 has no page: the plain text answer
        status, headers, _ = parse_responses(raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n"))[0]
        assert status == 400 and headers["content-type"][0].startswith("text/plain")
    finally:
        gw.stop()
        backend.stop()


def test_a_listener_table_overrides_the_global_one_per_status(tmp_path):
    port = free_port()
    path = write_config(tmp_path, f"""
[gateway]
error_pages = {{ "502" = "pages/502.html", "404" = "pages/404.html" }}

[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"
error_pages = {{ "404" = "pages/own404.html" }}

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{free_port()}"]

[[backend_settings]]
name = "settings"

[[rules]]
name = "rule"
type = "path_based"
listener = "web"
  [[rules.paths]]
  paths = ["/app/*"]
  backend_pool = "pool"
  backend_settings = "settings"
""")
    (tmp_path / "pages" / "502.html").write_text(PAGE)
    (tmp_path / "pages" / "404.html").write_text("global 404")
    (tmp_path / "pages" / "own404.html").write_text("listener {status}")
    gw = GatewayThread(path.read_text(), path=str(path))
    try:
        raw = raw_exchange(port, b"GET /nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert parse_responses(raw)[0][0] == 404 and parse_responses(raw)[0][2] == b"listener 404"
        raw = raw_exchange(port, b"GET /app/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, _, body = parse_responses(raw)[0]
        assert status == 502 and body.startswith(b"<html><body><h1>502</h1>")  # inherited
        # A handshake the gateway refuses gets the page as well (then the connection closes).
        sock, head, rest = ws_raw_handshake(port, path="/nothing")
        while len(rest) < len(b"listener 404") and (chunk := sock.recv(4096)):
            rest += chunk
        sock.close()
        assert head.startswith(b"HTTP/1.1 404 ") and b"text/html" in head
        assert rest == b"listener 404"
    finally:
        gw.stop()


def test_check_refuses_missing_oversized_pages_and_non_error_statuses(tmp_path):
    port = free_port()
    text = pages_toml(port, ["127.0.0.1:1"], tmp_path,
                      listener_pages='error_pages = { "403" = "pages/big.html", "302" = "x", '
                                     '"abc" = "y" }')
    path = write_config(tmp_path, text)
    (tmp_path / "pages" / "404.html").write_text("ok")
    (tmp_path / "pages" / "big.html").write_text("x" * (64 * 1024 + 1))
    with pytest.raises(ConfigError) as err:
        config_mod.load(str(path))
    keys = {key: reason for _, key, reason in err.value.problems}
    assert set(keys) == {'listeners[0] "web".error_pages.302', 'listeners[0] "web".error_pages.abc'}
    assert "4xx or 5xx" in keys['listeners[0] "web".error_pages.302']
    path.write_text(text.replace(', "302" = "x", "abc" = "y"', ""))
    with pytest.raises(ConfigError) as err:
        preflight.load_checked(str(path))
    problems = {key: (file, reason) for file, key, reason in err.value.problems}
    assert set(problems) == {"gateway.error_pages.502", 'listeners[0] "web".error_pages.403'}
    assert problems["gateway.error_pages.502"] == (str(path), f"{tmp_path}/pages/502.html: "
                                                   "cannot read: No such file or directory")
    assert "larger than 64 KiB" in problems['listeners[0] "web".error_pages.403'][1]


def test_a_reload_picks_up_a_changed_page(tmp_path):
    port = free_port()
    path = write_config(tmp_path, pages_toml(port, [f"127.0.0.1:{free_port()}"], tmp_path))
    (tmp_path / "pages" / "502.html").write_text("first {status}")
    (tmp_path / "pages" / "404.html").write_text("x")
    gw = GatewayThread(path.read_text(), path=str(path))
    request = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    try:
        assert parse_responses(raw_exchange(port, request))[0][2] == b"first 502"
        (tmp_path / "pages" / "502.html").write_text("second {status}")
        gw.lt.call(gateway_mod._reload(gw.gateway, str(path)))  # what SIGHUP runs
        assert parse_responses(raw_exchange(port, request))[0][2] == b"second 502"
        # A page that cannot be read refuses the reload: the running pages stay.
        (tmp_path / "pages" / "502.html").write_text("y" * 70000)
        gw.lt.call(gateway_mod._reload(gw.gateway, str(path)))
        assert parse_responses(raw_exchange(port, request))[0][2] == b"second 502"
    finally:
        gw.stop()


# ------------------------------------------------------------------------------------------
# WebSocket policies: pure decisions


def head_of(extra: list[tuple[bytes, bytes]]) -> http1.RequestHead:
    headers = [(b"Host", b"a"), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
               (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
               (b"Sec-WebSocket-Version", b"13")] + extra
    head = http1.RequestHead(b"GET", b"/", "1.1", headers)
    http1.analyse_request(head)
    return head


ALLOWED = tuple(config_mod.parse_origin(o, wildcard=True) for o in (
    "https://App.Example.com", "https://*.example.org", "http://localhost:8080"))


@pytest.mark.parametrize("origin, ok", [
    ("https://app.example.com", True),
    ("HTTPS://APP.EXAMPLE.COM:443", True),   # RFC 6454 section 6.1: case and default port
    ("https://app.example.com:8443", False),
    ("http://app.example.com", False),
    ("https://a.example.org", True),
    ("https://a.b.example.org", True),       # a wildcard matches one or more labels
    ("https://example.org", False),
    ("https://evilexample.org", False),
    ("http://localhost:8080", True),
    ("http://localhost", False),
    ("null", False),
    ("https://app.example.com/path", False),
    (None, False),
])
def test_origin_allowlist(origin, ok):
    head = head_of([(b"Origin", origin.encode())] if origin is not None else [])
    if ok:
        handshake.check_origin(head, ALLOWED)
    else:
        with pytest.raises(HandshakeError) as err:
            handshake.check_origin(head, ALLOWED)
        assert err.value.status == 403


def test_two_origin_headers_are_refused():
    head = head_of([(b"Origin", b"https://app.example.com"), (b"Origin", b"https://evil.com")])
    with pytest.raises(HandshakeError):
        handshake.check_origin(head, ALLOWED)


def test_subprotocol_offers_are_filtered():
    head = head_of([(b"Sec-WebSocket-Protocol", b"chat, superchat"),
                    (b"Sec-WebSocket-Protocol", b"v2.chat")])
    offer = handshake.validate_request(head)
    handshake.restrict_protocols(head, offer, ("chat", "v2.chat"))
    assert offer.protocols == (b"chat", b"v2.chat")
    sent = [v for (_, v), n in zip(head.headers, head.lnames) if n == b"sec-websocket-protocol"]
    assert sent == [b"chat, v2.chat"]
    with pytest.raises(HandshakeError) as err:
        handshake.restrict_protocols(head, offer, ("mqtt",))
    assert err.value.status == 403


def test_origin_and_subprotocol_config_problems():
    text = gateway_toml(1, ["127.0.0.1:2"], extra_settings=(
        'websocket_allowed_origins = ["https://ok.example.com", "ftp//x", "https://a.com/p", '
        '"https://*"]\nwebsocket_allowed_subprotocols = ["chat", "bad name"]\nmax_sessions = -1'))
    with pytest.raises(ConfigError) as err:
        config_mod.loads(text)
    keys = sorted(key for _, key, _ in err.value.problems)
    prefix = 'backend_settings[0] "settings".'
    assert keys == [prefix + "max_sessions", prefix + "websocket_allowed_origins[1]",
                    prefix + "websocket_allowed_origins[2]", prefix + "websocket_allowed_origins[3]",
                    prefix + "websocket_allowed_subprotocols[1]"]


# ------------------------------------------------------------------------------------------
# WebSocket policies through the gateway


def ws_policy_gateway(ws, tmp_path, settings):
    port = free_port()
    text = ws_gateway_toml(port, ws.port, extra_settings=settings, gateway_extra=(
        f'access_log = "{tmp_path / "access.log"}"\n'))
    text += '\n[[probes]]\nname = "none"\npath = "/"\ninterval = 3600\n'
    text = text.replace("request_timeout = 10\n", 'request_timeout = 10\nprobe = "none"\n')
    return port, GatewayThread(text)


@pytest.fixture
def accepts():
    """A raw TCP backend that counts accepted connections and answers nothing."""
    backend = RawBackend(lambda reader, writer: reader.read(1 << 16))
    yield backend
    backend.stop()


def test_cross_site_origin_gets_403_and_no_backend_connection(tmp_path, accepts):
    port, gw = ws_policy_gateway(accepts, tmp_path, 'websocket_allowed_origins = '
                                 '["https://chat.example.com", "https://*.example.net"]')
    try:
        deadline = time.monotonic() + 5
        while not accepts.connections and time.monotonic() < deadline:
            time.sleep(0.01)  # the probe's first (and, with interval 3600, only) connection
        base = accepts.connections
        assert base == 1
        for extra in ("Origin: https://evil.example.com\r\n", ""):
            sock, head, _ = ws_raw_handshake(port, extra=extra)
            sock.close()
            assert head.startswith(b"HTTP/1.1 403 ")
        records = access_records(tmp_path / "access.log", 2)
        assert "'https://evil.example.com' is not in websocket_allowed_origins" in \
            records[0]["error_info"]
        assert "Origin header missing" in records[1]["error_info"]
        assert all(r["httpStatus"] == 403 and r["serverRouted"] == "" for r in records)
        assert accepts.connections == base
    finally:
        gw.stop()


def test_wildcard_origin_is_accepted_and_subprotocols_filtered(tmp_path):
    ws = WsBackend()
    port, gw = ws_policy_gateway(ws, tmp_path, 'websocket_allowed_origins = '
                                 '["https://*.example.net"]\n'
                                 'websocket_allowed_subprotocols = ["chat", "v2"]')

    async def go():
        async with connect(f"ws://127.0.0.1:{port}/headers", origin="https://a.b.example.net",
                           subprotocols=["superchat", "chat", "v2"]) as c:
            headers = dict((k.lower(), v) for k, v in json.loads(await c.recv()))
            return c.subprotocol, headers

    try:
        chosen, seen = asyncio.run(go())
        # The backend prefers superchat, but was never offered it.
        assert seen["sec-websocket-protocol"] == "chat, v2" and chosen == "chat"
        with pytest.raises(InvalidStatus) as err:
            asyncio.run(connect(f"ws://127.0.0.1:{port}/echo", origin="https://a.b.example.net",
                                subprotocols=["superchat"]).__aenter__())
        assert err.value.response.status_code == 403
        # No Sec-WebSocket-Protocol at all passes.
        sock, head, _ = ws_raw_handshake(port, path="/echo", extra="Origin: https://x.example.net\r\n")
        sock.close()
        assert head.startswith(b"HTTP/1.1 101 ")
    finally:
        gw.stop()
        ws.stop()


def test_a_backend_choosing_an_unlisted_subprotocol_gets_502(tmp_path):
    # The client offers superchat and chat; only chat is offered to the backend, which answers
    # superchat anyway.
    key_accept = handshake.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==").decode()

    async def rogue(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Accept: {key_accept}\r\n"
                     f"Sec-WebSocket-Protocol: superchat\r\n\r\n".encode())
        await writer.drain()
        await reader.read(1)

    backend = RawBackend(rogue)
    port, gw = ws_policy_gateway(backend, tmp_path, 'websocket_allowed_subprotocols = ["chat"]')
    try:
        sock, head, _ = ws_raw_handshake(port, extra="Sec-WebSocket-Protocol: superchat, chat\r\n")
        sock.close()
        assert head.startswith(b"HTTP/1.1 502 ")
    finally:
        gw.stop()
        backend.stop()


def test_max_sessions_answers_503_with_retry_after_until_a_session_closes(tmp_path):
    ws = WsBackend()
    port, gw = ws_policy_gateway(ws, tmp_path, "max_sessions = 2")

    async def go():
        url = f"ws://127.0.0.1:{port}/echo"
        first = await connect(url).__aenter__()
        second = await connect(url).__aenter__()
        with pytest.raises(InvalidStatus) as err:
            await connect(url).__aenter__()
        response = err.value.response
        assert response.status_code == 503 and response.headers["Retry-After"] == "5"
        await first.close()
        # The session is counted until the gateway has seen it end: retry until then.
        for _ in range(200):
            try:
                third = await connect(url).__aenter__()
                break
            except InvalidStatus:
                await asyncio.sleep(0.01)
        await third.send("again")
        assert await third.recv() == "again"
        await second.close()
        await third.close()

    try:
        asyncio.run(go())
        # A refused handshake (404 from the backend) gives its place back.
        for _ in range(3):
            sock, head, _ = ws_raw_handshake(port, path="/nope")
            sock.close()
            assert head.startswith(b"HTTP/1.1 404 ")
        deadline = time.monotonic() + 5
        count = gw.gateway.backends[("pool", "settings")].sessions
        while count.open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert count.open == 0
    finally:
        gw.stop()
        ws.stop()
