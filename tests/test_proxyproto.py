"""The PROXY protocol parser (fastgw/proxyproto.py) and the per-client limit decisions
(fastgw/clientlimits.py): pure functions, the clock passed in."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastgw.clientlimits import ConnectionCounts, RequestRate
from fastgw.proxyproto import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse, v1_header, v2_header

V1_GOOD = [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n", ("192.0.2.7", 56324)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n", ("2001:db8::7", 4000)),
    (b"PROXY UNKNOWN\r\n", None),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
]


@pytest.mark.parametrize("line, source", V1_GOOD)
def test_v1_good(line, source):
    assert parse(line + b"GET / HTTP/1.1\r\n") == ProxyHeader(len(line), source)


def test_v1_longest_line_is_107_bytes():
    longest = v1_header(("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535))
    assert len(longest) == 104
    assert parse(longest).length == 104
    assert parse(b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n").length == 107
    with pytest.raises(ProxyHeaderError):
        parse(b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n")


@pytest.mark.parametrize("bad", [
    b"GET / HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello without a header
    b"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n",
    b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
    b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 0443 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 443\r\n",
    b"PROXY TCP4 192.0.2.777 10.0.0.1 1 443\r\n",
    b"PROXY UDP4 192.0.2.7 10.0.0.1 1 443\r\n",
    b"PROXY TCP4  192.0.2.7 10.0.0.1 1 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 443\n",
    b"proxy TCP4 192.0.2.7 10.0.0.1 1 443\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 44\xff\r\n",
    b"PROXY " + b"1" * 120,
])
def test_malformed(bad):
    with pytest.raises(ProxyHeaderError):
        parse(bad)


def test_v2_good():
    h4 = v2_header(("192.0.2.7", 56324), ("10.0.0.1", 443))
    assert len(h4) == 28 and h4[:12] == V2_SIGNATURE
    assert parse(h4 + b"\x16\x03\x01") == ProxyHeader(28, ("192.0.2.7", 56324))
    h6 = v2_header(("2001:db8::7", 4000), ("2001:db8::1", 80))
    assert parse(h6) == ProxyHeader(52, ("2001:db8::7", 4000))
    local = v2_header(None)
    assert parse(local + b"GET") == ProxyHeader(16, None)
    # TLVs (here an ALPN and a NOOP) are skipped with the addresses.
    tlvs = b"\x01" + struct.pack("!H", 2) + b"h2" + b"\x04" + struct.pack("!H", 3) + b"\x00" * 3
    with_tlvs = v2_header(("192.0.2.7", 1), ("10.0.0.1", 2), tlvs)
    assert parse(with_tlvs + b"x") == ProxyHeader(28 + len(tlvs), ("192.0.2.7", 1))
    # PROXY over an address family the gateway does not use: the socket's peer is kept.
    unix = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", 216) + b"\x00" * 216
    assert parse(unix) == ProxyHeader(232, None)
    unspec = V2_SIGNATURE + bytes([0x21, 0x00]) + struct.pack("!H", 0)
    assert parse(unspec) == ProxyHeader(16, None)


@pytest.mark.parametrize("bad", [
    V2_SIGNATURE + bytes([0x11, 0x11]) + struct.pack("!H", 12) + b"\x00" * 12,  # version 1
    V2_SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + b"\x00" * 12,  # command 2
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 8) + b"\x00" * 8,  # short address
    V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", 12) + b"\x00" * 12,
    b"\r\n\r\n\x00\r\nQUIX\n" + b"\x00" * 20,
])
def test_v2_malformed(bad):
    with pytest.raises(ProxyHeaderError):
        parse(bad)


HEADERS = [line for line, _ in V1_GOOD] + [
    v2_header(("192.0.2.7", 56324), ("10.0.0.1", 443)),
    v2_header(("2001:db8::7", 4000), ("2001:db8::1", 80)),
    v2_header(None),
    v2_header(("192.0.2.7", 1), ("10.0.0.1", 2), b"\x04\x00\x05" + b"\x00" * 5),
]


@pytest.mark.parametrize("header", HEADERS)
def test_every_proper_prefix_is_incomplete(header):
    # None means: every byte so far is the header's (a reader may consume them all).
    for n in range(len(header)):
        assert parse(header[:n]) is None
    assert parse(header).length == len(header)


def read_in_pieces(header: bytes, after: bytes, cuts: list[int]) -> ProxyHeader:
    """What clientgate.HeaderRead does: peek what has arrived, consume it all while incomplete,
    then exactly the header's bytes."""
    stream = header + after
    points = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    consumed, arrived = b"", 0
    for point in points:
        arrived = max(arrived, point)
        peeked = stream[len(consumed):arrived]
        result = parse(consumed + peeked)
        if result is None:
            consumed += peeked
            continue
        assert stream[result.length:] == after  # nothing of what follows was taken
        return result
    raise AssertionError("never complete")


@given(st.sampled_from(HEADERS), st.binary(max_size=40), st.lists(st.integers(0, 400), max_size=8))
def test_any_split_parses_the_same(header, after, cuts):
    assert read_in_pieces(header, after, cuts) == parse(header)


@given(st.binary(max_size=120))
def test_parse_never_fails_otherwise(data):
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    assert result is None or 0 < result.length <= len(data)


# -- per-client limits ------------------------------------------------------------------------


def test_connection_counts():
    counts = ConnectionCounts(2)
    assert counts.admit("a") and counts.admit("a")
    assert not counts.admit("a")
    assert counts.admit("b")
    counts.release("a")
    assert counts.admit("a")
    for _ in range(2):
        counts.release("a")
    counts.release("b")
    assert counts.open == {}


def test_rate_burst_then_retry_after_then_refill():
    rate = RequestRate(3, 1.0)
    now = 100.0
    assert [rate.take("a", now) for _ in range(3)] == [0, 0, 0]
    assert rate.take("a", now) == 1  # one token back in 1/3 s: Retry-After rounds up
    assert rate.take("b", now) == 0  # another client has its own bucket
    assert rate.take("a", now + 0.34) == 0  # a token refilled
    assert rate.take("a", now + 0.34) == 1
    assert [rate.take("a", now + 1.34) for _ in range(3)] == [0, 0, 0]  # idle a window: full


def test_rate_retry_after_is_the_wait_for_one_token():
    rate = RequestRate(2, 60.0)
    assert rate.take("a", 0.0) == 0 and rate.take("a", 0.0) == 0
    assert rate.take("a", 0.0) == 30
    assert rate.take("a", 29.5) == 1
    assert rate.take("a", 30.0) == 0


def test_refused_requests_take_nothing():
    rate = RequestRate(1, 10.0)
    assert rate.take("a", 0.0) == 0
    for t in range(9):
        assert rate.take("a", float(t)) == 10 - t
    assert rate.take("a", 10.0) == 0


def test_idle_entries_are_dropped_and_the_table_is_capped():
    rate = RequestRate(5, 1.0, capacity=3)
    for i in range(3):
        rate.take(f"old{i}", 0.0)
    rate.take("new", 5.0)  # the old buckets are full again by now: dropped as it goes
    assert list(rate.full_at) == ["old2", "new"]  # two idle entries dropped per decision
    rate.take("new2", 5.0)
    assert list(rate.full_at) == ["new", "new2"]
    for i in range(10):
        rate.take(f"busy{i}", 5.0)
    assert len(rate.full_at) == 3  # beyond the cap the least recently used goes
    assert list(rate.full_at) == ["busy7", "busy8", "busy9"]
