"""TLS: https listeners (HTTP and wss on them), SNI across sites, end-to-end TLS to backends,
redirect rules, certificate reload and certificate errors. Certificates come from trustme."""

from __future__ import annotations

import asyncio
import datetime
import signal
import socket
import ssl

import aiohttp
import pytest
import trustme
from websockets.asyncio.client import connect

from fastgw import cli

from support import AiohttpBackend, GatewayThread, free_port, parse_responses, raw_exchange, start_cli, wait_port


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def certs(ca, tmp_path):
    """Files for two sites (a.test, b.test) and the CA bundle."""
    out = {}
    for name in ("a.test", "b.test"):
        cert = ca.issue_cert(name, "127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(tmp_path / f"{name}.pem"), append=True)
        cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
        out[name] = (str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    out["ca"] = str(tmp_path / "ca.pem")
    return out


@pytest.fixture
def backend():
    b = AiohttpBackend("plain")
    yield b
    b.stop()


def client_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def https_toml(port, certs, backend_port, *, extra="", settings=""):
    return f"""
[[listeners]]
name = "site-a"
port = {port}
bind = "127.0.0.1"
protocol = "https"
host_names = ["a.test"]
certificate = "{certs['a.test'][0]}"
private_key = "{certs['a.test'][1]}"

[[listeners]]
name = "site-b"
port = {port}
bind = "127.0.0.1"
protocol = "https"
host_names = ["b.test"]
certificate = "{certs['b.test'][0]}"
private_key = "{certs['b.test'][1]}"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend_port}"]

[[backend_settings]]
name = "settings"
port = 80
request_timeout = 5
{settings}

[[rules]]
name = "rule-a"
listener = "site-a"
backend_pool = "pool"
backend_settings = "settings"

[[rules]]
name = "rule-b"
listener = "site-b"
backend_pool = "pool"
backend_settings = "settings"
{extra}
"""


def peer_cert_names(port, server_hostname, ca, *, version=None, alpn=("http/1.1",)):
    ctx = client_ctx(ca)
    ctx.check_hostname = False
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    ctx.set_alpn_protocols(list(alpn))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            cert = s.getpeercert()
            names = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
            return names, s.version(), s.selected_alpn_protocol()


def test_https_listener_http_and_wss(ca, certs, backend):
    port = free_port()
    gw = GatewayThread(https_toml(port, certs, backend.port))
    try:
        async def go():
            conn = aiohttp.TCPConnector(ssl=client_ctx(ca))
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.get(f"https://127.0.0.1:{port}/x", headers={"Host": "a.test"},
                                 server_hostname="a.test") as r:
                    data = await r.json()
            async with connect(f"wss://b.test:{port}/ws", ssl=client_ctx(ca), proxy=None,
                               host="127.0.0.1", port=port) as ws:
                await ws.send("secure")
                echoed = await ws.recv()
            return data, echoed
        data, echoed = asyncio.run(asyncio.wait_for(go(), 20))
        assert data["proto"] == "https" and data["tls"] is False
        assert echoed == "secure"
        assert backend.requests[-1]["headers"]["X-Forwarded-Proto"] == "https"
    finally:
        gw.stop()


def test_versions_alpn_and_sni(ca, certs, backend):
    port = free_port()
    gw = GatewayThread(https_toml(port, certs, backend.port))
    try:
        names, version, alpn = peer_cert_names(port, "a.test", ca)
        assert names == ["a.test"] and alpn == "http/1.1" and version in ("TLSv1.2", "TLSv1.3")
        assert peer_cert_names(port, "b.test", ca)[0] == ["b.test"]
        # Unknown SNI, and no SNI at all: the first listener's certificate.
        assert peer_cert_names(port, "unknown.test", ca)[0] == ["a.test"]
        assert peer_cert_names(port, None, ca)[0] == ["a.test"]
        assert peer_cert_names(port, "a.test", ca, version=ssl.TLSVersion.TLSv1_2)[1] == "TLSv1.2"
        assert peer_cert_names(port, "a.test", ca, version=ssl.TLSVersion.TLSv1_3)[1] == "TLSv1.3"
        with pytest.raises(ssl.SSLError), pytest.warns(DeprecationWarning):
            peer_cert_names(port, "a.test", ca, version=ssl.TLSVersion.TLSv1_1)
    finally:
        gw.stop()


def test_end_to_end_tls_to_backend_and_wrong_ca(ca, certs, tmp_path, caplog):
    import logging
    backend_ca = trustme.CA()
    server_cert = backend_ca.issue_cert("backend.test")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_ctx)
    tls_backend = AiohttpBackend("tls", ssl_context=server_ctx)
    backend_ca.cert_pem.write_to_path(str(tmp_path / "backend-ca.pem"))
    port = free_port()
    settings = (f'protocol = "https"\ntrusted_root_certificate = "{tmp_path / "backend-ca.pem"}"\n'
                f'host_name = "backend.test"')
    gw = GatewayThread(https_toml(port, certs, tls_backend.port, settings=settings))
    try:
        async def go():
            conn = aiohttp.TCPConnector(ssl=client_ctx(ca))
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.get(f"https://127.0.0.1:{port}/e2e", server_hostname="a.test",
                                 headers={"Host": "a.test"}) as r:
                    body = await r.json()
            async with connect(f"wss://a.test:{port}/ws", ssl=client_ctx(ca), proxy=None,
                               host="127.0.0.1", port=port) as ws:
                await ws.send("wss end to end")
                return body, await ws.recv()
        body, echoed = asyncio.run(asyncio.wait_for(go(), 20))
        assert body["tls"] is True and body["server"] == "tls"
        assert echoed == "wss end to end"
    finally:
        gw.stop()
    # The same backend, trusted against the wrong CA: 502, and a log line says why.
    settings = f'protocol = "https"\ntrusted_root_certificate = "{certs["ca"]}"\nhost_name = "backend.test"'
    gw = GatewayThread(https_toml(port, certs, tls_backend.port, settings=settings))
    try:
        caplog.set_level(logging.WARNING, logger="fastgw")

        async def bad():
            conn = aiohttp.TCPConnector(ssl=client_ctx(ca))
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.get(f"https://127.0.0.1:{port}/", server_hostname="a.test",
                                 headers={"Host": "a.test"}) as r:
                    return r.status
        assert asyncio.run(asyncio.wait_for(bad(), 20)) == 502
        errors = [r for r in caplog.records if r.getMessage() == "upstream_error"]
        assert errors and "CERTIFICATE_VERIFY_FAILED" in errors[-1].fields["cause"]
    finally:
        gw.stop()
        tls_backend.stop()


def test_https_probe(ca, certs, tmp_path):
    backend_ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    backend_ca.issue_cert("backend.test").configure_cert(server_ctx)
    tls_backend = AiohttpBackend("tls", ssl_context=server_ctx)
    backend_ca.cert_pem.write_to_path(str(tmp_path / "bca.pem"))
    port = free_port()
    probe = """
[[probes]]
name = "p"
protocol = "https"
host = "backend.test"
interval = 0.2
timeout = 2
"""
    settings = (f'protocol = "https"\ntrusted_root_certificate = "{tmp_path / "bca.pem"}"\n'
                f'host_name = "backend.test"\nprobe = "p"')
    gw = GatewayThread(https_toml(port, certs, tls_backend.port, settings=settings, extra=probe))
    try:
        import time
        time.sleep(0.8)
        ep = gw.gateway.backends[("pool", "settings")].endpoints[0]
        assert ep.last_result == "ok" and tls_backend.probes >= 2
    finally:
        gw.stop()
        tls_backend.stop()


REDIRECT = """
[[listeners]]
name = "http"
port = {http}
bind = "127.0.0.1"

[[listeners]]
name = "https"
port = {https}
bind = "127.0.0.1"
protocol = "https"
certificate = "{cert}"
private_key = "{key}"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend}"]

[[backend_settings]]
name = "s"

[[rules]]
name = "https-rule"
listener = "https"
backend_pool = "pool"
backend_settings = "s"

[[rules]]
name = "to-https"
type = "redirect"
listener = "http"
target_listener = "https"
{extra}
"""


@pytest.mark.parametrize("extra, request_target, status, location", [
    ("", "/a/b?x=1", 301, "https://example.com:{https}/a/b?x=1"),
    ("status = 308\ninclude_query = false", "/a?x=1", 308, "https://example.com:{https}/a"),
    ("status = 302\ninclude_path = false", "/a?x=1", 302, "https://example.com:{https}/?x=1"),
])
def test_redirect_to_listener(certs, backend, extra, request_target, status, location):
    http, https = free_port(), free_port()
    gw = GatewayThread(REDIRECT.format(http=http, https=https, cert=certs["a.test"][0],
                                       key=certs["a.test"][1], backend=backend.port, extra=extra))
    try:
        data = raw_exchange(http, f"GET {request_target} HTTP/1.1\r\nHost: example.com:{http}\r\n"
                                  f"Connection: close\r\n\r\n".encode())
        (got_status, headers, _), = parse_responses(data)
        assert got_status == status
        assert headers["location"] == [location.format(https=https)]
        assert backend.requests == []
    finally:
        gw.stop()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_url(backend, status):
    port = free_port()
    toml = f"""
[[listeners]]
name = "l"
port = {port}
bind = "127.0.0.1"
[[rules]]
name = "r"
type = "redirect"
listener = "l"
target_url = "https://www.example.org/new"
status = {status}
"""
    gw = GatewayThread(toml)
    try:
        data = raw_exchange(port, b"GET /old/page?q=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        (got, headers, _), = parse_responses(data)
        assert got == status
        assert headers["location"] == ["https://www.example.org/new/old/page?q=2"]
    finally:
        gw.stop()


def test_certificate_reload_on_sighup_keeps_sessions(ca, certs, backend, tmp_path):
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(https_toml(port, certs, backend.port))
    proc = start_cli("serve", str(cfg))
    try:
        wait_port(port, proc=proc)

        def serial(name):
            ctx = client_ctx(ca)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=name) as s:
                    return s.getpeercert()["serialNumber"]

        before = serial("a.test")

        async def go():
            async with connect(f"wss://a.test:{port}/ws", ssl=client_ctx(ca), proxy=None,
                               host="127.0.0.1", port=port) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                # Renew a.test's certificate in place, then SIGHUP.
                renewed = ca.issue_cert("a.test", "127.0.0.1")
                renewed.cert_chain_pems[0].write_to_path(certs["a.test"][0])
                for pem in renewed.cert_chain_pems[1:]:
                    pem.write_to_path(certs["a.test"][0], append=True)
                renewed.private_key_pem.write_to_path(certs["a.test"][1])
                proc.send_signal(signal.SIGHUP)
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    if await asyncio.to_thread(serial, "a.test") != before:
                        break
                await ws.send("after")
                return await ws.recv()
        assert asyncio.run(asyncio.wait_for(go(), 20)) == "after"
        assert serial("a.test") != before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_certificate_errors_named_by_check(ca, certs, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    port = free_port()
    # An encrypted key.
    key = load_pem_private_key(open(certs["a.test"][1], "rb").read(), password=None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"secret")))
    text = https_toml(port, certs, 1).replace(certs["a.test"][1], str(enc))
    path = tmp_path / "enc.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert 'listeners[0] "site-a".private_key:' in err and "FASTGW_TLS_KEY_PASSWORD" in err
    # ... readable with the passphrase from the environment.
    import os
    os.environ["FASTGW_TLS_KEY_PASSWORD"] = "secret"
    try:
        assert cli.main(["check", str(path)]) == 0
    finally:
        del os.environ["FASTGW_TLS_KEY_PASSWORD"]
    capsys.readouterr()
    # A key that does not match the certificate.
    path.write_text(https_toml(port, certs, 1).replace(certs["a.test"][1], certs["b.test"][1]))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert 'listeners[0] "site-a".private_key:' in err and "does not match the certificate" in err
    # A missing file.
    path.write_text(https_toml(port, certs, 1).replace(certs["b.test"][0], str(tmp_path / "gone.pem")))
    assert cli.main(["check", str(path)]) == 2
    assert 'listeners[1] "site-b".certificate:' in capsys.readouterr().err
    # An expired certificate is a warning, not an error.
    old = ca.issue_cert("a.test", not_before=datetime.datetime(2020, 1, 1),
                        not_after=datetime.datetime(2021, 1, 1))
    old.cert_chain_pems[0].write_to_path(str(tmp_path / "old.pem"))
    old.private_key_pem.write_to_path(str(tmp_path / "old.key"))
    path.write_text(https_toml(port, certs, 1).replace(certs["a.test"][0], str(tmp_path / "old.pem"))
                    .replace(certs["a.test"][1], str(tmp_path / "old.key")))
    assert cli.main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert 'listeners[0] "site-a".certificate: warning:' in err and "expired" in err


def test_plain_http_to_https_port_is_refused_cleanly(ca, certs, backend):
    port = free_port()
    gw = GatewayThread(https_toml(port, certs, backend.port))
    try:
        data = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", timeout=3)
        assert not data.startswith(b"HTTP/1.1 200")
    finally:
        gw.stop()


