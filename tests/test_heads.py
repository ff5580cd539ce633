"""The head scanner (fastgw/_heads.pyi) against httptools, the parser of record.

Whatever the scanner returns, httptools must report for the same bytes: the same method, target,
status, reason and fields, the message complete at the same offset (for a handshake, the same
upgrade offset), the same keep-alive verdict. Where the scanner returns None httptools decides,
so the scanner never refuses, and a refusal is httptools' alone. Heads are generated around the
edges of the subset (every smuggling case of the suite among them) and mutated byte by byte; the
compiled engine and its twin must agree on every input as well.
"""

from __future__ import annotations

import importlib

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fastgw._heads_py as twin
from fastgw import heads

ENGINES = [twin]
if heads.IMPLEMENTATION == "c":
    ENGINES.append(importlib.import_module("fastgw._heads"))


class Collector:
    """httptools' callbacks, recorded."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list = []
        self.name = b""
        self.value = b""
        self.heads_complete = 0
        self.messages_complete = 0
        self.parser: object = None
        self.keep_alive: list[bool] = []  # llhttp's verdict as the callbacks see it


    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.heads_complete += 1
        self.keep_alive.append(self.parser.should_keep_alive())  # type: ignore[attr-defined]

    def on_message_complete(self) -> None:
        self.messages_complete += 1
        self.keep_alive.append(self.parser.should_keep_alive())  # type: ignore[attr-defined]


def httptools_request(data: bytes) -> tuple:
    """(outcome, collector, parser) for data fed whole to a request parser: outcome is
    "complete", ("upgrade", offset), "error" or "incomplete"."""
    return httptools_parse(httptools.HttpRequestParser, data)


def httptools_response(data: bytes) -> tuple:
    return httptools_parse(httptools.HttpResponseParser, data)


def httptools_parse(parser_type, data: bytes) -> tuple:
    c = Collector()
    parser = c.parser = parser_type(c)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade as exc:
        return ("upgrade", exc.args[0]), c, parser
    except httptools.HttpParserError:
        return "error", c, parser
    return ("complete" if c.messages_complete else "incomplete"), c, parser


def check_request(data: bytes) -> None:
    results = {engine.__name__: engine.scan_request(data, 0) for engine in ENGINES}
    assert len(set(map(repr, results.values()))) == 1, results
    result = results[twin.__name__]
    if result is None:
        return
    end, method, url, headers = result
    head = data[:end]
    outcome, c, parser = httptools_request(head)
    upgrade = any(name.lower() == b"upgrade" for name, _ in headers)
    assert outcome == (("upgrade", end) if upgrade else "complete"), (data, outcome)
    assert c.messages_complete == 1 and c.heads_complete == 1
    assert (parser.get_method(), c.url, c.headers) == (method, url, headers)
    assert parser.get_http_version() == "1.1"
    assert c.keep_alive == [True, True]
    # The message ends exactly there: one byte less is not a complete message.
    assert httptools_request(head[:-1])[0] == "incomplete"
    # The scanner starts where it is told (pipelined requests), and reads the same from there.
    for engine in ENGINES:
        assert engine.scan_request(b"XYZ" + data, 3) == (end + 3, method, url, headers)


def check_response(data: bytes) -> None:
    results = {engine.__name__: engine.scan_response(data, 0) for engine in ENGINES}
    assert len(set(map(repr, results.values()))) == 1, results
    result = results[twin.__name__]
    if result is None:
        return
    end, status, reason, headers, length = result
    if status == 101:
        assert length == -1
        outcome, c, parser = httptools_response(data[:end])
        assert outcome == ("upgrade", end), (data, outcome)
    else:
        assert length >= 0
        message = data[:end] + b"x" * length
        outcome, c, parser = httptools_response(message)
        assert outcome == "complete", (data, outcome)
        keep = all(b"close" not in {t.strip().lower() for t in v.split(b",")}
                   for n, v in headers if n.lower() == b"connection")
        assert c.keep_alive == [keep, keep]
        assert httptools_response(message[:-1])[0] == "incomplete"
    assert c.heads_complete == 1
    assert (parser.get_status_code(), c.headers) == (status, headers)
    assert parser.get_http_version() == "1.1"
    for engine in ENGINES:
        assert engine.scan_response(b"XYZ" + data, 3) == (end + 3, status, reason, headers, length)


# -- generated heads -----------------------------------------------------------------------

# Bytes chosen to sit on the subset's edges: separators, whitespace, controls, obs-text.
EDGE = st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b",", b";", b"\x00", b"\x7f",
                        b"\x80", b"\xff", b"#", b'"', b"<", b"{", b"\\", b"a", b"Z", b"0", b"-"])
TEXT = st.lists(st.one_of(EDGE, st.binary(min_size=1, max_size=3),
                          st.sampled_from([b"chunked", b"close", b"keep-alive", b"upgrade",
                                           b"websocket", b"gzip", b"1", b"10", b"00"])),
                max_size=6).map(b"".join)
NAMES = st.one_of(
    st.sampled_from([b"Host", b"host", b"HOST", b"Content-Length", b"content-length",
                     b"Transfer-Encoding", b"transfer-encoding", b"Connection", b"connection",
                     b"Upgrade", b"UPGRADE", b"X-Forwarded-For", b"Sec-WebSocket-Key",
                     b"Sec-WebSocket-Version", b"User-Agent", b"X-Custom", b"Content-Length ",
                     b" Host", b"Transfer-Encoding\x0b", b""]),
    TEXT)
VALUES = st.one_of(
    st.sampled_from([b"x", b"example.com", b"example.com:8080", b"0", b"5", b"10", b"-1", b"+5",
                     b"5 ", b" 5", b"1, 2", b"chunked", b"Chunked", b"gzip, chunked",
                     b"chunked, gzip", b"close", b"Close", b"keep-alive", b"Upgrade",
                     b"keep-alive, Upgrade", b"upgrade , close", b"websocket", b"a  b", b"",
                     b"x\t", b"\tx", b"caf\xc3\xa9", b"dGhlIHNhbXBsZSBub25jZQ==", b"13"]),
    TEXT)
GOOD_VALUES = st.sampled_from([b"x", b"example.com", b"example.com:8080", b"a  b", b"1, 2",
                               b"dGhlIHNhbXBsZSBub25jZQ==", b"13", b"text/html; charset=utf-8"])
SEPARATORS = st.sampled_from([b": ", b": ", b": ", b":", b":  ", b" : ", b":\t", b"::"])
LINE_ENDS = st.sampled_from([b"\r\n"] * 5 + [b"\n", b"\r", b" \r\n"])
GOOD_NAMES = st.sampled_from([b"Host", b"X-Custom", b"Sec-WebSocket-Key", b"User-Agent", b"Accept",
                              b"x-a", b"Origin", b"X_Y"])
FIELD = st.tuples(st.one_of(NAMES, GOOD_NAMES, GOOD_NAMES), SEPARATORS,
                  st.one_of(VALUES, GOOD_VALUES, GOOD_VALUES), LINE_ENDS)
VALID_FIELD = st.tuples(GOOD_NAMES, st.sampled_from([b": ", b":", b":   "]), GOOD_VALUES,
                        st.just(b"\r\n"))
FIELDS = st.one_of(st.lists(VALID_FIELD, max_size=6), st.lists(FIELD, max_size=5)).map(
    lambda fs: b"".join(n + s + v + e for n, s, v, e in fs))
# What a handshake or an answer with a body needs, added to the fields most of the time.
CONNECTIONS = st.sampled_from([b"", b"", b"Connection: Upgrade\r\n", b"Connection: keep-alive\r\n",
                               b"connection: keep-alive, Upgrade\r\n", b"Connection: close\r\n",
                               b"Connection: upgrade,close\r\n", b"Connection: x-y , upgrade\r\n"])
UPGRADES = st.sampled_from([b"", b"", b"Upgrade: websocket\r\n", b"upgrade: h2c\r\n"])
LENGTHS = st.sampled_from([b"Content-Length: 5\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n",
                           b"content-length: 20\r\n", b"", b"Content-Length: 5, 5\r\n",
                           b"Transfer-Encoding: chunked\r\n"])
METHODS = st.sampled_from([b"GET"] * 4 + [b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS",
                           b"PATCH", b"CONNECT", b"TRACE", b"get", b"GETX", b"G", b"PRI", b""])
TARGETS = st.one_of(st.sampled_from([b"/", b"/", b"/a/b?c=d&e", b"*", b"http://h/x", b"/%zz",
                                     b"/a b", b"/#f", b"//x", b"/\x7f", b"/\x80",
                                     b"/~-._!$&'()*+,;=:@"]),
                    TEXT.map(lambda t: b"/" + t))
VERSIONS = st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1",
                                                 b"HTTP/1.1 ", b"HTTP/1.12"])
ENDS = st.sampled_from([b"\r\n"] * 4 + [b"\n", b"", b"\r\nextra"])
VALID_FIELDS = st.lists(VALID_FIELD, max_size=6).map(
    lambda fs: b"".join(n + s + v + e for n, s, v, e in fs))
# Heads of the subset (most of them: the scanner's answers are what is checked), and heads from
# anywhere around it.
REQUESTS = st.one_of(
    st.builds(lambda m, t, f, c, u: m + b" " + t + b" HTTP/1.1\r\n" + f + c + u + b"\r\n",
              st.sampled_from([b"GET", b"HEAD", b"POST", b"DELETE", b"OPTIONS"]),
              st.sampled_from([b"/", b"/a/b?c=d&e", b"/~-._!$&'()*+,;=:@"]), VALID_FIELDS,
              st.sampled_from([b"", b"Connection: keep-alive\r\n",
                               b"Connection: Upgrade\r\n"]),
              st.sampled_from([b"", b"Upgrade: websocket\r\n"])),
    st.builds(lambda m, t, v, f, c, u, e: m + b" " + t + b" " + v + b"\r\n" + f + c + u + e,
              METHODS, TARGETS, VERSIONS, FIELDS, CONNECTIONS, UPGRADES, ENDS))
STATUS_LINES = st.builds(lambda v, s, r: v + b" " + s + r + b"\r\n", VERSIONS,
                         st.sampled_from([b"101", b"200", b"200", b"204", b"304", b"100", b"103",
                                          b"404", b"599", b"600", b"099", b"20", b"2000", b"abc"]),
                         st.sampled_from([b" OK", b" OK", b" Switching Protocols", b" ", b"",
                                          b"  OK", b" OK ", b" \x80", b" Not  Found"]))
RESPONSES = st.one_of(
    st.builds(lambda line, f, c, e: line + f + c + e,
              st.sampled_from([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
                               b"HTTP/1.1 404 Not  Found\r\ncontent-length: 0\r\n",
                               b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"]),
              VALID_FIELDS,
              st.sampled_from([b"Connection: Upgrade\r\n", b"Connection: keep-alive\r\n",
                               b"Connection: close\r\n", b""]),
              st.sampled_from([b"\r\n", b"\r\nhello", b"\r\nhello, and more"])),
    st.builds(lambda line, f, n, c, u, e, body: line + f + n + c + u + e + body,
              STATUS_LINES, FIELDS, LENGTHS, CONNECTIONS, UPGRADES, ENDS,
              st.sampled_from([b"", b"hello", b"x" * 20])))


def _mutate(data: bytes, edits: list) -> bytes:
    for kind, where, byte in edits:
        if not data:
            break
        i = where % (len(data) + 1)
        if kind == 0:
            data = data[:i] + byte + data[i:]
        elif kind == 1:
            data = data[:i] + data[i + 1:]
        else:
            data = data[:i] + byte + data[i + 1:]
    return data


EDITS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 400), st.binary(min_size=1, max_size=1)),
                 max_size=3)

SMUGGLING = [  # the request-smuggling heads of the suite (tests/test_http_proxy.py)
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\nHost: x\n\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
]


@pytest.mark.parametrize("data", SMUGGLING + [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x80",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
])
def test_known_requests(data):
    check_request(data)


def test_the_common_heads_take_the_scanner():
    """Not a vacuous contract: a plain request, a handshake and their answers are scanned."""
    for engine in ENGINES:
        assert engine.scan_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0) == (
            27, b"GET", b"/", [(b"Host", b"x")])
        assert engine.scan_request(SMUGGLING[0], 0) is None
        assert engine.scan_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0) == (
            38, 200, b"OK", [(b"Content-Length", b"2")], 2)
        assert engine.scan_response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    b"Connection: Upgrade\r\n\r\n", 0)[4] == -1


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTS, EDITS)
@example(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [])
def test_requests_against_httptools(data, edits):
    check_request(data)
    check_request(_mutate(data, edits))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RESPONSES, EDITS)
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", [])
@example(b"HTTP/1.1 200  OK\r\nContent-Length: 5\r\n\r\n", [])  # a reason after two spaces
def test_responses_against_httptools(data, edits):
    check_response(data)
    check_response(_mutate(data, edits))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes(data):
    check_request(data)
    check_response(data)
    check_request(b"GET / HTTP/1.1\r\n" + data)
    check_response(b"HTTP/1.1 200 OK\r\n" + data)
