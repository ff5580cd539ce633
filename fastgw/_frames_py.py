"""Pure-Python twin of fastgw._frames: the WebSocket frame engine (RFC 6455 section 5).

Same names, signatures, behaviour, error codes and reason strings as the Cython module; the test
suite runs on both (the `impl` fixture) and a hypothesis test requires identical results from both
on random frame streams split at random points. `fastgw/_frames.pyi` is the API reference.

The engine works on whole reads, never per frame in the caller: `FrameScanner.scan()` walks every
frame header in a chunk, validates it and says how many leading bytes may be forwarded now. It
never copies, unmasks or assembles a data payload (DESIGN.md section 3.3). `Pump` is the relay
buffer of one direction of a WebSocket session: the BufferedProtocol of one leg, writing what may
be forwarded to the other leg.

This module never imports asyncio (DESIGN.md section 1): a Pump is duck-typed as a buffered
protocol (uvloop decides by `hasattr(protocol, "get_buffer")`); loops that decide by
`isinstance(protocol, asyncio.BufferedProtocol)` call `data_received` instead.
"""

from __future__ import annotations

import operator
import os
import threading
import time

from fastgw.errors import FrameError

__all__ = [
    "OP_CONT",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED",
    "CLOSE_NO_STATUS",
    "CLOSE_ABNORMAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_TRY_AGAIN",
    "CLOSE_BAD_GATEWAY",
    "EV_CONTROL",
    "EV_MESSAGE_START",
    "EV_MESSAGE_END",
    "FrameScanner",
    "apply_mask",
    "parse_close",
    "valid_close_code",
    "build_frame",
    "build_close",
    "Pump",
]

# Opcodes (RFC 6455 section 5.2; 3-7 and 11-15 are reserved).
OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

# Close codes (RFC 6455 section 7.4.1; 1012-1014 from the IANA registry).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_NO_STATUS = 1005  # never on the wire: "no status code was present"
CLOSE_ABNORMAL = 1006  # never on the wire: "the connection was dropped" (DESIGN.md section 4)
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_GATEWAY = 1014

# Event kinds in FrameScanner.events.
EV_CONTROL = 1
EV_MESSAGE_START = 2
EV_MESSAGE_END = 3

# Reason strings of FrameError. The Cython module spells them identically (the differential tests
# compare reasons); each is short enough for a close frame (123 bytes, section 5.5.1).
R_RESERVED_OPCODE = "reserved opcode {}"
R_RSV23 = "reserved bit RSV2 or RSV3 set"
R_RSV1 = "RSV1 set without a negotiated extension"
R_RSV1_CONT = "RSV1 set on a continuation frame"
R_RSV1_CONTROL = "RSV1 set on a control frame"
R_CONTROL_FRAGMENTED = "fragmented control frame"
R_CONT_NO_MESSAGE = "continuation frame without an open message"
R_DATA_IN_MESSAGE = "new data frame inside a fragmented message"
R_UNMASKED = "unmasked frame where masking is required"
R_MASKED = "masked frame where masking is forbidden"
R_CONTROL_TOO_LONG = "control frame payload longer than 125 bytes"
R_LENGTH_MSB = "64-bit payload length with the most significant bit set"
R_NON_MINIMAL = "payload length not in its minimal encoding"
R_FRAME_TOO_BIG = "frame too big"
R_MESSAGE_TOO_BIG = "message too big"
R_AFTER_CLOSE = "data after close frame"
R_CLOSE_ONE_BYTE = "close frame payload of 1 byte"
R_CLOSE_CODE = "invalid close code {}"
R_CLOSE_UTF8 = "close reason is not valid UTF-8"

_MAX_CONTROL_PAYLOAD = 125  # section 5.5
_TAIL_CAP = 144  # the longest held-back tail: an incomplete control frame, < 6 + 125 bytes
_ARENA_SIZE = 64 * 1024
_ARENA_HEAD = 256  # room in front of the read window for a pump's held tail (>= _TAIL_CAP)


def _byte0_error(b0: int, in_message: bool, allow_rsv1: bool) -> tuple[int, str] | None:
    """The first violation that byte 0 of a frame header shows, in the one fixed order both twins
    use (so that a frame with several faults gives the same error everywhere), or None."""
    opcode = b0 & 0x0F
    if 3 <= opcode <= 7 or opcode >= 11:  # section 5.2: reserved for further (control) frames
        return CLOSE_PROTOCOL_ERROR, R_RESERVED_OPCODE.format(opcode)
    if b0 & 0x30:  # section 5.2: RSV2/RSV3 MUST be 0 unless an extension defines them (none does)
        return CLOSE_PROTOCOL_ERROR, R_RSV23
    if b0 & 0x40:
        # RSV1 means "compressed" under permessage-deflate, and only on the first frame of a data
        # message (RFC 7692 section 6: never on continuation or control frames).
        if not allow_rsv1:
            return CLOSE_PROTOCOL_ERROR, R_RSV1
        if opcode & 0x08:
            return CLOSE_PROTOCOL_ERROR, R_RSV1_CONTROL
        if opcode == OP_CONT:
            return CLOSE_PROTOCOL_ERROR, R_RSV1_CONT
    if opcode & 0x08:
        if not b0 & 0x80:  # section 5.5: control frames MUST NOT be fragmented
            return CLOSE_PROTOCOL_ERROR, R_CONTROL_FRAGMENTED
    elif opcode == OP_CONT:
        if not in_message:  # section 5.4: a continuation continues something
            return CLOSE_PROTOCOL_ERROR, R_CONT_NO_MESSAGE
    elif in_message:  # section 5.4: fragments of different messages MUST NOT interleave
        return CLOSE_PROTOCOL_ERROR, R_DATA_IN_MESSAGE
    return None


def _byte0_table(allow_rsv1: bool) -> tuple[tuple[tuple[int, str] | None, ...], ...]:
    return tuple(
        tuple(_byte0_error(b0, in_message, allow_rsv1) for b0 in range(256))
        for in_message in (False, True)
    )


# Byte 0 decides most rules; a lookup per header keeps the hot loop short.
_BYTE0 = {False: _byte0_table(False), True: _byte0_table(True)}


def _contiguous_bytes(data):
    """`data` as something indexable by byte: bytes as is, else an unsigned-byte memoryview."""
    if type(data) is bytes:
        return data
    view = memoryview(data)
    if not view.c_contiguous:
        raise BufferError("frame data must be a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def _checked_state(state) -> tuple[int, ...]:
    """The 16 integers of FrameScanner.export_state(), validated (ValueError otherwise)."""
    values = tuple(state)
    if len(values) != 16 or not all(type(v) is int and 0 <= v < (1 << 64) for v in values):
        raise ValueError("a scanner state is 16 integers in 0..2**64-1")
    for i in (0, 1, 4, 7, 8, 10):
        if values[i] > 1:
            raise ValueError("a scanner state's flags are 0 or 1")
    if values[9] not in (0, 1, 2) or (values[9] != 0) != bool(values[8]):
        raise ValueError("a scanner state's open opcode does not match its open message")
    if values[5] and not values[8]:
        raise ValueError("a scanner state with payload due has no open message")
    return values


class FrameScanner:
    """Validates one direction of one WebSocket connection, one chunk per call (see the .pyi)."""

    __slots__ = (
        "_masked",
        "_allow_rsv1",
        "_max_frame",
        "_max_message",
        "_report",
        "_byte0",
        "_events",
        "_remaining",
        "_cur_fin",
        "_in_message",
        "_opcode_open",
        "_message_length",
        "_closed",
        "_frames",
        "_messages",
        "_control_frames",
        "_payload_bytes",
        "_bytes",
    )

    def __init__(
        self,
        *,
        masked: bool,
        allow_rsv1: bool = False,
        max_frame_size: int = 0,
        max_message_size: int = 0,
        report_messages: bool = False,
    ):
        max_frame_size = int(max_frame_size)
        max_message_size = int(max_message_size)
        if max_frame_size < 0 or max_message_size < 0:
            raise ValueError("size limits must be >= 0 (0 means no limit)")
        if max_frame_size >= 1 << 64 or max_message_size >= 1 << 64:
            raise OverflowError("size limit too large")
        self._masked = bool(masked)
        self._allow_rsv1 = bool(allow_rsv1)
        self._max_frame = max_frame_size
        self._max_message = max_message_size
        self._report = bool(report_messages)
        self._byte0 = _BYTE0[self._allow_rsv1]
        self._events: list[tuple] = []  # see _frames.pyi: _Event
        self._remaining = 0  # payload bytes of the current data frame still due
        self._cur_fin = False  # FIN bit of the data frame whose payload is being consumed
        self._in_message = False
        self._opcode_open = 0
        self._message_length = 0
        self._closed = False
        self._frames = 0
        self._messages = 0
        self._control_frames = 0
        self._payload_bytes = 0
        self._bytes = 0

    # -- configuration and state (read-only) --------------------------------------------------
    masked = property(lambda self: self._masked)
    allow_rsv1 = property(lambda self: self._allow_rsv1)
    max_frame_size = property(lambda self: self._max_frame)
    max_message_size = property(lambda self: self._max_message)
    report_messages = property(lambda self: self._report)
    events = property(lambda self: self._events)
    frames = property(lambda self: self._frames)
    messages = property(lambda self: self._messages)
    control_frames = property(lambda self: self._control_frames)
    payload_bytes = property(lambda self: self._payload_bytes)
    bytes = property(lambda self: self._bytes)
    at_boundary = property(lambda self: self._remaining == 0)
    in_message = property(lambda self: self._in_message)
    closed = property(lambda self: self._closed)
    opcode_open = property(lambda self: self._opcode_open)

    def export_state(self) -> tuple[int, ...]:
        return (int(self._masked), int(self._allow_rsv1), self._max_frame, self._max_message,
                int(self._report), self._remaining, self._message_length, int(self._cur_fin),
                int(self._in_message), self._opcode_open, int(self._closed), self._frames,
                self._messages, self._control_frames, self._payload_bytes, self._bytes)

    @staticmethod
    def from_state(state) -> FrameScanner:
        values = _checked_state(state)
        scanner = FrameScanner(masked=bool(values[0]), allow_rsv1=bool(values[1]),
                               max_frame_size=values[2], max_message_size=values[3],
                               report_messages=bool(values[4]))
        scanner._remaining, scanner._message_length = values[5], values[6]
        scanner._cur_fin, scanner._in_message = bool(values[7]), bool(values[8])
        scanner._opcode_open, scanner._closed = values[9], bool(values[10])
        (scanner._frames, scanner._messages, scanner._control_frames, scanner._payload_bytes,
         scanner._bytes) = values[11:16]
        return scanner

    def __repr__(self) -> str:
        return (
            f"<FrameScanner masked={self._masked} frames={self._frames} "
            f"messages={self._messages} bytes={self._bytes} closed={self._closed}>"
        )

    def _fail(self, code: int, reason: str, pos: int):
        # The state stays as if this call had returned `pos`: the offending frame is not consumed,
        # and scanning from it again raises the same error.
        self._bytes += pos
        raise FrameError(code, reason, pos)

    def scan(self, data) -> int:
        events = self._events
        if events:
            events.clear()
        data = _contiguous_bytes(data)
        n = len(data)
        if self._closed:
            # Section 5.5.1: the Close frame is the last frame of its direction.
            if n:
                raise FrameError(CLOSE_PROTOCOL_ERROR, R_AFTER_CLOSE, 0)
            return 0
        pos = 0
        byte0 = self._byte0
        want_mask = 0x80 if self._masked else 0
        max_frame = self._max_frame
        max_message = self._max_message
        report = self._report
        while pos < n:
            remaining = self._remaining
            if remaining:
                # The rest of a data frame's payload: forwarded untouched, as it arrives.
                take = n - pos
                if take > remaining:
                    take = remaining
                pos += take
                self._payload_bytes += take
                remaining -= take
                self._remaining = remaining
                if not remaining and self._cur_fin:
                    self._end_message(pos)
                continue
            # A frame header (section 5.2). Every check runs as soon as its bytes are here.
            b0 = data[pos]
            err = byte0[self._in_message][b0]
            if err is not None:
                self._fail(err[0], err[1], pos)
            avail = n - pos
            if avail < 2:
                break
            b1 = data[pos + 1]
            if (b1 & 0x80) != want_mask:
                # Section 5.1: a client masks every frame, a server masks none.
                self._fail(CLOSE_PROTOCOL_ERROR, R_UNMASKED if want_mask else R_MASKED, pos)
            opcode = b0 & 0x0F
            control = opcode & 0x08
            length = b1 & 0x7F
            if length < 126:
                hlen = 2
            elif control:
                # Section 5.5: control frame payloads are at most 125 bytes.
                self._fail(CLOSE_PROTOCOL_ERROR, R_CONTROL_TOO_LONG, pos)
            elif length == 126:
                hlen = 4
                if avail < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                if length < 126:
                    # Section 5.2: "the minimal number of bytes MUST be used".
                    self._fail(CLOSE_PROTOCOL_ERROR, R_NON_MINIMAL, pos)
            else:
                hlen = 10
                if avail < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    # Section 5.2: "the most significant bit MUST be 0".
                    self._fail(CLOSE_PROTOCOL_ERROR, R_LENGTH_MSB, pos)
                if length < 65536:
                    self._fail(CLOSE_PROTOCOL_ERROR, R_NON_MINIMAL, pos)
            if max_frame and length > max_frame:
                self._fail(CLOSE_TOO_BIG, R_FRAME_TOO_BIG, pos)
            if max_message and not control:
                total = length + self._message_length if opcode == OP_CONT else length
                if total > max_message:
                    self._fail(CLOSE_TOO_BIG, R_MESSAGE_TOO_BIG, pos)
            if want_mask:
                hlen += 4
            if avail < hlen:
                break
            fin = b0 & 0x80
            if control:
                # Held back until the whole frame is here, so that the caller can read it.
                if avail - hlen < length:
                    break
                events.append(
                    (
                        EV_CONTROL,
                        opcode,
                        pos + hlen,
                        length,
                        bytes(data[pos + hlen - 4 : pos + hlen]) if want_mask else None,
                    )
                )
                self._frames += 1
                self._control_frames += 1
                self._payload_bytes += length
                pos += hlen + length
                if opcode == OP_CLOSE:
                    # Section 5.5.1: nothing follows a Close frame; the scan stops right here.
                    self._closed = True
                    break
                continue
            # A data frame: consume its header and whatever part of its payload is here.
            self._frames += 1
            if opcode != OP_CONT:
                self._in_message = True
                self._opcode_open = opcode
                self._message_length = 0
                if report:
                    events.append((EV_MESSAGE_START, opcode, pos, bool(b0 & 0x40)))
            self._message_length += length
            self._cur_fin = bool(fin)
            pos += hlen
            take = n - pos
            if take > length:
                take = length
            pos += take
            self._payload_bytes += take
            self._remaining = length - take
            if take == length and fin:
                self._end_message(pos)
        self._bytes += pos
        return pos

    def _end_message(self, end: int) -> None:
        self._messages += 1
        if self._report:
            self._events.append((EV_MESSAGE_END, self._opcode_open, end, self._message_length))
        self._in_message = False
        self._opcode_open = 0
        self._message_length = 0


# -- masking (section 5.3) -------------------------------------------------------------------


def _mask_key(mask) -> bytes:
    key = memoryview(mask).tobytes()
    if len(key) != 4:
        raise ValueError("a mask key is 4 bytes")
    return key


def apply_mask(buf, mask, phase: int = 0) -> int:
    view = memoryview(buf)
    if view.readonly:
        raise BufferError("apply_mask needs a writable buffer")
    if not view.c_contiguous:
        raise BufferError("apply_mask needs a C-contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    key = _mask_key(mask)
    phase = operator.index(phase)
    if not 0 <= phase <= 3:
        raise ValueError("phase must be 0..3")
    n = len(view)
    if n:
        # Section 5.3: octet i of the payload is XORed with key[(i + phase) % 4]. One big-int XOR
        # over the whole buffer instead of a Python loop per byte.
        key = key[phase:] + key[:phase]
        stream = key * (n // 4 + 1)
        value = int.from_bytes(view, "little") ^ int.from_bytes(stream[:n], "little")
        view[:] = value.to_bytes(n, "little")
    return (phase + n) & 3


# -- close frames (section 5.5.1, 7.4) -----------------------------------------------------------


def valid_close_code(code) -> bool:
    if not isinstance(code, int):
        raise TypeError("a close code is an int")
    # Section 7.4.1/7.4.2 and the IANA registry: 1004 is reserved, 1005, 1006 and 1015 are never
    # sent, 1016-2999 are unassigned, 3000-4999 belong to libraries and applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close(payload) -> tuple[int | None, str]:
    data = memoryview(payload).tobytes()
    if not data:
        return None, ""  # section 5.5.1: the body is optional
    if len(data) == 1:
        raise FrameError(CLOSE_PROTOCOL_ERROR, R_CLOSE_ONE_BYTE, 0)
    code = (data[0] << 8) | data[1]
    if not valid_close_code(code):
        raise FrameError(CLOSE_PROTOCOL_ERROR, R_CLOSE_CODE.format(code), 0)
    try:
        reason = data[2:].decode("utf-8")
    except UnicodeDecodeError:
        # Section 8.1: invalid UTF-8 text fails the connection with 1007.
        raise FrameError(CLOSE_INVALID_DATA, R_CLOSE_UTF8, 0) from None
    return code, reason


# -- frames the gateway sends itself -----------------------------------------------------------


def build_frame(opcode: int, payload=b"", *, fin: bool = True, rsv1: bool = False, mask: bool = False) -> bytes:
    opcode = operator.index(opcode)
    if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
        raise ValueError(f"invalid opcode {opcode}")
    body = memoryview(payload).tobytes()
    n = len(body)
    if opcode & 0x08:
        if n > _MAX_CONTROL_PAYLOAD:
            raise ValueError("control frame payload longer than 125 bytes")
        if not fin or rsv1:
            raise ValueError("control frames cannot be fragmented or carry RSV1")
    header = bytearray()
    header.append((0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode)
    mask_bit = 0x80 if mask else 0
    # Section 5.2: the minimal length encoding.
    if n < 126:
        header.append(mask_bit | n)
    elif n < 65536:
        header.append(mask_bit | 126)
        header += n.to_bytes(2, "big")
    else:
        header.append(mask_bit | 127)
        header += n.to_bytes(8, "big")
    if not mask:
        return bytes(header) + body
    # Section 5.3: a fresh, unpredictable key per frame.
    key = os.urandom(4)
    header += key
    masked = bytearray(body)
    apply_mask(masked, key)
    return bytes(header + masked)


def build_close(code: int | None = None, reason: str = "", *, mask: bool = False) -> bytes:
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return build_frame(OP_CLOSE, b"", mask=mask)
    if not isinstance(reason, str):
        raise TypeError("a close reason is a str")
    if not valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    raw = reason.encode("utf-8")
    if len(raw) > _MAX_CONTROL_PAYLOAD - 2:
        # Cut at a character boundary: drop continuation bytes (10xxxxxx) at the cut.
        cut = _MAX_CONTROL_PAYLOAD - 2
        while cut > 0 and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        raw = raw[:cut]
    return build_frame(OP_CLOSE, code.to_bytes(2, "big") + raw, mask=mask)


# -- the relay buffer --------------------------------------------------------------------------
#
# Every Pump of a thread reads into one shared scratch arena, because thousands of idle sessions
# must not each pin a receive buffer. That is safe because get_buffer() and buffer_updated() are
# always called in pairs, on the loop's thread, with nothing in between (the read system call):
# a pump copies its held tail to the front of the arena in get_buffer(), the read lands right
# behind it, and buffer_updated() is done with the arena when it returns -- except for what a
# transport keeps. DESIGN.md section 4: a transport keeps a view of whatever write() could not send
# at once, so an arena that a transport may still hold is never read into again: it is replaced.
# Here (the twin) "may still hold" is "the sink's write buffer is not empty after the write"; the
# Cython module counts the arena's buffer exports exactly and recycles arenas.


class _Arena:
    __slots__ = ("buf", "view", "read_view")

    def __init__(self):
        self.buf = bytearray(_ARENA_SIZE)
        self.view = memoryview(self.buf)
        self.read_view = self.view[_ARENA_HEAD:]


class _ArenaPool:
    __slots__ = ("current", "allocated", "retired")

    def __init__(self):
        self.current = _Arena()
        self.allocated = 1
        self.retired = 0

    def retire(self, arena: _Arena) -> None:
        if arena is self.current:
            self.current = _Arena()
            self.allocated += 1
            self.retired += 1


_tls = threading.local()


def _pool() -> _ArenaPool:
    # One arena per thread: two event loops in two threads must not read into the same memory.
    pool = getattr(_tls, "pool", None)
    if pool is None:
        pool = _tls.pool = _ArenaPool()
    return pool


def _arena_info() -> dict:
    """Arena statistics of the calling thread (tests and benchmarks only)."""
    pool = _pool()
    return {"allocated": pool.allocated, "reused": 0, "retired": pool.retired, "spare": 0}


def _write_buffer_size(transport) -> int:
    return transport.get_write_buffer_size() if transport is not None else 0


class Pump:
    """One direction of a WebSocket session: the buffered protocol of one leg (see the .pyi)."""

    __slots__ = (
        "_scanner",
        "session",
        "_side",
        "sink",
        "transport",
        "_last_read",
        "_bytes_in",
        "forwarding",
        "_failed",
        "_tail",
        "_lent",
        "_sink_backlog",
    )

    def __init__(self, scanner: FrameScanner, session, *, side: str):
        if not isinstance(scanner, FrameScanner):
            raise TypeError("scanner must be a FrameScanner")
        if not isinstance(side, str):
            raise TypeError("side must be a str")
        if side not in ("client", "backend"):
            raise ValueError('side must be "client" or "backend"')
        self._scanner = scanner
        self.session = session
        self._side = side
        self.sink = None
        self.transport = None
        self._last_read = time.monotonic()
        self._bytes_in = 0
        self.forwarding = True
        self._failed = False
        self._tail = b""  # the unconsumed bytes of the last read (<= _TAIL_CAP), owned here
        self._lent = None  # the arena handed out by get_buffer(), until buffer_updated()
        self._sink_backlog = False

    def export_state(self) -> tuple[bytes, int]:
        return self._tail, self._bytes_in

    def import_state(self, tail, bytes_in: int) -> None:
        tail = bytes(tail)
        if len(tail) > _TAIL_CAP:
            raise ValueError("a held tail is at most 144 bytes")
        if bytes_in < len(tail):
            raise ValueError("bytes_in counts the held tail too")
        self._tail = tail
        self._bytes_in = bytes_in

    scanner = property(lambda self: self._scanner)
    side = property(lambda self: self._side)
    last_read = property(lambda self: self._last_read)
    bytes_in = property(lambda self: self._bytes_in)
    failed = property(lambda self: self._failed)

    def __repr__(self) -> str:
        return f"<Pump side={self._side} bytes_in={self._bytes_in} forwarding={self.forwarding}>"

    # -- asyncio protocol callbacks ---------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.session.on_connection_lost(self, exc)

    def eof_received(self):
        return self.session.on_eof(self)

    def pause_writing(self) -> None:
        # Our transport's write buffer is full: stop reading from the leg that feeds it, which is
        # our sink (the other pump reads the sink's transport and writes into ours).
        if self.sink is not None:
            self.sink.pause_reading()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        arena = _pool().current
        tail = self._tail
        if tail:
            arena.buf[_ARENA_HEAD - len(tail) : _ARENA_HEAD] = tail
        self._lent = arena
        return arena.read_view

    def buffer_updated(self, nbytes: int) -> None:
        arena = self._lent
        if arena is None:
            raise RuntimeError("buffer_updated() without get_buffer()")
        self._lent = None
        if not 0 <= nbytes <= _ARENA_SIZE - _ARENA_HEAD:
            raise ValueError("nbytes out of range")
        self._last_read = time.monotonic()
        self._bytes_in += nbytes
        if self._failed:
            return
        start = _ARENA_HEAD - len(self._tail)
        self._process(arena, arena.view[start : _ARENA_HEAD + nbytes].toreadonly())

    def feed(self, data) -> None:
        data = memoryview(data).tobytes()
        self._last_read = time.monotonic()
        self._bytes_in += len(data)
        if self._failed or not data:
            return
        if self._tail:
            data = self._tail + data
        self._process(None, memoryview(data))

    def data_received(self, data) -> None:
        """The Protocol path, for loops that use get_buffer only on BufferedProtocol subclasses."""
        self.feed(data)

    # -- the work ------------------------------------------------------------------------------

    def _process(self, arena, data) -> None:
        scanner = self._scanner
        session = self.session
        try:
            consumed = scanner.scan(data)
        except FrameError as exc:
            self._fail(arena, exc, data)
            return
        rest = len(data) - consumed
        closed = scanner._closed
        if rest and not closed:
            if rest > _TAIL_CAP:  # impossible: only headers and control frames are held back
                raise RuntimeError("frame scanner held back more than a control frame")
            self._tail = bytes(data[consumed:])
        else:
            self._tail = b""
        n = consumed
        called = False
        if scanner._events:
            n = operator.index(session.on_control(self, data, consumed))
            if not 0 <= n <= consumed:
                raise ValueError("on_control() must return an int in 0..consumed")
            called = True
        sink = self.sink
        if n and self.forwarding and sink is not None:
            if self._sink_backlog and sink.get_write_buffer_size() > 0:
                # The sink is queueing anyway: hand it a copy, so that it pins no arena.
                sink.write(bytes(data[:n]))
            else:
                self._sink_backlog = False
                sink.write(data if n == len(data) else data[:n])
                if sink.get_write_buffer_size() > 0:
                    self._sink_backlog = True
                    if arena is not None:
                        _pool().retire(arena)
        if called and arena is not None:
            self._after_callback(arena)
        if rest and closed:
            # Bytes after a Close frame (section 5.5.1): the next scan would reject them anyway;
            # report them now rather than hold an unbounded tail.
            self._fail(arena, FrameError(CLOSE_PROTOCOL_ERROR, R_AFTER_CLOSE, 0), data[consumed:])

    def _fail(self, arena, exc: FrameError, data) -> None:
        self._failed = True
        self.forwarding = False
        self._tail = b""
        self.session.on_frame_error(self, exc, data)
        if arena is not None:
            self._after_callback(arena)

    def _after_callback(self, arena) -> None:
        # The session may have written views of `data` to either leg itself.
        if _write_buffer_size(self.sink) > 0 or _write_buffer_size(self.transport) > 0:
            _pool().retire(arena)
