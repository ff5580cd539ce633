"""The frame engine on both twins (`impl`): scanner rules (RFC 6455 section 5), offsets, splitting,
events, counters, masking, close payloads, frame building (checked by wsproto's decoder)."""

import array
import itertools

import pytest
from wsproto.frame_protocol import FrameDecoder, Opcode

import fastgw._frames_py as twin
from fastgw.errors import FrameError

KEY = b"\x37\xfa\x21\x3d"

# -- helpers --------------------------------------------------------------------------------------


def xor(data: bytes, key: bytes, phase: int = 0) -> bytes:
    """Reference masking, one byte at a time (section 5.3)."""
    return bytes(b ^ key[(i + phase) % 4] for i, b in enumerate(data))


def raw_frame(opcode, payload=b"", *, fin=True, rsv=0, key=None, form=None, length=None):
    """Any frame, valid or not. rsv: 3-bit RSV1..RSV3 (4 = RSV1); form: 7, 16 or 64 forces the
    length encoding; length overrides the declared payload length."""
    n = len(payload) if length is None else length
    out = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if key is not None else 0
    if form is None:
        form = 7 if n < 126 else 16 if n < 65536 else 64
    if form == 7:
        out.append(mbit | n)
    elif form == 16:
        out.append(mbit | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(mbit | 127)
        out += n.to_bytes(8, "big")
    if key is not None:
        out += key
        payload = xor(payload, key)
    return bytes(out) + payload


def cframe(opcode, payload=b"", **kw):
    """A client frame: masked with KEY."""
    return raw_frame(opcode, payload, key=KEY, **kw)


def scan_error(scanner, data) -> FrameError:
    with pytest.raises(FrameError) as info:
        scanner.scan(data)
    assert type(info.value) is FrameError
    return info.value


def feed(scanner, stream: bytes, cuts) -> tuple[bytes, list, bytes]:
    """Present `stream` cut at `cuts` the way a caller does: each call gets the unconsumed tail
    followed by the next chunk. Returns (forwarded bytes, events with absolute offsets, tail)."""
    bounds = [0, *sorted(cuts), len(stream)]
    pos, tail, out, events = 0, b"", [], []
    for a, b in zip(bounds, bounds[1:]):
        data = tail + stream[a:b]
        consumed = scanner.scan(data)
        # Offsets (item 2 of every event) index this call's data.
        events += [ev[:2] + (ev[2] + pos,) + ev[3:] for ev in scanner.events]
        out.append(data[:consumed])
        pos += consumed
        tail = data[consumed:]
    return b"".join(out), events, tail


def counters(scanner):
    return (
        scanner.frames,
        scanner.messages,
        scanner.control_frames,
        scanner.payload_bytes,
        scanner.bytes,
        scanner.at_boundary,
        scanner.in_message,
        scanner.closed,
        scanner.opcode_open,
    )


# -- the module surface ---------------------------------------------------------------------------

PUBLIC = """OP_CONT OP_TEXT OP_BINARY OP_CLOSE OP_PING OP_PONG CLOSE_NORMAL CLOSE_GOING_AWAY
CLOSE_PROTOCOL_ERROR CLOSE_UNSUPPORTED CLOSE_NO_STATUS CLOSE_ABNORMAL CLOSE_INVALID_DATA
CLOSE_POLICY CLOSE_TOO_BIG CLOSE_INTERNAL_ERROR CLOSE_TRY_AGAIN CLOSE_BAD_GATEWAY EV_CONTROL
EV_MESSAGE_START EV_MESSAGE_END FrameScanner apply_mask parse_close valid_close_code build_frame
build_close Pump""".split()


def test_all_lists_the_public_api(impl):
    assert sorted(impl.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert hasattr(impl, name), name


def test_constants(impl):
    assert (impl.OP_CONT, impl.OP_TEXT, impl.OP_BINARY) == (0, 1, 2)
    assert (impl.OP_CLOSE, impl.OP_PING, impl.OP_PONG) == (8, 9, 10)
    assert (impl.EV_CONTROL, impl.EV_MESSAGE_START, impl.EV_MESSAGE_END) == (1, 2, 3)
    codes = [impl.CLOSE_NORMAL, impl.CLOSE_GOING_AWAY, impl.CLOSE_PROTOCOL_ERROR,
             impl.CLOSE_UNSUPPORTED, impl.CLOSE_NO_STATUS, impl.CLOSE_ABNORMAL,
             impl.CLOSE_INVALID_DATA, impl.CLOSE_POLICY, impl.CLOSE_TOO_BIG,
             impl.CLOSE_INTERNAL_ERROR, impl.CLOSE_TRY_AGAIN, impl.CLOSE_BAD_GATEWAY]
    assert codes == [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1011, 1013, 1014]


def test_reason_strings_are_the_same_in_both_twins(impl):
    names = [n for n in dir(twin) if n.startswith("R_")]
    assert len(names) >= 19
    for name in names:
        assert getattr(impl, name) == getattr(twin, name), name


def test_frame_error_is_the_one_from_fastgw_errors(impl):
    exc = scan_error(impl.FrameScanner(masked=True), b"\x83\x80")
    assert isinstance(exc, FrameError) and exc.code == 1002


# -- validation, one rule per test ----------------------------------------------------------------


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_reserved_opcode(impl, opcode):
    exc = scan_error(impl.FrameScanner(masked=True), cframe(opcode, b"x"))
    assert (exc.code, exc.reason, exc.offset) == (1002, f"reserved opcode {opcode}", 0)


@pytest.mark.parametrize("rsv", [2, 1, 3, 6])  # RSV2, RSV3, both, RSV1+RSV2
def test_rsv2_rsv3(impl, rsv):
    exc = scan_error(impl.FrameScanner(masked=True, allow_rsv1=True), cframe(1, b"x", rsv=rsv))
    assert (exc.code, exc.reason) == (1002, "reserved bit RSV2 or RSV3 set")


def test_rsv1_without_extension(impl):
    exc = scan_error(impl.FrameScanner(masked=True), cframe(1, b"x", rsv=4))
    assert (exc.code, exc.reason) == (1002, "RSV1 set without a negotiated extension")


def test_rsv1_allowed_on_first_frame_with_extension(impl):
    s = impl.FrameScanner(masked=True, allow_rsv1=True, report_messages=True)
    stream = cframe(2, b"abc", rsv=4, fin=False) + cframe(0, b"de")
    assert s.scan(stream) == len(stream)
    assert s.events[0] == (impl.EV_MESSAGE_START, 2, 0, True)


def test_rsv1_on_continuation_frame(impl):
    s = impl.FrameScanner(masked=True, allow_rsv1=True)
    first = cframe(1, b"ab", rsv=4, fin=False)
    exc = scan_error(s, first + cframe(0, b"cd", rsv=4))
    assert (exc.code, exc.reason, exc.offset) == (1002, "RSV1 set on a continuation frame", len(first))


@pytest.mark.parametrize("opcode", [8, 9, 10])
def test_rsv1_on_control_frame(impl, opcode):
    s = impl.FrameScanner(masked=True, allow_rsv1=True)
    exc = scan_error(s, cframe(opcode, b"", rsv=4))
    assert (exc.code, exc.reason) == (1002, "RSV1 set on a control frame")


@pytest.mark.parametrize("opcode", [8, 9, 10])
def test_control_frame_longer_than_125(impl, opcode):
    s = impl.FrameScanner(masked=True)
    exc = scan_error(s, cframe(opcode, b"x" * 126))
    assert (exc.code, exc.reason) == (1002, "control frame payload longer than 125 bytes")
    # 125 is fine.
    assert impl.FrameScanner(masked=True).scan(cframe(opcode, b"x" * 125)) == 131


@pytest.mark.parametrize("opcode", [8, 9, 10])
def test_fragmented_control_frame(impl, opcode):
    exc = scan_error(impl.FrameScanner(masked=True), cframe(opcode, b"", fin=False))
    assert (exc.code, exc.reason) == (1002, "fragmented control frame")


def test_continuation_without_open_message(impl):
    s = impl.FrameScanner(masked=True)
    whole = cframe(1, b"done")
    exc = scan_error(s, whole + cframe(0, b"x"))
    assert (exc.code, exc.reason, exc.offset) == (1002, "continuation frame without an open message", len(whole))


@pytest.mark.parametrize("opcode", [1, 2])
def test_data_frame_inside_fragmented_message(impl, opcode):
    s = impl.FrameScanner(masked=True)
    first = cframe(2, b"part", fin=False) + cframe(9, b"ping")  # a control frame may interleave
    exc = scan_error(s, first + cframe(opcode, b"x"))
    assert (exc.code, exc.reason, exc.offset) == (1002, "new data frame inside a fragmented message", len(first))


def test_unmasked_frame_from_client(impl):
    exc = scan_error(impl.FrameScanner(masked=True), raw_frame(1, b"hi"))
    assert (exc.code, exc.reason) == (1002, "unmasked frame where masking is required")


def test_masked_frame_from_backend(impl):
    exc = scan_error(impl.FrameScanner(masked=False), cframe(1, b"hi"))
    assert (exc.code, exc.reason) == (1002, "masked frame where masking is forbidden")


def test_64bit_length_with_msb_set(impl):
    frame = raw_frame(2, key=KEY, form=64, length=(1 << 63) + 70000)
    exc = scan_error(impl.FrameScanner(masked=True), frame)
    assert (exc.code, exc.reason) == (1002, "64-bit payload length with the most significant bit set")


@pytest.mark.parametrize(("form", "length"), [(16, 0), (16, 125), (64, 0), (64, 125), (64, 126), (64, 65535)])
def test_non_minimal_length(impl, form, length):
    frame = raw_frame(2, b"x" * length, key=KEY, form=form)
    exc = scan_error(impl.FrameScanner(masked=True), frame)
    assert (exc.code, exc.reason) == (1002, "payload length not in its minimal encoding")


@pytest.mark.parametrize(("form", "length"), [(7, 125), (16, 126), (16, 65535), (64, 65536)])
def test_minimal_lengths_at_the_edges(impl, form, length):
    frame = raw_frame(2, b"y" * length, key=KEY, form=form)
    s = impl.FrameScanner(masked=True)
    assert s.scan(frame) == len(frame)
    assert s.payload_bytes == length


def test_max_frame_size(impl):
    s = impl.FrameScanner(masked=True, max_frame_size=100)
    assert s.scan(cframe(2, b"x" * 100)) == 106
    # Rejected from the header alone, before any payload byte is forwarded.
    exc = scan_error(s, cframe(2, b"x" * 101)[:6])
    assert (exc.code, exc.reason, exc.offset) == (1009, "frame too big", 0)


def test_max_frame_size_applies_to_control_frames(impl):
    s = impl.FrameScanner(masked=True, max_frame_size=4)
    exc = scan_error(s, cframe(9, b"12345"))
    assert (exc.code, exc.reason) == (1009, "frame too big")


def test_max_message_size_single_frame(impl):
    s = impl.FrameScanner(masked=True, max_message_size=1000)
    assert s.scan(cframe(1, b"a" * 1000)) == 1008
    exc = scan_error(s, cframe(1, b"a" * 1001)[:8])
    assert (exc.code, exc.reason) == (1009, "message too big")


def test_max_message_size_fragmented(impl):
    s = impl.FrameScanner(masked=True, max_message_size=10)
    head = cframe(2, b"12345", fin=False) + cframe(9, b"p" * 50) + cframe(0, b"1234", fin=False)
    assert s.scan(head) == len(head)  # 9 so far; the 50-byte ping does not count
    exc = scan_error(s, cframe(0, b"12"))  # 9 + 2 > 10
    assert (exc.code, exc.reason, exc.offset) == (1009, "message too big", 0)
    assert s.scan(cframe(0, b"1")) == 7  # exactly 10 is fine
    # The next message starts from zero.
    assert s.scan(cframe(2, b"x" * 10)) == 16


def test_limits_must_not_be_negative(impl):
    with pytest.raises(ValueError):
        impl.FrameScanner(masked=True, max_frame_size=-1)
    with pytest.raises(ValueError):
        impl.FrameScanner(masked=True, max_message_size=-1)


def test_masked_is_required_keyword(impl):
    with pytest.raises(TypeError):
        impl.FrameScanner()
    with pytest.raises(TypeError):
        impl.FrameScanner(True)


# -- checks run as early as the header bytes allow; the order of checks ------------------------


def test_byte0_faults_are_reported_from_one_byte(impl):
    exc = scan_error(impl.FrameScanner(masked=True), b"\x83")
    assert (exc.code, exc.offset) == (1002, 0)


def test_byte1_faults_need_byte1(impl):
    s = impl.FrameScanner(masked=True)
    assert s.scan(b"\x81") == 0  # nothing wrong yet: byte 1 decides the mask
    exc = scan_error(s, b"\x81\x05")
    assert exc.reason == "unmasked frame where masking is required"


def test_extended_length_faults_need_the_length_bytes(impl):
    s = impl.FrameScanner(masked=True)
    frame = raw_frame(2, key=KEY, form=16, length=5)
    assert s.scan(frame[:3]) == 0
    assert scan_error(s, frame[:4]).reason == "payload length not in its minimal encoding"


def test_size_limit_checked_before_mask_key_arrives(impl):
    s = impl.FrameScanner(masked=True, max_frame_size=10)
    assert scan_error(s, cframe(2, b"x" * 11)[:2]).code == 1009


def test_first_fault_wins(impl):
    # Reserved opcode + RSV2 + unmasked: byte 0's first rule.
    exc = scan_error(impl.FrameScanner(masked=True), raw_frame(5, b"", rsv=2))
    assert exc.reason == "reserved opcode 5"
    # Fragmented ping with RSV1 (allowed extension): RSV1 on control comes first.
    exc = scan_error(impl.FrameScanner(masked=True, allow_rsv1=True), cframe(9, fin=False, rsv=4))
    assert exc.reason == "RSV1 set on a control frame"
    # Unmasked and too long control frame: the mask rule comes first.
    exc = scan_error(impl.FrameScanner(masked=True), raw_frame(9, b"x" * 126))
    assert exc.reason == "unmasked frame where masking is required"
    # Too big frame and too big message: the frame limit comes first.
    exc = scan_error(impl.FrameScanner(masked=True, max_frame_size=5, max_message_size=5), cframe(1, b"x" * 6))
    assert exc.reason == "frame too big"


# -- offsets and the state after an error ---------------------------------------------------------


def test_error_offset_counts_the_valid_prefix(impl):
    s = impl.FrameScanner(masked=True)
    prefix = cframe(1, b"hello") + cframe(9, b"p") + cframe(2, b"x" * 300)
    exc = scan_error(s, prefix + raw_frame(1, b"unmasked") + cframe(1, b"later"))
    assert exc.offset == len(prefix)
    # The state is as if scan() had returned exc.offset.
    assert s.frames == 3 and s.bytes == len(prefix) and s.messages == 2 and s.control_frames == 1
    assert [ev[0] for ev in s.events] == [impl.EV_CONTROL]
    # Scanning from the offending frame raises the same error again.
    again = scan_error(s, raw_frame(1, b"unmasked"))
    assert (again.code, again.reason, again.offset) == (exc.code, exc.reason, 0)


def test_error_offset_inside_a_later_chunk(impl):
    s = impl.FrameScanner(masked=True)
    big = cframe(2, b"z" * 1000)
    assert s.scan(big[:500]) == 500
    exc = scan_error(s, big[500:] + b"\x8f")
    assert exc.offset == len(big) - 500


# -- splitting --------------------------------------------------------------------------------


def sample_stream():
    """Fragmented text with interleaved ping, 16-bit lengths, empty frames, pong, close."""
    return b"".join([
        cframe(1, b"Hel", fin=False),
        cframe(9, b"are you there?"),
        cframe(0, b"lo, ", fin=False),
        cframe(0, b"", fin=False),
        cframe(0, b"world"),
        cframe(2, bytes(range(200))),
        cframe(10, b""),
        cframe(1, b""),
        cframe(2, b"\x00" * 126, fin=False),
        cframe(9, b"x" * 125),
        cframe(0, b"end"),
        cframe(8, b"\x03\xe8bye"),
    ])


def header_and_control_spans(stream: bytes):
    """(start, end) of every header and every control frame: no consumed position may fall
    strictly inside one."""
    spans, pos = [], 0
    while pos < len(stream):
        b0, b1 = stream[pos], stream[pos + 1]
        n = b1 & 0x7F
        hlen = 2
        if n == 126:
            n, hlen = int.from_bytes(stream[pos + 2 : pos + 4], "big"), 4
        elif n == 127:
            n, hlen = int.from_bytes(stream[pos + 2 : pos + 10], "big"), 10
        hlen += 4 if b1 & 0x80 else 0
        spans.append((pos, pos + hlen + (n if b0 & 0x08 else 0)))
        pos += hlen + n
    return spans


def test_split_at_every_point(impl):
    stream = sample_stream()
    whole = impl.FrameScanner(masked=True, report_messages=True)
    ref_out, ref_events, _ = feed(whole, stream, [])
    assert ref_out == stream
    ref_state = counters(whole)
    for cut in range(len(stream) + 1):
        s = impl.FrameScanner(masked=True, report_messages=True)
        out, events, tail = feed(s, stream, [cut])
        assert (out, events, tail, counters(s)) == (stream, ref_events, b"", ref_state), cut


def test_split_at_every_pair_of_points(impl):
    stream = b"".join([cframe(1, b"ab", fin=False), cframe(9, b"ping!"), cframe(0, b"c"),
                       cframe(2, b"q" * 130), cframe(8, b"")])
    ref = feed(impl.FrameScanner(masked=True, report_messages=True), stream, [])
    for cuts in itertools.combinations(range(len(stream) + 1), 2):
        s = impl.FrameScanner(masked=True, report_messages=True)
        assert feed(s, stream, cuts) == ref, cuts


def test_byte_by_byte(impl):
    stream = sample_stream()
    spans = header_and_control_spans(stream)
    s = impl.FrameScanner(masked=True, report_messages=True)
    ref = feed(impl.FrameScanner(masked=True, report_messages=True), stream, [])
    tail, pos, events = b"", 0, []
    for i in range(len(stream)):
        data = tail + stream[i : i + 1]
        consumed = s.scan(data)
        events += [ev[:2] + (ev[2] + pos,) + ev[3:] for ev in s.events]
        pos += consumed
        tail = data[consumed:]
        # Never stop inside a header or a control frame.
        assert not any(a < pos < b for a, b in spans), pos
        assert len(tail) <= 139
    assert pos == len(stream) and events == ref[1]


def test_partial_header_is_not_consumed(impl):
    frame = raw_frame(2, b"a" * 70000, key=KEY)  # 14-byte header
    for k in range(14):
        s = impl.FrameScanner(masked=True)
        assert s.scan(frame[:k]) == 0
        assert s.frames == 0 and s.at_boundary
    s = impl.FrameScanner(masked=True)
    assert s.scan(frame[:14]) == 14
    assert s.frames == 1 and not s.at_boundary


def test_data_payload_consumed_as_it_arrives(impl):
    frame = cframe(2, b"a" * 1000)
    s = impl.FrameScanner(masked=True)
    assert s.scan(frame[:10]) == 10  # header (8) + 2 payload bytes
    assert s.payload_bytes == 2 and not s.at_boundary
    assert s.scan(frame[10:500]) == 490
    assert s.scan(frame[500:] + frame[:3]) == len(frame) - 500  # next header still partial
    assert s.at_boundary and s.payload_bytes == 1000 and s.messages == 1


def test_control_frame_held_back_until_complete(impl):
    ping = cframe(9, b"p" * 125)
    s = impl.FrameScanner(masked=True)
    for k in range(len(ping)):
        assert s.scan(ping[:k]) == 0
        assert s.events == []
    assert s.scan(ping) == len(ping)
    assert s.events == [(impl.EV_CONTROL, 9, 6, 125, KEY)]


def test_large_frames(impl):
    payload = bytes(range(256)) * 300  # 76800 bytes: 64-bit length
    stream = cframe(2, payload) + cframe(1, b"x" * 65535) + cframe(8, b"")
    s = impl.FrameScanner(masked=True, report_messages=True)
    out, events, tail = feed(s, stream, [5, 1000, 76813, 76814, 100000])
    assert out == stream and tail == b""
    assert [e for e in events if e[0] == impl.EV_MESSAGE_END] == [
        (impl.EV_MESSAGE_END, 2, 14 + 76800, 76800),
        (impl.EV_MESSAGE_END, 1, 14 + 76800 + 8 + 65535, 65535),
    ]


# -- events, counters, state ---------------------------------------------------------------------


def test_control_event_fields_and_payload_is_readable(impl):
    s = impl.FrameScanner(masked=True)
    lead = cframe(1, b"text")
    data = lead + cframe(9, b"hello") + cframe(10, b"")
    assert s.scan(data) == len(data)
    ping, pong = s.events
    assert ping == (impl.EV_CONTROL, 9, len(lead) + 6, 5, KEY)
    buf = bytearray(data[ping[2] : ping[2] + ping[3]])
    impl.apply_mask(buf, ping[4])
    assert buf == b"hello"
    assert pong == (impl.EV_CONTROL, 10, len(data), 0, KEY)


def test_control_event_unmasked_has_no_key(impl):
    s = impl.FrameScanner(masked=False)
    assert s.scan(raw_frame(9, b"abc")) == 5
    assert s.events == [(impl.EV_CONTROL, 9, 2, 3, None)]


def test_no_message_events_by_default(impl):
    s = impl.FrameScanner(masked=True)
    s.scan(cframe(1, b"a") + cframe(2, b"b", fin=False) + cframe(0, b"c"))
    assert s.events == [] and s.messages == 2


def test_message_events(impl):
    s = impl.FrameScanner(masked=True, report_messages=True)
    a = cframe(1, b"abc", fin=False)
    b = cframe(9, b"")
    c = cframe(0, b"de")
    d = cframe(2, b"")  # zero-length FIN frame: ends at its header's end
    assert s.scan(a + b + c + d) == len(a + b + c + d)
    ev, end = impl.EV_MESSAGE_START, impl.EV_MESSAGE_END
    assert s.events == [
        (ev, 1, 0, False),
        (impl.EV_CONTROL, 9, len(a) + 6, 0, KEY),
        (end, 1, len(a + b + c), 5),
        (ev, 2, len(a + b + c), False),
        (end, 2, len(a + b + c + d), 0),
    ]


def test_message_end_in_a_later_chunk(impl):
    s = impl.FrameScanner(masked=True, report_messages=True)
    frame = cframe(2, b"x" * 50)
    assert s.scan(frame[:20]) == 20
    assert s.events == [(impl.EV_MESSAGE_START, 2, 0, False)]
    assert s.in_message and s.opcode_open == 2 and not s.at_boundary
    assert s.scan(frame[20:]) == len(frame) - 20
    assert s.events == [(impl.EV_MESSAGE_END, 2, len(frame) - 20, 50)]
    assert not s.in_message and s.opcode_open == 0 and s.at_boundary


def test_events_emptied_on_every_call(impl):
    s = impl.FrameScanner(masked=True)
    s.scan(cframe(9))
    assert len(s.events) == 1
    s.scan(b"")
    assert s.events == []


def test_counters_and_state(impl):
    s = impl.FrameScanner(masked=True)
    assert counters(s) == (0, 0, 0, 0, 0, True, False, False, 0)
    s.scan(cframe(1, b"ab", fin=False))
    assert counters(s) == (1, 0, 0, 2, 8, True, True, False, 1)
    s.scan(cframe(9, b"xyz"))
    assert counters(s) == (2, 0, 1, 5, 17, True, True, False, 1)
    part = cframe(0, b"cdef")
    s.scan(part[:7])
    assert counters(s) == (3, 0, 1, 6, 24, False, True, False, 1)
    s.scan(part[7:])
    assert counters(s) == (3, 1, 1, 9, 27, True, False, False, 0)
    s.scan(cframe(8, b"\x03\xe8"))
    assert counters(s) == (4, 1, 2, 11, 35, True, False, True, 0)


def test_read_only_attributes(impl):
    s = impl.FrameScanner(masked=True)
    for name in ("frames", "messages", "control_frames", "payload_bytes", "bytes", "at_boundary",
                 "in_message", "closed", "opcode_open", "events"):
        with pytest.raises(AttributeError):
            setattr(s, name, 1)


def test_scan_accepts_bytes_like(impl):
    stream = cframe(1, b"abc") + cframe(9, b"z")
    for data in (stream, bytearray(stream), memoryview(stream), memoryview(b"--" + stream)[2:],
                 array.array("B", stream)):
        s = impl.FrameScanner(masked=True)
        assert s.scan(data) == len(stream)
        assert s.events == [(impl.EV_CONTROL, 9, 15, 1, KEY)]


def test_scan_rejects_non_buffers(impl):
    s = impl.FrameScanner(masked=True)
    with pytest.raises(TypeError):
        s.scan("text")
    with pytest.raises(BufferError):
        s.scan(memoryview(cframe(1, b"abcdef"))[::2])


# -- the close frame ends the scan ---------------------------------------------------------------


def test_close_stops_the_scan(impl):
    s = impl.FrameScanner(masked=True)
    head = cframe(1, b"bye") + cframe(8, b"\x03\xe8")
    assert s.scan(head + cframe(1, b"after")) == len(head)
    assert s.closed and s.at_boundary
    assert s.scan(b"") == 0
    exc = scan_error(s, cframe(1, b"after"))
    assert (exc.code, exc.reason, exc.offset) == (1002, "data after close frame", 0)
    assert s.events == []


def test_close_held_back_until_complete(impl):
    close = cframe(8, b"\x03\xe8going")
    s = impl.FrameScanner(masked=True)
    assert s.scan(close[:-1]) == 0 and not s.closed
    assert s.scan(close) == len(close) and s.closed


# -- masking ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 1000, 65537])
@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_apply_mask_against_reference(impl, n, phase):
    data = bytes((i * 7 + 3) & 0xFF for i in range(n))
    buf = bytearray(data)
    assert impl.apply_mask(buf, KEY, phase) == (phase + n) % 4
    assert buf == xor(data, KEY, phase)
    impl.apply_mask(buf, KEY, phase)
    assert buf == data


def test_apply_mask_piece_by_piece(impl):
    data = bytes(range(256)) * 5
    whole = bytearray(data)
    impl.apply_mask(whole, KEY)
    for cuts in ([1], [3, 4, 9], [5, 6, 7, 8, 100, 1001], list(range(0, 1280, 13))):
        buf = bytearray(data)
        view = memoryview(buf)
        phase = 0
        for a, b in zip([0, *cuts], [*cuts, len(data)]):
            phase = impl.apply_mask(view[a:b], KEY, phase)
        assert buf == whole, cuts


def test_apply_mask_unaligned_views(impl):
    data = bytes(range(100))
    for start in range(9):
        buf = bytearray(data)
        impl.apply_mask(memoryview(buf)[start : start + 80], b"\x01\x02\x04\x08")
        assert buf[:start] == data[:start] and buf[start + 80 :] == data[start + 80 :]
        assert buf[start : start + 80] == xor(data[start : start + 80], b"\x01\x02\x04\x08")


def test_apply_mask_accepts_bytes_like_mask(impl):
    for mask in (KEY, bytearray(KEY), memoryview(b"xx" + KEY)[2:]):
        buf = bytearray(b"abcdef")
        impl.apply_mask(buf, mask)
        assert buf == xor(b"abcdef", KEY)


def test_apply_mask_errors(impl):
    with pytest.raises((TypeError, BufferError)):
        impl.apply_mask(b"read-only", KEY)
    with pytest.raises((TypeError, BufferError)):
        impl.apply_mask(memoryview(bytearray(8)).toreadonly(), KEY)
    with pytest.raises(ValueError):
        impl.apply_mask(bytearray(8), b"abc")
    with pytest.raises(ValueError):
        impl.apply_mask(bytearray(8), b"abcde")
    with pytest.raises(ValueError):
        impl.apply_mask(bytearray(8), KEY, 4)
    with pytest.raises(ValueError):
        impl.apply_mask(bytearray(8), KEY, -1)
    with pytest.raises(TypeError):
        impl.apply_mask(bytearray(8), 1234)


# -- close payloads --------------------------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_parse_close_valid(impl, code):
    assert impl.valid_close_code(code)
    assert impl.parse_close(code.to_bytes(2, "big") + "sé".encode()) == (code, "sé")
    assert impl.parse_close(bytearray(code.to_bytes(2, "big"))) == (code, "")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_parse_close_invalid_code(impl, code):
    assert not impl.valid_close_code(code)
    with pytest.raises(FrameError) as info:
        impl.parse_close(code.to_bytes(2, "big") + b"x")
    assert (info.value.code, info.value.reason) == (1002, f"invalid close code {code}")


def test_valid_close_code_edges(impl):
    assert not impl.valid_close_code(-1000)
    assert not impl.valid_close_code(1 << 70)
    with pytest.raises(TypeError):
        impl.valid_close_code("1000")


def test_parse_close_empty_and_one_byte(impl):
    assert impl.parse_close(b"") == (None, "")
    with pytest.raises(FrameError) as info:
        impl.parse_close(b"\x03")
    assert (info.value.code, info.value.reason) == (1002, "close frame payload of 1 byte")


@pytest.mark.parametrize("reason", [b"\xff", b"abc\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_parse_close_bad_utf8(impl, reason):
    with pytest.raises(FrameError) as info:
        impl.parse_close(b"\x03\xe8" + reason)
    assert (info.value.code, info.value.reason) == (1007, "close reason is not valid UTF-8")


# -- building frames, checked by wsproto -----------------------------------------------------------


def wsproto_frames(data: bytes, *, masked: bool):
    decoder = FrameDecoder(client=not masked)
    decoder.receive_bytes(data)
    frames = []
    while (frame := decoder.process_buffer()) is not None:
        frames.append(frame)
    return frames


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 70001])
@pytest.mark.parametrize("opcode", [1, 2])
def test_build_data_frame(impl, mask, n, opcode):
    payload = bytes(i % 251 for i in range(n))
    frame = impl.build_frame(opcode, payload, mask=mask)
    assert type(frame) is bytes
    hlen = (2 if n < 126 else 4 if n < 65536 else 10) + (4 if mask else 0)
    assert len(frame) == hlen + n  # minimal length encoding
    [f] = wsproto_frames(frame, masked=mask)
    assert (f.opcode, f.payload, f.frame_finished, f.message_finished) == (Opcode(opcode), payload, True, True)
    s = impl.FrameScanner(masked=mask)
    assert s.scan(frame) == len(frame)


@pytest.mark.parametrize("mask", [False, True])
def test_build_fragments_and_control(impl, mask):
    frames = [impl.build_frame(1, b"abc", fin=False, mask=mask), impl.build_frame(9, b"ping", mask=mask),
              impl.build_frame(0, b"def", mask=mask), impl.build_frame(10, b"x" * 125, mask=mask)]
    got = wsproto_frames(b"".join(frames), masked=mask)
    assert [(f.opcode, f.payload, f.message_finished) for f in got] == [
        (Opcode.TEXT, b"abc", False), (Opcode.PING, b"ping", True),
        (Opcode.CONTINUATION, b"def", True), (Opcode.PONG, b"x" * 125, True)]


def test_build_frame_masks_with_fresh_keys(impl):
    a = impl.build_frame(2, b"\x00" * 16, mask=True)
    b = impl.build_frame(2, b"\x00" * 16, mask=True)
    assert a[2:6] != b[2:6]  # 1 chance in 2**32 of a false failure
    assert a[6:] == a[2:6] * 4  # zeros masked = the key repeated


def test_build_frame_rsv1(impl):
    frame = impl.build_frame(2, b"z", rsv1=True)
    assert frame[0] == 0xC2
    s = impl.FrameScanner(masked=False, allow_rsv1=True, report_messages=True)
    s.scan(frame)
    assert s.events[0] == (impl.EV_MESSAGE_START, 2, 0, True)


def test_build_frame_rejects_invalid(impl):
    for kwargs in ({"opcode": 3}, {"opcode": 11}, {"opcode": 9, "payload": b"x" * 126},
                   {"opcode": 8, "fin": False}, {"opcode": 10, "rsv1": True}):
        with pytest.raises(ValueError):
            impl.build_frame(**kwargs)
    with pytest.raises(TypeError):
        impl.build_frame(1, "text")


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "going away"), (1011, "ünïcödé"), (4999, "x" * 123)])
def test_build_close(impl, mask, code, reason):
    frame = impl.build_close(code, reason, mask=mask)
    [f] = wsproto_frames(frame, masked=mask)
    assert f.opcode == Opcode.CLOSE
    assert impl.parse_close(f.payload) == (code, reason)


def test_build_close_truncates_at_a_character_boundary(impl):
    reason = "é" * 100  # 200 bytes of 2-byte characters
    frame = impl.build_close(1000, reason)
    [f] = wsproto_frames(frame, masked=False)
    assert len(f.payload) == 124  # 2 + 61 * 2: the 62nd character would cut at 125
    assert impl.parse_close(f.payload) == (1000, "é" * 61)
    emoji = impl.build_close(1000, "😀" * 40)
    code, text = impl.parse_close(wsproto_frames(emoji, masked=False)[0].payload)
    assert text == "😀" * 30  # 120 bytes fit in 123


def test_build_close_empty_and_invalid(impl):
    assert impl.build_close() == b"\x88\x00"
    assert wsproto_frames(impl.build_close(mask=True), masked=True)[0].payload == b""
    for code in (1005, 1006, 999, 5000, 1015):
        with pytest.raises(ValueError):
            impl.build_close(code)
    with pytest.raises(ValueError):
        impl.build_close(None, "reason without code")
