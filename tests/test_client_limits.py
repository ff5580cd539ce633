"""PROXY protocol on listeners and per-client limits, through a real gateway: raw sockets send
the PROXY headers (then HTTP, or TLS with the standard library), an aiohttp backend says what
reached it, the access log says who the client was."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time

import pytest
import trustme
from websockets.sync.client import connect

from fastgw import cli
from fastgw.proxyproto import v1_header, v2_header

from support import AiohttpBackend, GatewayThread, WsBackend, free_port, gateway_toml, parse_responses


@pytest.fixture
def backend():
    b = AiohttpBackend("b")
    yield b
    b.stop()


def serve(backend, listener_keys: str, tmp_path, **kw) -> GatewayThread:
    port = free_port()
    log = tmp_path / "access.log"
    text = gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                        gateway_extra=f'access_log = "{log}"\nfirewall_log = "{tmp_path}/fw.log"',
                        **kw)
    text = text.replace('bind = "127.0.0.1"\n', f'bind = "127.0.0.1"\n{listener_keys}\n', 1)
    gw = GatewayThread(text)
    gw.port = port
    gw.log = log
    return gw


def request(sock: socket.socket, path: str = "/headers", close: bool = True) -> tuple:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n"
                 f"{'Connection: close' if close else ''}\r\n\r\n".encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        responses = parse_responses(data)
        if responses and not close:
            return responses[0]
    return parse_responses(data)[0] if data else (None, {}, b"")


def closed(sock: socket.socket) -> bool:
    """The gateway closed the connection without a byte (a reset when our bytes were unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def forwarded_for(body: bytes) -> str:
    return dict((k.lower(), v) for k, v in json.loads(body)["headers"])["x-forwarded-for"]


def log_records(gw, count: int) -> list[dict]:
    """The access log's records once `count` are written (the log writes in batches)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if gw.log.exists():
            lines = gw.log.read_text().splitlines()
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError("access log records missing")


def client_ip(record: dict) -> str:
    return record.get("clientIp") or record["properties"]["clientIp"]


def test_proxy_v1_and_v2_sources_reach_log_and_backend(backend, tmp_path):
    gw = serve(backend, "proxy_protocol = true", tmp_path)
    try:
        sources = [v1_header(("192.0.2.7", 5000), ("10.0.0.1", 80)),
                   v1_header(("2001:db8::7", 5001), ("2001:db8::1", 80)),
                   v2_header(("198.51.100.9", 5002), ("10.0.0.1", 80)),
                   v2_header(("2001:db8::9", 5003), ("2001:db8::1", 80)),
                   v2_header(None)]  # LOCAL: the socket's peer
        for header in sources:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
                # The header split across writes, as a slow proxy may send it.
                s.sendall(header[:7])
                time.sleep(0.01)
                s.sendall(header[7:])
                status, _, body = request(s)
            assert status == 200
            assert forwarded_for(body) == "6.6.6.6, " + \
                ["192.0.2.7", "2001:db8::7", "198.51.100.9", "2001:db8::9", "127.0.0.1"][
                    sources.index(header)]
        records = log_records(gw, 5)
        assert [client_ip(r) for r in records] == ["192.0.2.7", "2001:db8::7", "198.51.100.9",
                                                   "2001:db8::9", "127.0.0.1"]
    finally:
        gw.stop()


@pytest.mark.parametrize("data", [
    b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n",  # no header at all
    b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 80\r\nGET /headers HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PROXY TCP4 192.0.2.7",  # cut short: the peer half-closes
])
def test_bad_header_closes_without_reaching_a_backend(backend, tmp_path, data):
    gw = serve(backend, "proxy_protocol = true", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(data)
            with contextlib.suppress(OSError):  # the gateway may have closed already
                s.shutdown(socket.SHUT_WR)
            assert closed(s)
        assert backend.requests == []
        assert gw.gateway.stats.client_refusals[("proxy_header",)] == 1
    finally:
        gw.stop()


def test_header_timeout(backend, tmp_path):
    gw = serve(backend, "proxy_protocol = true", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"PROXY TCP4 ")
            assert closed(s)  # header_timeout = 2 (gateway_toml)
        assert gw.gateway.stats.client_refusals[("proxy_header",)] == 1
    finally:
        gw.stop()


def test_proxy_protocol_from(backend, tmp_path):
    gw = serve(backend, 'proxy_protocol = true\nproxy_protocol_from = ["10.0.0.0/8"]', tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(v1_header(("192.0.2.7", 5000), ("10.0.0.1", 80)))
            assert closed(s)
        assert gw.gateway.stats.client_refusals[("proxy_protocol_from",)] == 1
        assert backend.requests == []
    finally:
        gw.stop()
    gw = serve(backend, 'proxy_protocol = true\nproxy_protocol_from = ["127.0.0.1/32"]', tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(v1_header(("192.0.2.7", 5000), ("10.0.0.1", 80)))
            status, _, body = request(s)
        assert status == 200 and forwarded_for(body) == "6.6.6.6, 192.0.2.7"
    finally:
        gw.stop()


def test_https_listener_reads_the_header_before_tls(backend, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("a.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "site.pem"))
    port = free_port()
    text = gateway_toml(port, [f"127.0.0.1:{backend.port}"]).replace(
        'bind = "127.0.0.1"\n', f'bind = "127.0.0.1"\nprotocol = "https"\nproxy_protocol = true\n'
        f'certificate = "{tmp_path}/site.pem"\nprivate_key = "{tmp_path}/site.pem"\n', 1)
    gw = GatewayThread(text)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        for header, ip in [(v2_header(("203.0.113.5", 7000), ("10.0.0.1", 443)), "203.0.113.5"),
                           (v1_header(("2001:db8::5", 7001), ("2001:db8::1", 443)), "2001:db8::5")]:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            raw.sendall(header)
            with ctx.wrap_socket(raw, server_hostname="a.test") as s:
                status, _, body = request(s)
            assert status == 200 and forwarded_for(body) == "6.6.6.6, " + ip
    finally:
        gw.stop()


def test_requests_per_ip_429_then_allowed_after_the_window(backend, tmp_path):
    gw = serve(backend, "requests_per_ip = 2\nrate_window = 1", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            assert request(s, close=False)[0] == 200
            assert request(s, close=False)[0] == 200
            status, headers, _ = request(s, close=False)
            assert status == 429 and headers["retry-after"] == ["1"]
            assert gw.gateway.stats.client_refusals[("requests_per_ip",)] == 1
            time.sleep(1.0)  # the window: the bucket is full again
            assert request(s, close=False)[0] == 200
        assert len(backend.requests) == 3
        fw = tmp_path / "fw.log"
        deadline = time.monotonic() + 5
        while not (fw.exists() and fw.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        record = json.loads(fw.read_text().splitlines()[0])
        record = record.get("properties", record)
        assert record["ruleId"] == "requests-per-ip" and record["action"] == "Blocked"
        assert record["clientIp"] == "127.0.0.1"
        refused = [r for r in log_records(gw, 4) if r["httpStatus"] == 429]
        assert record["transactionId"] and [r["transactionId"] for r in refused] == [record["transactionId"]]
    finally:
        gw.stop()


def test_requests_per_ip_counts_the_proxy_source(backend, tmp_path):
    gw = serve(backend, "proxy_protocol = true\nrequests_per_ip = 1", tmp_path)
    try:
        for ip, expected in [("192.0.2.1", 200), ("192.0.2.2", 200), ("192.0.2.1", 429)]:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
                s.sendall(v1_header((ip, 5000), ("10.0.0.1", 80)))
                assert request(s)[0] == expected
    finally:
        gw.stop()


def test_requests_per_ip_counts_handshakes_with_requests(backend, tmp_path):
    gw = serve(backend, "requests_per_ip = 1", tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            assert request(s)[0] == 200
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(b"GET /chat HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # the refused handshake's connection is closed
                data += chunk
        status, headers, _ = parse_responses(data)[0]
        assert status == 429 and int(headers["retry-after"][0]) >= 1
        assert len(backend.requests) == 1
    finally:
        gw.stop()


def test_max_connections_per_ip(backend, tmp_path):
    gw = serve(backend, "max_connections_per_ip = 2", tmp_path)
    try:
        first = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        second = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
        assert request(first, close=False)[0] == 200
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as third:
            assert closed(third)  # closed at accept, before any HTTP
        assert gw.gateway.stats.client_refusals[("max_connections_per_ip",)] == 1
        assert request(second, close=False)[0] == 200  # the earlier ones keep working
        assert request(first)[0] == 200
        first.close()
        second.close()
        deadline = time.monotonic() + 5  # their counts are released as they close
        while gw.gateway.acceptors[("127.0.0.1", gw.port)].gate.counts.open \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as again:
            assert request(again)[0] == 200
    finally:
        gw.stop()


def test_a_websocket_session_holds_its_connection_count_until_it_ends(tmp_path):
    wsb = WsBackend()
    gw = serve(wsb, "max_connections_per_ip = 1", tmp_path)
    try:
        gate = gw.gateway.acceptors[("127.0.0.1", gw.port)].gate
        for _ in range(2):  # the second session can open only if the first one released its count
            with connect(f"ws://127.0.0.1:{gw.port}/echo", proxy=None) as ws:
                ws.send("hi")
                assert ws.recv() == "hi"
                with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as other:
                    assert closed(other)
            deadline = time.monotonic() + 5
            while gate.counts.open and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gate.counts.open == {}
        assert gw.gateway.stats.client_refusals[("max_connections_per_ip",)] == 2
    finally:
        gw.stop()
        wsb.stop()


@pytest.mark.parametrize("keys, problem", [
    ("max_connections_per_ip = -1", "max_connections_per_ip: -1 is out of range"),
    ("requests_per_ip = -5", "requests_per_ip: -5 is out of range"),
    ("rate_window = 0", "rate_window"),
    ('proxy_protocol = true\nproxy_protocol_from = ["10.0.0.0/33"]', "proxy_protocol_from[0]"),
    ('proxy_protocol_from = ["10.0.0.0/8"]', "only applies with proxy_protocol = true"),
    ('proxy_protocol = "yes"', "proxy_protocol"),
])
def test_check_refuses_bad_values(tmp_path, capsys, keys, problem):
    text = gateway_toml(8080, ["127.0.0.1:1"]).replace('bind = "127.0.0.1"\n',
                                                       f'bind = "127.0.0.1"\n{keys}\n', 1)
    path = tmp_path / "gw.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert problem in err and 'listeners[0] "web"' in err


def test_check_requires_listeners_on_one_socket_to_agree(tmp_path, capsys):
    text = gateway_toml(8080, ["127.0.0.1:1"]).replace('bind = "127.0.0.1"\n', '''bind = "127.0.0.1"
host_names = ["a.test"]
proxy_protocol = true

[[listeners]]
name = "other"
port = 8080
bind = "127.0.0.1"
''', 1)
    path = tmp_path / "gw.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    assert 'listeners[1] "other".proxy_protocol: differs from listener' in capsys.readouterr().err
