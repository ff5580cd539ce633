"""The compiled hot path against its pure-Python twin (fastgw/native.py).

Each module of native.COMPILED is built by Cython from its own .py with the .pxd beside it, so the
twins share their source; what can still differ is what Cython's typing changes (a C int, a typed
field refusing a wrong type, a loop turned into C). These tests feed both the same inputs, drawn
by hypothesis, and require the same outputs or the same errors. The whole gateway suite runs on
each of them too (.ci/run: once compiled, once with FASTGW_NO_EXTENSIONS=1).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import native

pytestmark = pytest.mark.skipif(os.environ.get("FASTGW_NO_EXTENSIONS") == "1",
                                reason="FASTGW_NO_EXTENSIONS=1: only the twin is in use")


@pytest.fixture(scope="module")
def twins():
    import fastgw.handshake
    import fastgw.http1
    import fastgw.stats
    compiled = {"http1": fastgw.http1, "handshake": fastgw.handshake, "stats": fastgw.stats}
    if not all(native.is_compiled(m) for m in compiled.values()):
        pytest.skip("!!! the hot path is not compiled here: nothing to compare (pip install -e .)")
    return compiled, {name: native.load_twin(name) for name in compiled}


def test_implementation_is_reported():
    assert native.implementation() in ("c", "py")


# Header names the gateway treats specially, mixed with ordinary ones, in any case.
NAMES = st.sampled_from([
    b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"connection",
    b"Upgrade", b"Keep-Alive", b"TE", b"Expect", b"X-Request-Id", b"X-Forwarded-For", b"Cookie",
    b"User-Agent", b"Accept", b"X-Custom", b"Sec-WebSocket-Key", b"Sec-WebSocket-Version",
    b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions", b"Sec-WebSocket-Accept",
    b"Proxy-Connection", b"Trailer", b"X-Forwarded-Proto",
])
VALUES = st.one_of(
    st.sampled_from([b"close", b"keep-alive", b"Upgrade", b"upgrade, keep-alive", b"websocket",
                     b"chunked", b"gzip, chunked", b"12", b"0", b" 7 ", b"-1", b"x", b"",
                     b"100-continue", b"dGhlIHNhbXBsZSBub25jZQ==", b"13", b"chat, superchat",
                     b"permessage-deflate; client_max_window_bits", b"a.example, b"]),
    st.binary(min_size=0, max_size=12).filter(lambda v: b"\r" not in v and b"\n" not in v),
)
HEADERS = st.lists(st.tuples(NAMES, VALUES), max_size=10)
URLS = st.sampled_from([b"/", b"/a/b?x=1", b"/ws#frag", b"http://h.example/p?q", b"https://h",
                        b"*", b"relative", b"/%2e%2e/x"])


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the same error, with the same status and reason
        return ("error", type(exc).__name__, getattr(exc, "status", None),
                getattr(exc, "reason", None) or str(exc))


def request_state(head):
    return (head.method, head.url, head.version, head.host, head.content_length, head.chunked,
            head.keep_alive, head.upgrade, head.connection_tokens, head.expect_continue,
            head.request_id, head.lnames, head.fields, head.path())


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from([b"GET", b"POST", b"HEAD", b"OPTIONS"]), url=URLS,
       version=st.sampled_from(["1.1", "1.0"]), headers=HEADERS,
       upgrade=st.booleans(), client=st.sampled_from(["127.0.0.1", "::1"]))
def test_request_heads_agree(twins, method, url, version, headers, upgrade, client):
    results = []
    for mods in twins:
        http1 = mods["http1"]
        head = http1.RequestHead(method, url, version, list(headers))
        analysed = outcome(http1.analyse_request, head)
        if analysed[0] != "ok":
            results.append(analysed)
            continue
        forwarded = outcome(http1.forward_request_head, head, head.host or b"h", client, b"http",
                            b"80", upgrade, ((b"X-Request-Id", b"id"),))
        offer = outcome(mods["handshake"].validate_request, head)
        if offer[0] == "ok":
            offer = ("ok", offer[1].key, offer[1].protocols, offer[1].extensions)
        results.append((request_state(head), forwarded, offer))
    assert results[0] == results[1]


@settings(max_examples=300, deadline=None)
@given(status=st.sampled_from([101, 200, 201, 204, 304, 404, 418, 502, 599]),
       version=st.sampled_from(["1.1", "1.0"]), headers=HEADERS,
       framing=st.sampled_from([b"length", b"chunked", b"close", b"none"]),
       keep=st.booleans(), client_version=st.sampled_from(["1.1", "1.0"]))
def test_response_heads_agree(twins, status, version, headers, framing, keep, client_version):
    results = []
    for mods in twins:
        http1 = mods["http1"]
        head = http1.ResponseHead(status, b"", version, list(headers))
        http1.analyse_response(head)
        state = (head.content_length, head.chunked, head.keep_alive, head.connection_tokens,
                 head.lnames, head.fields)
        out = outcome(http1.client_response_head, head, framing, keep, client_version,
                      ((b"Set-Cookie", b"a=b"),))
        results.append((state, out))
    assert results[0] == results[1]


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.binary(min_size=0, max_size=30),
                     st.binary(min_size=16, max_size=16).map(__import__("base64").b64encode)))
def test_handshake_keys_agree(twins, key):
    a, b = (mods["handshake"] for mods in twins)
    assert a.is_key(key) == b.is_key(key)
    assert a.accept_key(key) == b.accept_key(key)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=-1, max_value=100, allow_nan=False), max_size=20))
def test_histograms_agree(twins, values):
    a, b = (mods["stats"].Histo(mods["stats"].LATENCY_BUCKETS) for mods in twins)
    for v in values:
        a.observe(v)
        b.observe(v)
    assert a.counts == b.counts and a.sum == pytest.approx(b.sum)
