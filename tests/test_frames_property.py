"""Property tests of the frame scanner: random streams of valid and invalid frames, split at random
points. Both twins must agree exactly (per-call consumed counts, events, counters, errors with their
absolute stream position), and valid streams must agree with wsproto's frame decoder, an
independent implementation of RFC 6455 section 5."""

import dataclasses
import os
import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder, Opcode, ParseFailed, RsvBits

import fastgw._frames_py as twin
from fastgw.errors import FrameError

SETTINGS = settings(
    max_examples=int(os.environ.get("FASTGW_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


# -- building streams ------------------------------------------------------------------------------


def xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


@dataclasses.dataclass
class Spec:
    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0  # 3 bits: 4 = RSV1, 2 = RSV2, 1 = RSV3
    key: bytes | None = None
    form: int | None = None  # 7, 16, 64: force a length encoding
    length: int | None = None  # declared length, if not len(payload)

    def encode(self) -> bytes:
        n = len(self.payload) if self.length is None else self.length
        out = bytearray([(0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode])
        mbit = 0x80 if self.key is not None else 0
        form = self.form or (7 if n < 126 else 16 if n < 65536 else 64)
        if form == 7:
            out.append(mbit | n)
        elif form == 16:
            out.append(mbit | 126)
            out += n.to_bytes(2, "big")
        else:
            out.append(mbit | 127)
            out += n.to_bytes(8, "big")
        if self.key is None:
            return bytes(out) + self.payload
        return bytes(out) + self.key + xor(self.payload, self.key)


@dataclasses.dataclass
class Scenario:
    specs: list
    stream: bytes
    config: dict
    fault: str | None = None
    fault_pos: int = -1  # absolute position where the error must be reported
    fault_code: int = 0
    wsproto_rejects: bool = False  # a header fault wsproto's decoder checks too


DATA_SIZES = st.one_of(
    st.integers(0, 24),
    st.sampled_from([0, 1, 125, 126, 127, 1000, 65535, 65536, 70000]),
)
CONTROL_SIZES = st.one_of(st.integers(0, 8), st.sampled_from([0, 1, 2, 124, 125]))
CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
FAULTS = ["reserved_opcode", "rsv23", "rsv1", "rsv1_cont", "rsv1_control", "control_too_long",
          "fragmented_control", "cont_no_message", "data_in_message", "mask", "msb",
          "non_minimal", "frame_too_big", "message_too_big", "after_close"]
WSPROTO_CHECKS = {"reserved_opcode", "rsv23", "rsv1", "control_too_long", "fragmented_control",
                  "mask", "msb", "non_minimal"}


@st.composite
def scenarios(draw, *, fault: bool, kinds=tuple(FAULTS)):
    kind = draw(st.sampled_from(sorted(kinds))) if fault else None
    masked = draw(st.booleans())
    if kind == "rsv1":
        allow_rsv1 = False
    elif kind in ("rsv1_cont", "rsv1_control"):
        allow_rsv1 = True
    else:
        allow_rsv1 = draw(st.booleans())
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))

    def key():
        return rnd.randbytes(4) if masked else None

    specs, in_msg, msg_len, max_frame, max_msg = [], False, 0, 0, 0
    for _ in range(draw(st.integers(0, 10))):
        if draw(st.integers(0, 3)) == 0:  # a control frame, possibly inside a message
            spec = Spec(draw(st.sampled_from([9, 10])), rnd.randbytes(draw(CONTROL_SIZES)), key=key())
        else:
            opcode = 0 if in_msg else draw(st.sampled_from([1, 2]))
            fin = draw(st.booleans())
            rsv = 4 if allow_rsv1 and opcode and draw(st.booleans()) else 0
            spec = Spec(opcode, rnd.randbytes(draw(DATA_SIZES)), fin=fin, rsv=rsv, key=key())
            msg_len = (msg_len if in_msg else 0) + len(spec.payload)
            max_msg = max(max_msg, msg_len)
            in_msg = not fin
        max_frame = max(max_frame, len(spec.payload))
        specs.append(spec)

    config = {"masked": masked, "allow_rsv1": allow_rsv1, "max_frame_size": 0, "max_message_size": 0}
    if not fault:
        if draw(st.booleans()):
            code = draw(st.sampled_from(CLOSE_CODES))
            reason = draw(st.text(max_size=20)).encode()[:100]
            specs.append(Spec(8, code.to_bytes(2, "big") + reason, key=key()))
            max_frame = max(max_frame, len(specs[-1].payload))
        if draw(st.booleans()):  # limits that are never exceeded still run their checks
            config["max_frame_size"] = max_frame + draw(st.integers(0, 3)) or 1
            config["max_message_size"] = max_msg + draw(st.integers(0, 3)) or 1
        stream = b"".join(s.encode() for s in specs)
        return Scenario(specs, stream, config)

    # Put the stream in the state the fault needs: inside a fragmented message or not.
    if kind in ("data_in_message", "rsv1_cont") and not in_msg:
        specs.append(Spec(draw(st.sampled_from([1, 2])), rnd.randbytes(draw(st.integers(0, 5))), fin=False, key=key()))
        msg_len = len(specs[-1].payload)
        max_msg, max_frame, in_msg = max(max_msg, msg_len), max(max_frame, msg_len), True
    elif kind == "cont_no_message" and in_msg:
        specs.append(Spec(0, rnd.randbytes(draw(st.integers(0, 5))), key=key()))
        msg_len += len(specs[-1].payload)
        max_msg, max_frame, in_msg = max(max_msg, msg_len), max(max_frame, len(specs[-1].payload)), False
    prefix = b"".join(s.encode() for s in specs)
    event(f"fault: {kind}")
    data_op = 0 if in_msg else draw(st.sampled_from([1, 2]))
    pos, code = len(prefix), 1002
    if kind == "reserved_opcode":
        bad = Spec(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), b"x",
                   fin=draw(st.booleans()), rsv=draw(st.integers(0, 7)), key=key())
    elif kind == "rsv23":
        bad = Spec(draw(st.sampled_from([data_op, 9])), b"ab", rsv=draw(st.sampled_from([1, 2, 3, 5, 7])), key=key())
    elif kind == "rsv1":
        bad = Spec(draw(st.sampled_from([data_op, 8, 9, 10])), b"ab", rsv=4, key=key())
    elif kind == "rsv1_cont":
        bad = Spec(0, b"ab", rsv=4, key=key())
    elif kind == "rsv1_control":
        bad = Spec(draw(st.sampled_from([8, 9, 10])), b"ab", rsv=4, fin=draw(st.booleans()), key=key())
    elif kind == "control_too_long":
        bad = Spec(draw(st.sampled_from([8, 9, 10])), rnd.randbytes(draw(st.integers(126, 300))), key=key())
    elif kind == "fragmented_control":
        bad = Spec(draw(st.sampled_from([8, 9, 10])), b"", fin=False, key=key())
    elif kind == "cont_no_message":
        bad = Spec(0, b"abc", fin=draw(st.booleans()), key=key())
    elif kind == "data_in_message":
        bad = Spec(draw(st.sampled_from([1, 2])), b"abc", fin=draw(st.booleans()), key=key())
    elif kind == "mask":
        bad = Spec(draw(st.sampled_from([data_op, 9])), b"abc", key=None if masked else b"\x01\x02\x03\x04")
    elif kind == "msb":
        bad = Spec(data_op, b"", form=64, length=(1 << 63) | draw(st.integers(0, 1 << 40)), key=key())
    elif kind == "non_minimal":
        # The edges most of all: one byte short of needing the longer encoding.
        form, n = draw(st.sampled_from([(16, 125), (64, 65535), (16, 125), (64, 65535), (16, 0), (64, 0), (64, 126)]))
        bad = Spec(data_op, rnd.randbytes(n), form=form, key=key())
    elif kind == "frame_too_big":
        config["max_frame_size"] = max(max_frame, 1)
        bad = Spec(data_op, rnd.randbytes(config["max_frame_size"] + draw(st.integers(1, 100))), key=key())
    elif kind == "message_too_big":
        config["max_message_size"] = max(max_msg, 1)
        running = msg_len if in_msg else 0
        need = config["max_message_size"] - running + draw(st.integers(1, 100))
        bad = Spec(data_op, rnd.randbytes(need), fin=draw(st.booleans()), key=key())
    else:  # after_close
        close = Spec(8, b"\x03\xe8", key=key())
        specs.append(close)
        pos += len(close.encode())
        bad = Spec(data_op, b"late", key=key())
    if kind in ("frame_too_big", "message_too_big"):
        code = 1009
    specs.append(bad)
    for _ in range(draw(st.integers(0, 2))):  # whatever follows is never reached
        specs.append(Spec(draw(st.sampled_from([1, 2, 9])), rnd.randbytes(draw(CONTROL_SIZES)), key=key()))
    stream = b"".join(s.encode() for s in specs)
    return Scenario(specs, stream, config, kind, pos, code, kind in WSPROTO_CHECKS)


def cuts_for(draw, stream: bytes):
    return sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))


# -- running a scanner the way a caller does -------------------------------------------------------


def run(module, scenario: Scenario, cuts, *, report_messages=True):
    """Feed the stream in chunks (tail + next chunk each call, one more call for a leftover
    tail). Returns the trace: per call (consumed, events), then counters, then the error."""
    s = module.FrameScanner(report_messages=report_messages, **scenario.config)
    bounds = [0, *cuts, len(scenario.stream)]
    chunks = [scenario.stream[a:b] for a, b in zip(bounds, bounds[1:])]
    calls, pos, tail, error = [], 0, b"", None
    for chunk in [*chunks, b""]:
        data = tail + chunk
        if not chunk and not tail:
            continue
        try:
            consumed = s.scan(data)
        except FrameError as exc:
            assert type(exc) is FrameError
            assert 0 <= exc.offset <= len(data)
            error = (exc.code, exc.reason, pos + exc.offset)
            calls.append(("error", list(s.events)))
            break
        assert 0 <= consumed <= len(data)
        calls.append((consumed, list(s.events)))
        pos += consumed
        tail = data[consumed:]
    state = (s.frames, s.messages, s.control_frames, s.payload_bytes, s.bytes, s.at_boundary,
             s.in_message, s.closed, s.opcode_open)
    return calls, state, error, pos, tail


# -- the twins agree -------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), fault=st.booleans(), report=st.booleans())
def test_twins_agree(c_module, data, fault, report):
    c = c_module
    scenario = data.draw(scenarios(fault=fault))
    cuts = cuts_for(data.draw, scenario.stream)
    got_c = run(c, scenario, cuts, report_messages=report)
    got_py = run(twin, scenario, cuts, report_messages=report)
    assert got_c == got_py
    calls, state, error, pos, tail = got_c
    if fault:
        assert error is not None and error[0] == scenario.fault_code, scenario.fault
        assert error[2] == scenario.fault_pos, scenario.fault
        assert state[4] == scenario.fault_pos  # bytes consumed before the offending frame
    else:
        assert error is None and pos == len(scenario.stream) and tail == b""


@SETTINGS
@given(data=st.data())
def test_faults_are_reported_identically_however_split(impl, data):
    scenario = data.draw(scenarios(fault=True))
    one = run(impl, scenario, [])
    split = run(impl, scenario, cuts_for(data.draw, scenario.stream))
    assert one[2] is not None, scenario.fault
    assert one[2] == split[2] == (scenario.fault_code, one[2][1], scenario.fault_pos)
    assert one[1] == split[1]  # counters at the error


# -- valid streams agree with wsproto ------------------------------------------------------------


class Rsv1Passthrough:
    """A wsproto extension that claims RSV1 on every frame and leaves payloads alone, standing in
    for permessage-deflate when allow_rsv1 is on (the scanner never decompresses)."""

    def enabled(self):
        return True

    def frame_inbound_header(self, proto, opcode, rsv, payload_len):
        return RsvBits(True, False, False)

    def frame_inbound_payload_data(self, proto, data):
        return data

    def frame_inbound_complete(self, proto, fin):
        return None


def wsproto_decode(scenario: Scenario):
    """wsproto's frames until the end or the first ParseFailed: ([(opcode, payload, fin)], failed)."""
    extensions = [Rsv1Passthrough()] if scenario.config["allow_rsv1"] else []
    decoder = FrameDecoder(client=not scenario.config["masked"], extensions=extensions)
    decoder.receive_bytes(scenario.stream)
    frames = []
    try:
        while (frame := decoder.process_buffer()) is not None:
            assert frame.frame_finished
            frames.append((int(frame.opcode), bytes(frame.payload), frame.message_finished))
            if frame.opcode == Opcode.CLOSE:
                break
    except ParseFailed:
        return frames, True
    return frames, False


def header_len(stream: bytes, pos: int) -> int:
    n = stream[pos + 1] & 0x7F
    return (2 if n < 126 else 4 if n == 126 else 10) + (4 if stream[pos + 1] & 0x80 else 0)


def unmask_at(stream: bytes, start: int, length: int, key) -> bytes:
    buf = bytearray(stream[start : start + length])
    if key is not None:
        twin.apply_mask(buf, key)
    return bytes(buf)


@SETTINGS
@given(data=st.data())
def test_valid_streams_agree_with_wsproto(impl, data):
    scenario = data.draw(scenarios(fault=False))
    cuts = cuts_for(data.draw, scenario.stream)
    calls, state, error, pos, tail = run(impl, scenario, cuts)
    assert error is None and pos == len(scenario.stream) and tail == b""
    frames, failed = wsproto_decode(scenario)
    assert not failed

    # What wsproto saw, as the scanner reports it: control frames, message starts and ends.
    expected, first, total, msg_op = [], None, 0, None
    for spec, (opcode, payload, fin) in zip(scenario.specs, frames):
        if opcode >= 8:
            expected.append(("control", opcode, payload))
            continue
        if opcode:
            expected.append(("start", opcode, bool(spec.rsv & 4)))
            msg_op, first, total = opcode, payload, 0
        total += len(payload)
        if fin:
            expected.append(("end", msg_op, total, first, payload))
    assert len(frames) == len(scenario.specs)

    # The scanner's events with absolute offsets, read back from the stream.
    got, offset, start = [], 0, None
    for consumed, events in calls:
        for ev in events:
            kind, opcode, at = ev[0], ev[1], ev[2] + offset
            if kind == impl.EV_CONTROL:
                got.append(("control", opcode, unmask_at(scenario.stream, at, ev[3], ev[4])))
            elif kind == impl.EV_MESSAGE_START:
                start = at
                got.append(("start", opcode, ev[3]))
            else:
                length = ev[3]
                # The first fragment follows the header at the start offset; the last one ends
                # at the end offset (each with its own key, just before its payload).
                e = expected[len(got)] if len(got) < len(expected) else None
                first_len = len(e[3]) if e else 0
                last_len = len(e[4]) if e else 0
                masked = scenario.config["masked"]
                h = start + header_len(scenario.stream, start)
                first_key = scenario.stream[h - 4 : h] if masked else None
                last_key = scenario.stream[at - last_len - 4 : at - last_len] if masked else None
                got.append(("end", opcode, length, unmask_at(scenario.stream, h, first_len, first_key),
                            unmask_at(scenario.stream, at - last_len, last_len, last_key)))
        offset += consumed
    assert got == expected

    frames_n, messages, controls, payload_bytes, nbytes, boundary, in_msg, closed, op_open = state
    assert frames_n == len(frames)
    assert controls == sum(1 for f in frames if f[0] >= 8)
    assert messages == sum(1 for f in frames if f[0] < 8 and f[2])
    assert payload_bytes == sum(len(f[1]) for f in frames)
    assert nbytes == len(scenario.stream) and boundary
    last_data = [f for f in frames if f[0] < 8]
    assert in_msg == bool(last_data and not last_data[-1][2])
    assert closed == bool(frames and frames[-1][0] == 8)
    if closed:
        code, reason = impl.parse_close(frames[-1][1])
        assert code in CLOSE_CODES


@SETTINGS
@given(data=st.data())
def test_header_faults_rejected_by_wsproto_at_the_same_frame(impl, data):
    scenario = data.draw(scenarios(fault=True, kinds=WSPROTO_CHECKS))
    assert scenario.wsproto_rejects
    frames, failed = wsproto_decode(scenario)
    assert failed
    error = run(impl, scenario, [])[2]
    # wsproto decoded exactly the frames before the one the scanner rejects.
    decoded = sum(len(s.encode()) for s in scenario.specs[: len(frames)])
    assert error[2] == decoded == scenario.fault_pos
