"""Mutual TLS on https listeners: client_verify required / optional / off with a client CA,
the client_certificate_* variables forwarded by a rewrite rule, the CA reloaded on SIGHUP, and
what `fastgw check` refuses. Certificates come from trustme (a server CA and a client CA)."""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import textwrap
import time
from urllib.parse import unquote

import pytest
import trustme

from fastgw import cli, config

from support import AiohttpBackend, GatewayThread, free_port, parse_responses, start_cli, wait_port


@pytest.fixture(scope="module")
def server_ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca():
    return trustme.CA()


@pytest.fixture
def files(server_ca, client_ca, tmp_path):
    site = server_ca.issue_cert("a.test")
    site.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "site.pem"))
    site.private_key_pem.write_to_path(str(tmp_path / "site.key"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    return {"cert": str(tmp_path / "site.pem"), "key": str(tmp_path / "site.key"),
            "client_ca": str(tmp_path / "clients.pem")}


@pytest.fixture
def backend():
    b = AiohttpBackend("mtls")
    yield b
    b.stop()


FORWARD = """
[[rewrite_rule_sets]]
name = "certs"
  [[rewrite_rule_sets.rules]]
  name = "forward"
  [rewrite_rule_sets.rules.request_headers]
  X-Client-Cert-Subject = "{var_client_certificate_subject}"
  X-Client-Cert-Issuer = "{var_client_certificate_issuer}"
  X-Client-Cert-Serial = "{var_client_certificate_serial}"
  X-Client-Cert-Fingerprint = "{var_client_certificate_fingerprint}"
  X-Client-Cert = "{var_client_certificate}"
  X-Client-Verify = "{var_client_certificate_verification}"
"""


def mtls_toml(port, files, backend_port, verify):
    return f"""
[gateway]
header_timeout = 2

[[listeners]]
name = "site"
port = {port}
bind = "127.0.0.1"
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_ca = "{files['client_ca']}"
client_verify = "{verify}"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend_port}"]

[[backend_settings]]
name = "settings"

[[rules]]
name = "rule"
listener = "site"
backend_pool = "pool"
backend_settings = "settings"
rewrite_rule_set = "certs"
""" + FORWARD


def https_get(port, server_ca, leaf=None) -> int:
    """GET / over TLS, with `leaf` as the client certificate; the status, or 0 when the server
    refused the handshake (with TLS 1.3 the client learns it on its first read)."""
    ctx = ssl.create_default_context()
    server_ca.configure_trust(ctx)
    if leaf is not None:
        leaf.configure_cert(ctx)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="a.test") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return 0
    return parse_responses(data)[0][0] if data else 0


def test_required(server_ca, client_ca, files, backend):
    port = free_port()
    gw = GatewayThread(mtls_toml(port, files, backend.port, "required"))
    try:
        assert https_get(port, server_ca) == 0
        assert https_get(port, server_ca, trustme.CA().issue_cert("stranger")) == 0
        assert backend.requests == []
        leaf = client_ca.issue_cert("alice@example.org", common_name="alice")
        assert https_get(port, server_ca, leaf) == 200
        seen = backend.requests[-1]["headers"]
        assert seen["X-Client-Verify"] == "SUCCESS"
        assert seen["X-Client-Cert-Subject"].startswith("CN=alice,")
    finally:
        gw.stop()


def test_optional_forwards_the_variables(server_ca, client_ca, files, backend, tmp_path):
    port = free_port()
    gw = GatewayThread(mtls_toml(port, files, backend.port, "optional"))
    try:
        assert https_get(port, server_ca) == 200
        seen = backend.requests[-1]["headers"]
        assert seen["X-Client-Verify"] == "NONE"
        assert seen["X-Client-Cert-Subject"] == "" and seen["X-Client-Cert"] == ""

        leaf = client_ca.issue_cert("bob@example.org", common_name="bob")
        assert https_get(port, server_ca, leaf) == 200
        seen = backend.requests[-1]["headers"]
        pem = leaf.cert_chain_pems[0].bytes().decode()
        der = ssl.PEM_cert_to_DER_cert(pem)
        (tmp_path / "bob.pem").write_text(pem)
        decoded = ssl._ssl._test_decode_cert(str(tmp_path / "bob.pem"))
        assert seen["X-Client-Verify"] == "SUCCESS"
        assert seen["X-Client-Cert-Subject"].startswith("CN=bob,")
        assert "O=trustme" in seen["X-Client-Cert-Issuer"]
        assert seen["X-Client-Cert-Serial"] == decoded["serialNumber"]
        assert seen["X-Client-Cert-Fingerprint"] == hashlib.sha1(der).hexdigest()
        assert unquote(seen["X-Client-Cert"]).strip() == pem.strip()
        # A certificate that does not verify is refused even when optional (see tls.py).
        assert https_get(port, server_ca, trustme.CA().issue_cert("stranger")) == 0
    finally:
        gw.stop()


def test_off_asks_for_no_certificate(server_ca, client_ca, files, backend):
    port = free_port()
    gw = GatewayThread(mtls_toml(port, files, backend.port, "off"))
    try:
        leaf = client_ca.issue_cert("carol@example.org")
        assert https_get(port, server_ca, leaf) == 200
        seen = backend.requests[-1]["headers"]
        assert seen["X-Client-Verify"] == "NONE" and seen["X-Client-Cert-Fingerprint"] == ""
    finally:
        gw.stop()


def test_reload_changes_client_verify(server_ca, client_ca, files, backend):
    """The mode is the listening socket's outer context's (tls.py): a reload must update it."""
    port = free_port()
    gw = GatewayThread(mtls_toml(port, files, backend.port, "off"))
    try:
        assert https_get(port, server_ca) == 200
        new = config.loads(textwrap.dedent(mtls_toml(port, files, backend.port, "required")))
        gw.lt.call(gw.gateway.reload(new))
        assert https_get(port, server_ca) == 0
        assert https_get(port, server_ca, client_ca.issue_cert("dave")) == 200
    finally:
        gw.stop()


def test_client_ca_reloads_on_sighup(server_ca, client_ca, files, backend, tmp_path):
    port = free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(mtls_toml(port, files, backend.port, "required"))
    proc = start_cli("serve", str(cfg))
    try:
        wait_port(port, proc=proc)
        old = client_ca.issue_cert("old")
        assert https_get(port, server_ca, old) == 200
        new_ca = trustme.CA()
        new = new_ca.issue_cert("new")
        assert https_get(port, server_ca, new) == 0
        new_ca.cert_pem.write_to_path(files["client_ca"])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while https_get(port, server_ca, new) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert https_get(port, server_ca, new) == 200
        assert https_get(port, server_ca, old) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def test_check_refuses_bad_mutual_tls(files, tmp_path, capsys):
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    text = f"""
[[listeners]]
name = "plain"
port = 8080
client_ca = "{files['client_ca']}"
client_verify = "optional"

[[listeners]]
name = "no-ca"
port = 8443
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_verify = "required"

[[listeners]]
name = "missing"
port = 8444
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_ca = "nowhere.pem"
client_verify = "maybe"

[[listeners]]
name = "garbage"
port = 8445
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_ca = "garbage.pem"
client_verify = "required"

[[listeners]]
name = "shared"
port = 8445
protocol = "https"
host_names = ["b.test"]
certificate = "{files['cert']}"
private_key = "{files['key']}"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:1"]

[[backend_settings]]
name = "settings"

[[rules]]
name = "rule"
listener = "plain"
backend_pool = "pool"
backend_settings = "settings"
"""
    path = tmp_path / "gw.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    for line in [
        'listeners[0] "plain".client_ca: only applies to listeners with protocol = "https"',
        'listeners[0] "plain".client_verify: only applies to listeners with protocol = "https"',
        'listeners[1] "no-ca".client_verify: \'required\' needs client_ca',
        'listeners[2] "missing".client_verify: must be one of',
        'listeners[4] "shared".client_verify: port 8445 has client_verify = \'required\'',
    ]:
        assert f"{path}:{line}" in err, line
    # The files are checked once the file itself is valid.
    path.write_text(f"""
[[listeners]]
name = "missing"
port = 8444
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_ca = "nowhere.pem"
client_verify = "required"

[[listeners]]
name = "garbage"
port = 8445
protocol = "https"
certificate = "{files['cert']}"
private_key = "{files['key']}"
client_ca = "garbage.pem"
client_verify = "optional"
""" + "[[backend_pools]]" + text.split("[[backend_pools]]")[1].replace('"plain"', '"missing"'))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f'{path}:listeners[0] "missing".client_ca: {tmp_path}/nowhere.pem: no such file' in err
    assert f'{path}:listeners[1] "garbage".client_ca: {tmp_path}/garbage.pem: not a PEM CA bundle' in err
    assert err.count(f"{path}:") == 2, err
