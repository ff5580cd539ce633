"""The frame engine's state export (live upgrade): a stream cut at any byte, its scanner and pump
state exported and imported into fresh ones, continues exactly as if it had never been cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_frames_property import SETTINGS, cuts_for, scenarios

from fastgw.errors import FrameError


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, data):
        self.data += bytes(data)

    def get_write_buffer_size(self):
        return 0

    def is_closing(self):
        return False


class Session:
    """Records what a pump reports, in a form that does not depend on which pump reported it."""

    def __init__(self, log):
        self.log = log

    def on_control(self, pump, data, consumed):
        self.log.append(("control", [(e[0], e[1], bytes(data[e[2]:e[2] + e[3]]))
                                     for e in pump.scanner.events if e[0] == 1]))
        return consumed

    def on_frame_error(self, pump, exc, data):
        self.log.append(("error", exc.code, exc.reason, bytes(data[:exc.offset])))

    def on_eof(self, pump):
        return False

    def on_connection_lost(self, pump, exc):
        pass


def relay(impl, scenario, cuts, handover_at=None):
    """Feed the stream chunk by chunk through a Pump; after chunk `handover_at`, move its state to
    a fresh scanner and pump. What was forwarded, what the session saw, the final state."""
    log: list = []
    sink = Sink()
    pump = impl.Pump(impl.FrameScanner(**scenario.config), Session(log), side="client")
    pump.sink = sink
    bounds = [0, *cuts, len(scenario.stream)]
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        pump.feed(scenario.stream[a:b])
        if i == handover_at and not pump.failed:
            tail, bytes_in = pump.export_state()
            state = pump.scanner.export_state()
            moved = impl.Pump(impl.FrameScanner.from_state(list(state)), Session(log),
                              side="client")
            moved.import_state(tail, bytes_in)
            moved.sink = sink
            assert moved.scanner.export_state() == state
            assert moved.export_state() == (tail, bytes_in)
            pump = moved
    return bytes(sink.data), log, pump.scanner.export_state(), pump.export_state()


@SETTINGS
@given(data=st.data(), fault=st.booleans())
def test_a_stream_moved_at_any_cut_continues_identically(impl, data, fault):
    scenario = data.draw(scenarios(fault=fault))
    cuts = cuts_for(data.draw, scenario.stream)
    at = data.draw(st.integers(0, len(cuts)))
    assert relay(impl, scenario, cuts, at) == relay(impl, scenario, cuts)


def test_every_byte_offset_is_a_valid_cut(impl):
    """A fixed stream cut at every offset: inside headers, payloads and control frames, inside a
    fragmented message, around a Ping between its fragments."""
    import fastgw._frames_py as twin
    key = b"\x01\x02\x03\x04"
    stream = (twin.build_frame(1, b"hello")[:1] + b"\x85" + key + bytes(5)
              + b"\x02\xfe\x01\x2c" + key + bytes(300)          # binary, not final, 300 bytes
              + b"\x89\x83" + key + b"abc"                         # a Ping inside the message
              + b"\x80\x84" + key + b"tail"                        # its final fragment
              + b"\x88\x82" + key + b"\x02\xea")                   # Close 1002... masked
    scenario = type("S", (), {"stream": stream, "config": {"masked": True}})()
    forwarded = relay(impl, scenario, [])[0]
    assert forwarded == stream
    for offset in range(len(stream) + 1):
        moved = relay(impl, scenario, [offset], 0)
        assert moved == relay(impl, scenario, [offset])
        assert moved[0] == forwarded


def test_state_is_the_same_in_both_engines(c_module):
    import fastgw._frames_py as twin
    stream = b"\x81\x7e\x01\x00" + b"x" * 100  # a text frame of 256 bytes, cut in its payload
    states = []
    for module in (c_module, twin):
        scanner = module.FrameScanner(masked=False, max_message_size=1000, report_messages=True)
        assert scanner.scan(stream) == len(stream)
        states.append(scanner.export_state())
    assert states[0] == states[1] == (0, 0, 0, 1000, 1, 156, 256, 1, 1, 1, 0, 1, 0, 0, 100, 104)


@pytest.mark.parametrize("state, problem", [
    ((0,) * 15, "16 integers"),
    ((0,) * 15 + (-1,), "16 integers"),
    ((0,) * 15 + (1 << 64,), "16 integers"),
    ((2,) + (0,) * 15, "flags"),
    ((0,) * 9 + (1,) + (0,) * 6, "open opcode"),
    ((0,) * 8 + (1, 3) + (0,) * 6, "open opcode"),
    ((0,) * 5 + (7,) + (0,) * 10, "payload due"),
    ((0.5,) + (0,) * 15, "16 integers"),
])
def test_impossible_states_are_refused(impl, state, problem):
    with pytest.raises(ValueError, match=problem):
        impl.FrameScanner.from_state(state)


def test_a_tail_longer_than_a_control_frame_is_refused(impl):
    pump = impl.Pump(impl.FrameScanner(masked=True), Session([]), side="client")
    with pytest.raises(ValueError, match="144"):
        pump.import_state(b"x" * 145, 145)
    with pytest.raises(ValueError, match="bytes_in"):
        pump.import_state(b"x" * 3, 2)


def test_a_moved_scanner_keeps_its_limits(impl):
    scanner = impl.FrameScanner(masked=False, max_message_size=10)
    scanner.scan(b"\x01\x05hello")  # 5 of the 10 bytes of an open message
    moved = impl.FrameScanner.from_state(scanner.export_state())
    with pytest.raises(FrameError) as caught:
        moved.scan(b"\x80\x06world!")
    assert caught.value.code == 1009
