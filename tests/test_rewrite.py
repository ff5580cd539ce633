"""Rewrite rule sets: the pure decisions (rewrite.py) and real requests and handshakes through
the gateway (header edits with conditions and captures, URL rewrites with reroute, the 101),
plus what `fastgw check` refuses."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import textwrap
from urllib.parse import unquote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from fastgw import cli, config, rewrite

from support import AiohttpBackend, GatewayThread, free_port, gateway_toml, json_body, parse_responses

# ------------------------------------------------------------------------------------------
# Pure decisions


def compiled(text: str) -> rewrite.RuleSet:
    cfg = config.loads(gateway_toml(8080, ["127.0.0.1:1"]) + textwrap.dedent(text))
    return rewrite.compile_set(cfg.rewrite_rule_sets[0])


def request(ruleset, url=b"/", headers=(), *, tls=False, certificate=None):
    headers = [(n.encode(), v.encode()) for n, v in headers]
    return rewrite.Request(ruleset, "10.0.0.7", 40123, 8443, tls, b"GET", url, b"example.org",
                           headers, [n.lower() for n, _ in headers], certificate)


SET = """
[[rewrite_rule_sets]]
name = "edge"
  [[rewrite_rule_sets.rules]]
  name = "late"
  sequence = 200
  request_headers = { "X-Order" = "late" }
  [[rewrite_rule_sets.rules]]
  name = "early"
  sequence = 100
  conditions = [ { variable = "uri_path", pattern = "^/API/(\\\\w+)(/x)?" },
                 { variable = "http_req_X-Skip", pattern = ".", negate = true } ]
  response_headers = { "Server" = "", "X-Type" = "{var_http_resp_Content-Type_1}" }
  [rewrite_rule_sets.rules.request_headers]
  X-Order = "early"
  X-Section = "{var_uri_path_1}[{var_uri_path_2}]"
  X-From = "{var_client_ip}:{var_client_port} {var_ssl_enabled}"
  Cookie = ""
  [[rewrite_rule_sets.rules]]
  name = "by-type"
  conditions = [ { variable = "http_resp_Content-Type", pattern = "^text/(\\\\w+)", ignore_case = false } ]
  response_headers = { "X-Type" = "{var_http_resp_Content-Type_1}", "X-Req" = "{http_req_Accept}" }
"""


def test_conditions_captures_and_sequence():
    rs = compiled(SET)
    plan = rewrite.rewrite_request(request(rs, b"/api/users?q=1", [("Cookie", "a=1"),
                                                                   ("Accept", "x")]))
    assert plan is not None and plan.url is None
    # ignore_case defaults to true; group 2 did not take part: ""; the later rule wins X-Order.
    assert dict((n, v) for _, n, v in plan.headers) == {
        b"X-Order": b"late", b"X-Section": b"users[]", b"X-From": b"10.0.0.7:40123 ",
        b"Cookie": None}
    skipped = rewrite.rewrite_request(request(rs, b"/api/users", [("X-Skip", "1")]))
    assert skipped is not None and [n for _, n, _ in skipped.headers] == [b"X-Order"]
    assert rewrite.rewrite_request(request(rs, b"/api/users")).headers[0][2] == b"late"


def test_response_rules_read_the_response_and_the_original_request():
    rs = compiled(SET)
    assert [r.name for r in rs.request_rules] == ["early", "late"]
    assert [r.name for r in rs.response_rules] == ["early", "by-type"]
    source = request(rs, b"/api/users", [("Accept", "a"), ("Accept", "b")])
    html = [(b"Content-Type", b"text/html"), (b"Server", b"x")]
    edits = rewrite.rewrite_response(source, html, [b"content-type", b"server"])
    # "early" runs first (its X-Type capture names no group of its own: ""), "by-type" wins.
    assert edits == ((b"server", b"Server", None), (b"x-type", b"X-Type", b"html"),
                     (b"x-req", b"X-Req", b"a, b"))
    assert source.response is None
    # Case-sensitive pattern: TEXT/html does not match.
    upper = rewrite.rewrite_response(source, [(b"content-type", b"TEXT/html")], [b"content-type"])
    assert [n for _, n, _ in upper] == [b"Server", b"X-Type"]


def test_apply_headers_replaces_every_value_and_appends():
    headers = [(b"A", b"1"), (b"B", b"2"), (b"a", b"3")]
    new, lnames = rewrite.apply_headers(headers, [b"a", b"b", b"a"],
                                        ((b"a", b"A", b"x"), (b"b", b"B", None)))
    assert new == [(b"A", b"x")] and lnames == [b"a"]
    assert headers == [(b"A", b"1"), (b"B", b"2"), (b"a", b"3")]  # never edited in place


def test_url_rewrites_quote_and_keep_what_is_not_set():
    rs = compiled("""
[[rewrite_rule_sets]]
name = "u"
  [[rewrite_rule_sets.rules]]
  name = "path"
  conditions = [ { variable = "uri_path", pattern = "^/old/(.*)$" } ]
  url = { path = "/new/{var_uri_path_1}", reroute = true }
  [[rewrite_rule_sets.rules]]
  name = "query"
  sequence = 200
  conditions = [ { variable = "query_string", pattern = "^drop" } ]
  url = { query = "" }
  [[rewrite_rule_sets.rules]]
  name = "header"
  sequence = 300
  conditions = [ { variable = "http_req_X-To", pattern = "(.+)" } ]
  url = { path = "/to/{var_http_req_X-To_1}", query = "from={var_uri_path}" }
""")
    plan = rewrite.rewrite_request(request(rs, b"/old/a/b?x=1"))
    assert plan.url == b"/new/a/b?x=1" and plan.reroute and plan.headers == ()
    assert rewrite.rewrite_request(request(rs, b"/old/a?drop=1")).url == b"/new/a"
    assert rewrite.rewrite_request(request(rs, b"/keep?drop=1#f")).url == b"/keep"
    assert rewrite.rewrite_request(request(rs, b"/keep?x")) is None
    odd = rewrite.rewrite_request(request(rs, b"/p", [("X-To", "a b\u00e9")]))
    assert odd.url == b"/to/a%20b%C3%A9?from=/p" and not odd.reroute


def test_variables():
    cert = rewrite.certificate_variables(None, None, "NONE")
    source = request(None, b"/p?q#f", [("Host", "h")], tls=True, certificate=cert)
    got = {name: source.get(name) for name in rewrite.SERVER_VARIABLES + rewrite.CERTIFICATE_VARIABLES}
    assert got == {
        "client_ip": "10.0.0.7", "client_port": "40123", "host": "example.org",
        "http_method": "GET", "request_uri": "/p?q", "uri_path": "/p", "query_string": "q",
        "server_port": "8443", "ssl_enabled": "On", "client_certificate": "",
        "client_certificate_subject": "", "client_certificate_issuer": "",
        "client_certificate_serial": "", "client_certificate_fingerprint": "",
        "client_certificate_verification": "NONE"}
    assert source.get("http_req_missing") == "" and source.get("http_resp_server") == ""


def test_certificate_variables_and_names():
    name = ((("countryName", "FR"),), (("organizationName", "A, B"),),
            (("commonName", " x+y "), ("emailAddress", "e@x")))
    assert rewrite.distinguished_name(name) == r"CN=\ x\+y\ +emailAddress=e@x,O=A\, B,C=FR"
    der = b"0\x03\x02\x01\x01"
    values = rewrite.certificate_variables(der, {"subject": name, "issuer": name[:1],
                                                 "serialNumber": "0A1B"}, "SUCCESS")
    assert values["client_certificate_fingerprint"] == hashlib.sha1(der).hexdigest()
    assert values["client_certificate_serial"] == "0A1B"
    assert values["client_certificate_issuer"] == "C=FR"
    assert unquote(values["client_certificate"]).startswith("-----BEGIN CERTIFICATE-----\n")
    assert "\n" not in values["client_certificate"]


def test_substituted_control_characters_are_dropped():
    rs = compiled("""
[[rewrite_rule_sets]]
name = "c"
  [[rewrite_rule_sets.rules]]
  name = "subject"
  request_headers = { "X-Subject" = "<{var_client_certificate_subject}>" }
""")
    assert rs.needs_certificate
    source = request(rs, certificate={"client_certificate_subject": "CN=a\r\nX-Evil: 1"})
    assert rewrite.rewrite_request(source).headers == ((b"x-subject", b"X-Subject",
                                                        b"<CN=aX-Evil: 1>"),)


@pytest.mark.parametrize("text, why", [
    ("{var_nope}", "unknown variable 'nope'"),
    ("{var_uri_path_1}", "no condition on 'uri_path' in this rule"),
    ("{var_query_string_2}", "the condition on 'query_string' has 1 capture group(s)"),
    ("{var_http_req_Bad Header}", None),  # not a placeholder (a space): literal text
    ("{http_resp_Server}", None),
    ("{var_client_certificate_serial}", None),
])
def test_template_problems(text, why):
    parsed = rewrite.parse_template(text, {"query_string": 1})
    if why is None:
        assert isinstance(parsed, rewrite.Template)
    else:
        assert isinstance(parsed, str) and why in parsed


# ------------------------------------------------------------------------------------------
# Through the gateway


def get(port: int, target: str, headers: dict | None = None) -> tuple[int, dict, bytes, int]:
    """One request on a raw socket: (status, headers lower-case, body, the client's port)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        lines = [f"GET {target} HTTP/1.1", "Host: example.org", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        client_port = s.getsockname()[1]
    status, response_headers, body = parse_responses(data)[0]
    return status, {k: ", ".join(v) for k, v in response_headers.items()}, body, client_port


@pytest.fixture
def backends():
    started = [AiohttpBackend("a"), AiohttpBackend("b")]
    yield started
    for b in started:
        b.stop()


EDGE = """
[[rewrite_rule_sets]]
name = "edge"
  [[rewrite_rule_sets.rules]]
  name = "tag"
  sequence = 10
  conditions = [ { variable = "uri_path", pattern = "^/api/(\\\\w+)" } ]
  request_headers = { "X-Section" = "{var_uri_path_1}", "X-Client-Port" = "{var_client_port}", "X-Drop" = "" }
  [[rewrite_rule_sets.rules]]
  name = "strip"
  sequence = 20
  conditions = [ { variable = "http_resp_Content-Type", pattern = "^application/(json)" } ]
  response_headers = { "Server" = "", "X-Kind" = "{var_http_resp_Content-Type_1}", "X-Seen" = "{http_req_X-Drop}" }
  [[rewrite_rule_sets.rules]]
  name = "unless-skipped"
  sequence = 30
  conditions = [ { variable = "http_req_X-Skip", pattern = ".", negate = true } ]
  response_headers = { "Strict-Transport-Security" = "max-age=31536000" }
"""


def test_headers_set_and_deleted_with_conditions_and_captures(backends):
    backend = backends[0]
    port = free_port()
    gw = GatewayThread(gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                                    extra='rewrite_rule_set = "edge"') + EDGE)
    try:
        status, headers, _, client_port = get(port, "/api/users?x=1", {"X-Drop": "secret"})
        assert status == 200
        seen = backend.requests[-1]["headers"]
        assert seen["X-Section"] == "users" and seen["X-Client-Port"] == str(client_port)
        assert "X-Drop" not in seen
        assert "server" not in headers and headers["x-kind"] == "json"
        assert headers["x-seen"] == "secret"  # conditions and values read the original request
        assert headers["strict-transport-security"] == "max-age=31536000"
        assert headers["x-server"] == "a"

        status, headers, _, _ = get(port, "/status/404", {"X-Skip": "1", "X-Drop": "kept"})
        assert status == 404
        seen = backend.requests[-1]["headers"]
        assert "X-Section" not in seen and seen["X-Drop"] == "kept"
        assert "server" in headers and "x-kind" not in headers  # text/plain
        assert "strict-transport-security" not in headers
    finally:
        gw.stop()


def test_path_rewrite_with_reroute_and_query(backends):
    a, b = backends
    port = free_port()
    text = f"""
[gateway]
header_timeout = 2

[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "a"
servers = ["127.0.0.1:{a.port}"]

[[backend_pools]]
name = "b"
servers = ["127.0.0.1:{b.port}"]

[[backend_settings]]
name = "s"

[[rules]]
name = "paths"
type = "path_based"
listener = "web"
backend_pool = "a"
backend_settings = "s"
rewrite_rule_set = "move"
  [[rules.paths]]
  paths = ["/new/*"]
  backend_pool = "b"
  [[rules.paths]]
  paths = ["/stay/*"]
  rewrite_rule_set = "stay"

[[rewrite_rule_sets]]
name = "move"
  [[rewrite_rule_sets.rules]]
  name = "old-to-new"
  conditions = [ {{ variable = "uri_path", pattern = "^/old/(.*)" }} ]
  url = {{ path = "/new/{{var_uri_path_1}}", reroute = true }}
  [[rewrite_rule_sets.rules]]
  name = "drop-query"
  sequence = 200
  conditions = [ {{ variable = "query_string", pattern = "^drop" }} ]
  url = {{ query = "" }}
  [[rewrite_rule_sets.rules]]
  name = "query"
  sequence = 300
  conditions = [ {{ variable = "query_string", pattern = "^id=(\\\\d+)$" }} ]
  url = {{ query = "user={{var_query_string_1}}&v=2" }}

[[rewrite_rule_sets]]
name = "stay"
  [[rewrite_rule_sets.rules]]
  name = "no-reroute"
  url = {{ path = "/new/from-stay{{var_uri_path}}" }}
"""
    gw = GatewayThread(text)
    try:
        body = json_body(get(port, "/old/thing?a=1")[2])
        assert (body["server"], body["path"]) == ("b", "/new/thing?a=1")
        assert json_body(get(port, "/old/x?drop=1")[2])["path"] == "/new/x"
        body = json_body(get(port, "/other?id=42")[2])
        assert (body["server"], body["path"]) == ("a", "/other?user=42&v=2")
        # Without reroute the rewritten path goes to the route that matched the original.
        body = json_body(get(port, "/stay/p")[2])
        assert (body["server"], body["path"]) == ("a", "/new/from-stay/stay/p")
        assert a.requests[-1]["headers"]["X-Original-Host"] == "example.org"
    finally:
        gw.stop()


def test_handshake_request_rewrite_and_101_response_rewrite(backends):
    backend = backends[0]
    port = free_port()
    gw = GatewayThread(gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                                    extra='rewrite_rule_set = "ws"') + """
[[rewrite_rule_sets]]
name = "ws"
  [[rewrite_rule_sets.rules]]
  name = "tag"
  conditions = [ { variable = "http_req_Upgrade", pattern = "^websocket$" } ]
  request_headers = { "X-Handshake" = "{var_http_method} {var_request_uri}" }
  response_headers = { "X-Gateway" = "fastgw", "Server" = "" }
""")

    async def go():
        async with connect(f"ws://127.0.0.1:{port}/ws?room=1", proxy=None) as ws:
            await ws.send("hello")
            echoed = await ws.recv()
            return echoed, ws.response.headers
    try:
        echoed, headers = asyncio.run(asyncio.wait_for(go(), 10))
        assert echoed == "hello"
        assert headers["X-Gateway"] == "fastgw" and "Server" not in headers
        assert "Sec-WebSocket-Accept" in headers
        assert backend.requests[-1]["headers"]["X-Handshake"] == "GET /ws?room=1"
    finally:
        gw.stop()


def test_a_rewritten_handshake_still_meets_the_settings_websocket_policies(backends):
    # The rule set rewrites the handshake; the settings' origin allowlist still applies to it.
    backend = backends[0]
    port = free_port()
    gw = GatewayThread(gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                                    extra='rewrite_rule_set = "ws"',
                                    extra_settings='websocket_allowed_origins = '
                                                   '["https://chat.example.com"]') + """
[[rewrite_rule_sets]]
name = "ws"
  [[rewrite_rule_sets.rules]]
  name = "tag"
  request_headers = { "X-Handshake" = "yes" }
""")

    async def go(origin):
        async with connect(f"ws://127.0.0.1:{port}/ws", proxy=None, origin=origin) as ws:
            await ws.send("hello")
            return await ws.recv()
    try:
        assert asyncio.run(asyncio.wait_for(go("https://chat.example.com"), 10)) == "hello"
        assert backend.requests[-1]["headers"]["X-Handshake"] == "yes"
        seen = len(backend.requests)
        with pytest.raises(InvalidStatus) as err:
            asyncio.run(asyncio.wait_for(go("https://evil.example.com"), 10))
        assert err.value.response.status_code == 403 and len(backend.requests) == seen
    finally:
        gw.stop()


# ------------------------------------------------------------------------------------------
# fastgw check


def test_check_refuses_bad_rewrite_sets(tmp_path, capsys):
    text = gateway_toml(8080, ["127.0.0.1:1"], extra='rewrite_rule_set = "edgy"') + """
[[rewrite_rule_sets]]
name = "edge"
  [[rewrite_rule_sets.rules]]
  name = "upgrade"
  conditions = [ { variable = "uri_pat", pattern = "(" },
                 { variable = "http_resp_Server", pattern = "x" } ]
  response_headers = { "Sec-WebSocket-Accept" = "", "Keep-Alive" = "", "X-Fine" = "1" }
  [rewrite_rule_sets.rules.request_headers]
  Upgrade = "h2c"
  Connection = ""
  Sec-WebSocket-Protocol = "x"
  Transfer-Encoding = ""
  Host = "h"
  X-Ok = "{var_uri_path_1}"
  [[rewrite_rule_sets.rules]]
  name = "url"
  url = { path = "relative", reroute = true, bogus = 1 }
  [[rewrite_rule_sets.rules]]
  name = "nothing"
"""
    path = tmp_path / "gw.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    rule = 'rewrite_rule_sets[0] "edge".rules[0] "upgrade"'
    for line in [
        'rules[0] "rule".rewrite_rule_set: no rewrite rule set named \'edgy\'; did you mean \'edge\'?',
        f"{rule}.conditions[0].variable: unknown variable 'uri_pat'",
        f"{rule}.conditions[0].pattern: '(' is not a regular expression",
        f"{rule}.request_headers.Upgrade: 'Upgrade' cannot be rewritten (hop-by-hop)",
        f"{rule}.request_headers.Connection: 'Connection' cannot be rewritten (hop-by-hop)",
        f"{rule}.request_headers.Sec-WebSocket-Protocol: 'Sec-WebSocket-Protocol' cannot be "
        "rewritten (a WebSocket handshake header)",
        f"{rule}.request_headers.Transfer-Encoding: 'Transfer-Encoding' cannot be rewritten",
        f"{rule}.request_headers.Host: 'Host' cannot be rewritten (set by the gateway)",
        f"{rule}.request_headers.X-Ok: {{var_uri_path_1}}: no condition on 'uri_path'",
        f"{rule}.response_headers.Sec-WebSocket-Accept: 'Sec-WebSocket-Accept' cannot be rewritten",
        f"{rule}.response_headers.Keep-Alive: 'Keep-Alive' cannot be rewritten (hop-by-hop)",
        'rewrite_rule_sets[0] "edge".rules[1] "url".url.path: \'relative\' must start with \'/\'',
        'rewrite_rule_sets[0] "edge".rules[1] "url".url.bogus: unknown key',
        'rewrite_rule_sets[0] "edge".rules[2] "nothing".request_headers: the rule has no action',
    ]:
        assert f"{path}:{line}" in err, line
    assert "Traceback" not in err


def test_check_refuses_request_actions_on_response_conditions(tmp_path, capsys):
    text = gateway_toml(8080, ["127.0.0.1:1"]) + """
[[rewrite_rule_sets]]
name = "edge"
  [[rewrite_rule_sets.rules]]
  name = "late"
  conditions = [ { variable = "http_resp_Server", pattern = "x" } ]
  request_headers = { "X-A" = "1" }
"""
    path = tmp_path / "gw.toml"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2
    assert ('rewrite_rule_sets[0] "edge".rules[0] "late".conditions: a rule with an http_resp_ '
            "condition can only set response_headers") in capsys.readouterr().err
