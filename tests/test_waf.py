"""The WAF engine (fastgw.waf) with the real OWASP CRS loaded into the real libmodsecurity.

Needs the `libmodsecurity` binding (pip install 'fastgw[waf]') and Debian's modsecurity-crs
(CRS 3.3.4 in /usr/share/modsecurity-crs, crs-setup.conf in /etc/modsecurity/crs); other paths
with FASTGW_CRS_PATH / FASTGW_CRS_SETUP. Without them the module is skipped with the reason,
or fails when FASTGW_REQUIRE_WAF=1 (CI sets it, so a missing install cannot pass quietly).
"""

from __future__ import annotations

import glob
import json
import os
import sys

import pytest

from fastgw.config import WafConfig
from fastgw.waf import (
    INSTALL_HINT,
    Verdict,
    Waf,
    WafLoadError,
    check,
    firewall_log_records,
    waf_available,
)

CRS_PATH = os.environ.get("FASTGW_CRS_PATH", "/usr/share/modsecurity-crs")
CRS_SETUP = os.environ.get("FASTGW_CRS_SETUP", "/etc/modsecurity/crs/crs-setup.conf")

_missing = waf_available()
if not _missing and not glob.glob(os.path.join(CRS_PATH, "rules", "REQUEST-*.conf")):
    _missing = f"no OWASP CRS rules in {CRS_PATH}/rules: apt-get install modsecurity-crs"
if not _missing and not os.path.isfile(CRS_SETUP):
    _missing = f"no crs-setup.conf at {CRS_SETUP}: apt-get install modsecurity-crs"
if _missing:
    if os.environ.get("FASTGW_REQUIRE_WAF") == "1":
        raise RuntimeError(f"FASTGW_REQUIRE_WAF=1 but the WAF cannot run: {_missing}")
    print(f"\ntests/test_waf.py SKIPPED: {_missing}", file=sys.stderr)
    pytest.skip(f"WAF tests need libmodsecurity and the CRS: {_missing}", allow_module_level=True)


def config(**kw) -> WafConfig:
    kw.setdefault("mode", "prevention")
    kw.setdefault("crs_path", CRS_PATH)
    kw.setdefault("crs_setup", CRS_SETUP)
    return WafConfig(**kw)


@pytest.fixture(scope="module")
def prevention() -> Waf:
    waf = Waf(config(mode="prevention"))
    yield waf
    waf.close()


@pytest.fixture(scope="module")
def detection() -> Waf:
    waf = Waf(config(mode="detection"))
    yield waf
    waf.close()


CHROME = [
    (b"Host", b"shop.example.com"),
    (b"Connection", b"keep-alive"),
    (b"sec-ch-ua", b'"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Windows"'),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"User-Agent", b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    b"Chrome/124.0.0.0 Safari/537.36"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
                b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"),
    (b"Sec-Fetch-Site", b"same-origin"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"Sec-Fetch-User", b"?1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Referer", b"https://shop.example.com/catalog?page=2&sort=price"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Accept-Language", b"en-US,en;q=0.9,fr;q=0.8"),
    (b"Cookie", b"_ga=GA1.1.123456789.1700000000; session=eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWxpY2UifQ.c2ln; "
                b"cart=3; theme=dark"),
]
FIREFOX = [
    (b"Host", b"shop.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    (b"Accept-Language", b"en-GB,en;q=0.7,de;q=0.3"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"DNT", b"1"),
    (b"Connection", b"keep-alive"),
    (b"Cookie", b"lang=en-GB; consent=%7B%22ads%22%3Afalse%2C%22stats%22%3Atrue%7D"),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"Sec-Fetch-Site", b"none"),
    (b"Sec-Fetch-User", b"?1"),
    (b"If-None-Match", b'W/"5e-1a2b3c"'),
    (b"Cache-Control", b"max-age=0"),
]
WEBSOCKET = [
    (b"Host", b"chat.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"),
    (b"Accept", b"*/*"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Origin", b"https://chat.example.com"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
    (b"Connection", b"keep-alive, Upgrade"),
    (b"Cookie", b"session=abc123def456"),
    (b"Sec-Fetch-Dest", b"empty"),
    (b"Sec-Fetch-Mode", b"websocket"),
    (b"Sec-Fetch-Site", b"same-origin"),
    (b"Pragma", b"no-cache"),
    (b"Cache-Control", b"no-cache"),
    (b"Upgrade", b"websocket"),
]


def replace(headers, name: bytes, value: bytes):
    out = [(k, v) for k, v in headers if k.lower() != name.lower()]
    return out + [(name, value)]


def form_headers(body: bytes, content_type: bytes = b"application/x-www-form-urlencoded"):
    return [(k, v) for k, v in FIREFOX if k not in (b"Upgrade-Insecure-Requests", b"If-None-Match")] + [
        (b"Content-Type", content_type),
        (b"Content-Length", str(len(body)).encode()),
        (b"Origin", b"https://shop.example.com"),
    ]


def inspect(waf: Waf, uri=b"/", headers=CHROME, method=b"GET", body=None, **kw) -> Verdict:
    return waf.inspect(
        client_ip="203.0.113.7", client_port=51234, server_ip="127.0.0.1", server_port=8080,
        method=method, uri=uri, http_version="1.1", headers=headers, body=body, **kw,
    )


SQLI_FORM = b"user=admin&password=x%27%20or%20%271%27%3D%271"
XSS_FORM = b"comment=%3Cimg%20src%3Dx%20onerror%3Dalert(document.cookie)%3E"
ATTACKS = {
    "sqli-query": dict(uri=b"/products?id=1%27%20UNION%20SELECT%20password%20FROM%20users--"),
    "xss-query": dict(uri=b"/search?q=%3Cscript%3Ealert(1)%3C/script%3E"),
    "sqli-user-agent": dict(headers=replace(CHROME, b"User-Agent", b"Mozilla/5.0' OR 1=1 --")),
    "xss-referer": dict(headers=replace(CHROME, b"Referer", b"https://x.example/<script>alert(1)</script>")),
    "sqli-cookie": dict(headers=replace(CHROME, b"Cookie", b"session=1' UNION SELECT password FROM users--")),
    "xss-cookie": dict(headers=replace(CHROME, b"Cookie", b"pref=<script>alert(document.cookie)</script>")),
    "sqli-form": dict(method=b"POST", uri=b"/login", headers=form_headers(SQLI_FORM), body=SQLI_FORM),
    "xss-form": dict(method=b"POST", uri=b"/comment", headers=form_headers(XSS_FORM), body=XSS_FORM),
}
WHERE = {  # where ModSecurity must say it found each attack
    "sqli-query": "ARGS:id", "xss-query": "ARGS:q", "sqli-user-agent": "REQUEST_HEADERS:User-Agent",
    "xss-referer": "REQUEST_HEADERS:Referer", "sqli-cookie": "REQUEST_COOKIES:session",
    "xss-cookie": "REQUEST_COOKIES:pref", "sqli-form": "ARGS:password", "xss-form": "ARGS:comment",
}


# ------------------------------------------------------------------------------------------
# loading


def test_the_crs_really_loaded(prevention):
    assert prevention.crs_rule_count > 400, prevention.describe()
    assert any(os.path.basename(p).startswith("REQUEST-942") for p in prevention.files)
    assert not any(os.path.basename(p).startswith("RESPONSE-95") for p in prevention.files)
    if CRS_PATH == "/usr/share/modsecurity-crs":  # Debian's package
        assert prevention.crs_version == "3.3.4"
    assert "OWASP_CRS/" in prevention.describe()
    # The wheel has no GeoIP: REQUEST-910 cannot load, and says why.
    for path, reason in prevention.skipped:
        assert "REQUEST-910" in path and "GeoIP" in reason


# ------------------------------------------------------------------------------------------
# attacks: blocked in prevention, logged in detection


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_blocked_in_prevention(prevention, name):
    verdict = inspect(prevention, transaction_id=f"tx-{name}", **ATTACKS[name])
    assert verdict.blocked and verdict.would_block
    assert verdict.status == 403
    assert verdict.anomaly_score >= 5
    assert verdict.transaction_id == f"tx-{name}"
    family = 942 if name.startswith("sqli") else 941
    assert any(m.rule_id // 1000 == family for m in verdict.matches), verdict.matches
    assert any(WHERE[name] in m.data for m in verdict.matches if m.rule_id // 1000 == family)

    records = firewall_log_records(verdict)
    json.dumps(records)
    by_id = {r["ruleId"]: r for r in records}
    assert by_id["949110"]["action"] == "Blocked"
    attack = [r for r in records if r["ruleId"].startswith(str(family))]
    assert attack and all(r["action"] == "Matched" for r in attack)
    for r in records:
        assert r["clientIp"] == "203.0.113.7"
        assert r["requestUri"] == verdict.uri
        assert r["ruleSetType"] == "OWASP_CRS"
        assert r["ruleSetVersion"] == prevention.crs_version
        assert r["hostname"] in ("shop.example.com", "x.example")
        assert r["transactionId"] == f"tx-{name}"
        assert r["policyMode"] == "Prevention"
        assert r["message"]
        assert r["details"]["file"].endswith(".conf") and int(r["details"]["line"]) > 0
    assert WHERE[name] in attack[0]["details"]["data"]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_passes_and_is_logged_in_detection(detection, name):
    verdict = inspect(detection, **ATTACKS[name])
    assert not verdict.blocked
    assert verdict.would_block and verdict.status == 403
    records = firewall_log_records(verdict)
    actions = {r["ruleId"]: r["action"] for r in records}
    assert actions.pop("949110") == "Detected"
    assert actions and set(actions.values()) == {"Matched"}
    assert {r["policyMode"] for r in records} == {"Detection"}


def test_websocket_handshake(prevention, detection):
    clean = inspect(prevention, uri=b"/ws?room=lobby&token=abc123", headers=WEBSOCKET)
    assert clean.clean and not clean.blocked, clean.matches
    attack = inspect(prevention, uri=b"/ws?room=lobby%27%20UNION%20SELECT%20NULL,NULL--", headers=WEBSOCKET)
    assert attack.blocked and attack.status == 403
    xss = inspect(detection, uri=b"/ws?room=%3Csvg/onload=alert(1)%3E", headers=WEBSOCKET)
    assert not xss.blocked and xss.would_block


def test_verdict_matches_modsecurity_itself(prevention):
    """The same requests through a plain RulesSet loaded the way owasp-crs.load does (minus the
    GeoIP file): same decision, same rules."""
    from libmodsecurity import ModSecurity, RulesSet, Transaction

    rules = RulesSet()
    assert rules.load("SecRuleEngine On\nSecRequestBodyAccess On\n") >= 0
    assert rules.load_from_uri(CRS_SETUP) > 0
    for path in sorted(glob.glob(os.path.join(CRS_PATH, "rules", "REQUEST-*.conf"))):
        if "REQUEST-910" not in path:
            assert rules.load_from_uri(path) >= 0, rules.get_parser_error()
    engine = ModSecurity()
    engine.set_rule_message_callback(lambda m: None)
    try:
        for name, request in [*ATTACKS.items(), ("clean", dict(uri=b"/a?b=c")),
                              ("ws-clean", dict(uri=b"/ws", headers=WEBSOCKET))]:
            request = {"uri": b"/", "headers": CHROME, "method": b"GET", "body": None, **request}
            t = Transaction(engine, rules)
            t.process_connection("203.0.113.7", 51234, "127.0.0.1", 8080)
            t.process_uri(request["uri"], request["method"], "1.1")
            for k, v in request["headers"]:
                t.add_request_header(k, v)
            t.process_request_headers()
            if request["body"]:
                t.append_request_body(request["body"])
            t.process_request_body()
            it = t.intervention()
            theirs = {m.rule_id for m in t.get_rule_messages()}
            ours = inspect(prevention, **request)
            assert ours.blocked == bool(it and it.disruptive), name
            assert {m.rule_id for m in ours.matches} == theirs, name
    finally:
        engine.set_rule_message_callback(None)


# ------------------------------------------------------------------------------------------
# clean traffic: the common false positives of paranoia level 1


CLEAN = {
    "chrome-get": dict(uri=b"/products/42?color=blue&size=m&utm_source=newsletter", headers=CHROME),
    "firefox-get": dict(uri=b"/", headers=FIREFOX),
    "search-with-apostrophe": dict(uri=b"/search?q=it%27s%20a%20dog%27s%20life&page=2", headers=FIREFOX),
    "xhr-json-get": dict(uri=b"/api/cart?ids=1,2,3",
                         headers=replace(CHROME, b"Accept", b"application/json, text/plain, */*")),
    "image": dict(uri=b"/static/img/logo.svg?v=3", headers=replace(CHROME, b"Accept", b"image/avif,image/webp,*/*")),
    "json-post": dict(
        method=b"POST", uri=b"/api/orders",
        headers=form_headers(b"x" * 96, b"application/json"),
        body=b'{"item": 42, "qty": 2, "note": "please ring the bell, it\'s broken", "tags": ["gift", "fragile"]}',
    ),
    "form-post": dict(
        method=b"POST", uri=b"/account/profile",
        headers=form_headers(b"x" * 80),
        body=b"name=Jane+O%27Neil&email=jane%40example.com&bio=Hello%2C+world%21&newsletter=on",
    ),
    "bearer-token": dict(
        uri=b"/api/me",
        headers=CHROME + [(b"Authorization", b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig-_x")],
    ),
}


@pytest.mark.parametrize("name", list(CLEAN))
def test_clean_requests_pass_at_paranoia_level_1(prevention, name):
    verdict = inspect(prevention, **CLEAN[name])
    assert verdict.clean and not verdict.blocked and not verdict.would_block, verdict.matches
    assert verdict.status == 0 and verdict.anomaly_score == 0
    assert firewall_log_records(verdict) == []


# ------------------------------------------------------------------------------------------
# tuning: threshold, paranoia level, disabled rules, exclusions


def test_anomaly_threshold():
    waf = Waf(config(anomaly_threshold=10))
    try:
        low = inspect(waf, uri=b"/?q=1%20--")  # 942100 only: score 5
        assert not low.blocked and not low.would_block
        assert low.anomaly_score == 5
        assert [r["action"] for r in firewall_log_records(low)] == ["Matched"]
        high = inspect(waf, **ATTACKS["xss-query"])  # three XSS rules: 15
        assert high.blocked and high.anomaly_score >= 10
    finally:
        waf.close()


def test_paranoia_level(prevention):
    request = dict(uri=b"/items?id=1%20AND%201")
    assert inspect(prevention, **request).clean
    waf = Waf(config(paranoia_level=2))
    try:
        verdict = inspect(waf, **request)
        assert verdict.blocked
        assert any(m.rule_id == 942400 for m in verdict.matches)
    finally:
        waf.close()


def test_disabled_rules(prevention):
    assert inspect(prevention, uri=b"/?q=1%20--").blocked
    waf = Waf(config(disabled_rules=(942100,)))
    try:
        verdict = inspect(waf, uri=b"/?q=1%20--")
        assert verdict.clean and not verdict.blocked
        assert inspect(waf, **ATTACKS["xss-query"]).blocked  # the rest still works
    finally:
        waf.close()


@pytest.mark.parametrize("target,attack", [
    ("REQUEST_HEADERS:User-Agent", "sqli-user-agent"),
    ("REQUEST_COOKIES:session", "sqli-cookie"),
    ("ARGS:password", "sqli-form"),
    ("ARGS:id", "sqli-query"),
])
def test_exclusions(prevention, target, attack):
    assert inspect(prevention, **ATTACKS[attack]).blocked
    waf = Waf(config(exclusions=(target,)))
    try:
        verdict = inspect(waf, **ATTACKS[attack])
        assert not verdict.blocked and not verdict.would_block, verdict.matches
        assert inspect(waf, **ATTACKS["xss-cookie"]).blocked  # only that target is left out
    finally:
        waf.close()


# Attacks in the names (not the values) of an argument and of a cookie: the CRS inspects
# ARGS_NAMES and REQUEST_COOKIES_NAMES too.
NAME_ATTACKS = {
    "xss-arg-name": dict(uri=b"/search?q1%3Cscript%3Ealert(1)%3C/script%3E=1"),
    "xss-cookie-name": dict(headers=replace(CHROME, b"Cookie", b"x<script>alert(1)</script>=1")),
}


@pytest.mark.parametrize("target,attack", [
    ("ARGS_NAMES:/^q1/", "xss-arg-name"),
    ("REQUEST_COOKIES_NAMES:/^x/", "xss-cookie-name"),
])
def test_exclusions_of_names(prevention, target, attack):
    """The *_NAMES collections (the cloud gateway's "...Keys" exclusions) load into
    libmodsecurity and leave those names out; config.py accepts them with the same validator."""
    verdict = inspect(prevention, **NAME_ATTACKS[attack])
    assert verdict.blocked and any("_NAMES:" in m.data for m in verdict.matches), verdict.matches
    assert check(config(exclusions=(target,))) == []
    waf = Waf(config(exclusions=(target,)))
    try:
        verdict = inspect(waf, **NAME_ATTACKS[attack])
        assert not verdict.blocked and not verdict.would_block, verdict.matches
        assert inspect(waf, **ATTACKS["xss-cookie"]).blocked  # only those names are left out
    finally:
        waf.close()


# ------------------------------------------------------------------------------------------
# bodies


def test_body_over_limit():
    body = b"comment=" + b"a" * 200
    chunks = [body[:100], body[100:]]
    prev = Waf(config(max_request_body_size=64))
    det = Waf(config(mode="detection", max_request_body_size=64))
    try:
        assert prev.body_limit == 64
        # The proxy says the body was longer than the limit: 413 at once in prevention.
        verdict = inspect(prev, method=b"POST", headers=form_headers(body), body=body[:64], body_truncated=True)
        assert verdict.blocked and verdict.status == 413 and verdict.body_over_limit
        assert not verdict.matches
        (record,) = firewall_log_records(verdict)
        assert record["ruleId"] == "request-body-limit" and record["action"] == "Blocked"
        assert prev.rule_matches[("request-body-limit", "Blocked")] == 1
        # More than the limit handed over (as chunks): the same.
        assert inspect(prev, method=b"POST", headers=form_headers(body), body=chunks).status == 413
        # Detection: passes, the first bytes are inspected, the limit is logged.
        attack = b"comment=%3Cscript%3Ealert(1)%3C/script%3E&pad=" + b"a" * 200
        verdict = inspect(det, method=b"POST", headers=form_headers(attack), body=attack)
        assert not verdict.blocked and verdict.body_over_limit and verdict.would_block
        actions = {r["ruleId"]: r["action"] for r in firewall_log_records(verdict)}
        assert actions["request-body-limit"] == "Detected" and actions["949110"] == "Detected"
        assert any(a == "Matched" for a in actions.values())
        # Within the limit: nothing special.
        assert inspect(prev, method=b"POST", headers=form_headers(b"a=1"), body=b"a=1").clean
    finally:
        prev.close()
        det.close()


def test_json_body(prevention):
    body = b'{"order": {"note": "1\' UNION SELECT password FROM users--"}}'
    verdict = inspect(prevention, method=b"POST", uri=b"/api", headers=form_headers(body, b"application/json"),
                      body=body)
    assert verdict.blocked and any("ARGS:json.order.note" in m.data for m in verdict.matches)
    broken = b'{"order": '
    verdict = inspect(prevention, method=b"POST", uri=b"/api", headers=form_headers(broken, b"application/json"),
                      body=broken)
    assert verdict.blocked and verdict.status == 400
    assert [m.rule_id for m in verdict.matches] == [200002]
    assert firewall_log_records(verdict)[0]["ruleSetType"] == "ModSecurity"


def test_body_not_inspected_when_request_body_check_is_off():
    waf = Waf(config(request_body_check=False))
    try:
        assert waf.body_limit is None
        request = dict(ATTACKS["sqli-form"])
        verdict = inspect(waf, **request, body_truncated=True)
        assert verdict.clean and not verdict.blocked
        # Phase 2 still runs (ModSecurity v3 skips it when SecRequestBodyAccess is Off).
        assert inspect(waf, **ATTACKS["sqli-query"]).blocked
        xml = b"<a><b>"
        assert inspect(waf, method=b"POST", headers=form_headers(xml, b"text/xml")).clean
    finally:
        waf.close()


# ------------------------------------------------------------------------------------------
# custom rules


CUSTOM = """# fastgw test rules
SecRule REQUEST_HEADERS:X-Teapot "@streq yes" \\
    "id:10001,phase:1,deny,status:418,log,msg:'I am a teapot'"
SecRule ARGS:next "@beginsWith http" "id:10002,phase:1,redirect:https://shop.example.com/,log,msg:'open redirect'"
SecRule REQUEST_HEADERS:X-Debug "@streq on" "id:10003,phase:1,deny,log,msg:'no debugging'"
"""


def test_custom_rules(tmp_path):
    path = tmp_path / "custom.conf"
    path.write_text(CUSTOM)
    prev = Waf(config(custom_rules=(str(path),)))
    det = Waf(config(mode="detection", custom_rules=(str(path),)))
    try:
        teapot = CHROME + [(b"X-Teapot", b"yes")]
        verdict = inspect(prev, headers=teapot)
        assert verdict.blocked and verdict.status == 418
        (record,) = firewall_log_records(verdict)
        assert record["ruleId"] == "10001" and record["action"] == "Blocked"
        assert record["ruleSetType"] == "Custom" and record["message"] == "I am a teapot"
        assert record["details"]["file"] == str(path) and record["details"]["line"] == "2"

        verdict = inspect(det, headers=teapot)
        assert not verdict.blocked and verdict.would_block and verdict.status == 418
        assert firewall_log_records(verdict)[0]["action"] == "Detected"

        redirect = inspect(prev, uri=b"/login?next=http%3A%2F%2Fevil.example%2F")
        assert redirect.blocked and redirect.location == "https://shop.example.com/"
        assert 300 <= redirect.status < 400
        assert inspect(prev, headers=CHROME + [(b"X-Debug", b"on")]).status == 403
        assert inspect(prev, headers=CHROME + [(b"X-Teapot", b"no")]).clean
    finally:
        prev.close()
        det.close()
    # A custom rule can be disabled like any other.
    waf = Waf(config(custom_rules=(str(path),), disabled_rules=(10001,)))
    try:
        assert inspect(waf, headers=CHROME + [(b"X-Teapot", b"yes")]).clean
    finally:
        waf.close()


# ------------------------------------------------------------------------------------------
# check()


def test_check_reports_a_broken_rule_file_with_file_and_line(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text('# ok so far\n\nSecRule ARGS "@rx a" "id:10010,phase:1,deny,denyy"\n')
    problems = check(config(custom_rules=(str(broken),)))
    assert len(problems) == 1
    key, reason = problems[0]
    assert key == "waf.custom_rules[0]"
    assert reason.startswith(f"{broken} line 3: ")
    with pytest.raises(WafLoadError) as err:
        Waf(config(custom_rules=(str(broken),)))
    assert err.value.problems == problems
    no_id = tmp_path / "no-id.conf"
    no_id.write_text('SecRule ARGS "@rx a" "id:10011,phase:1,deny"\n\nSecRule ARGS "@rx b" "phase:1,deny"\n')
    [(key, reason)] = check(config(custom_rules=(str(no_id),)))
    assert key == "waf.custom_rules[0]" and f"{no_id} line 3" in reason


def test_check_reports_paths_and_names(tmp_path):
    assert check(config()) == []
    assert check(config(mode="off", crs_path="/nonexistent")) == []
    [(key, reason)] = check(config(crs_path=str(tmp_path / "nowhere")))
    assert key == "waf.crs_path" and "nowhere" in reason
    [(key, reason)] = check(config(crs_path=str(tmp_path)))
    assert key == "waf.crs_path" and "no CRS rules found" in reason
    [(key, reason)] = check(config(crs_setup=str(tmp_path / "crs-setup.conf")))
    assert key == "waf.crs_setup"
    problems = dict(check(config(
        disabled_rules=(942100, 4242424), exclusions=("ARGS:ok", "HEADERS:x", 'ARGS:a"b'),
        custom_rules=("relative.conf", str(tmp_path / "missing.conf")),
    )))
    assert set(problems) == {"waf.disabled_rules[1]", "waf.exclusions[1]", "waf.exclusions[2]",
                             "waf.custom_rules[0]", "waf.custom_rules[1]"}
    assert "4242424" in problems["waf.disabled_rules[1]"]
    # a listener's own waf table: the keys say where it is
    [(key, _)] = check(config(crs_setup="/nonexistent.conf"), key="listeners[2].waf")
    assert key == "listeners[2].waf.crs_setup"


def test_check_catches_rules_that_silently_load_nothing(tmp_path):
    """A CRS directory whose files hold no working rules (the failure a glob Include in a string
    produces) is an error, not a WAF that passes everything."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "REQUEST-901-INITIALIZATION.conf").write_text("# nothing here\n")
    (tmp_path / "rules" / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf").write_text("# empty\n")
    problems = check(config(crs_path=str(tmp_path)))
    assert problems and problems[0][0] == "waf.crs_path"


def test_binding_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "libmodsecurity", None)  # import raises ImportError
    assert waf_available() == INSTALL_HINT
    assert "pip install 'fastgw[waf]'" in INSTALL_HINT
    assert check(config()) == [("waf.mode", INSTALL_HINT)]


# ------------------------------------------------------------------------------------------
# the proxy's side: one call per request, counters


def test_inspect_and_counters():
    waf = Waf(config())
    try:
        ok, blocked, _ = [waf.inspect(
            client_ip="198.51.100.1", client_port=4000, server_ip="127.0.0.1", server_port=80,
            method=b"GET", uri=uri, headers=[(b"Host", b"a.example:8080"),
                                              (b"User-Agent", b"curl/8.5.0"), (b"Accept", b"*/*")],
        ) for uri in (b"/ok", b"/?q=1%20--", b"/?q=1%20--")]
        assert ok.clean and blocked.blocked and blocked.hostname == "a.example"
        assert waf.requests == {"inspected": 3, "matched": 2, "blocked": 2}
        assert waf.rule_matches[("942100", "Matched")] == 2
        assert waf.rule_matches[("949110", "Blocked")] == 2
        assert "blocked" in blocked.reason and blocked.transaction_id in blocked.reason
    finally:
        waf.close()
