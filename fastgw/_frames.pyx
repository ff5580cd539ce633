# cython: language_level=3, auto_pickle=False
"""WebSocket frame engine in C: header scanner, masking, frame building, relay buffer.

Relaying WebSocket traffic costs mostly per system call, as long as no Python code runs per
frame. So this module works on whole reads: `FrameScanner.scan()` walks every frame header of a
received chunk in C, validates it against RFC 6455 section 5 and says how many leading bytes may
be forwarded now; payloads are never copied, unmasked or assembled (DESIGN.md section 3.3).
`Pump` is the relay buffer of one direction of a session: the buffered protocol of one leg,
writing what may be forwarded to the other leg, and calling back into Python (the session policy)
only for control frames, errors and end of stream.

`fastgw._frames_py` is the pure-Python twin with the same names, behaviour, error codes and
reason strings; `_frames.pyi` documents the API. This module never imports asyncio.
"""

from cpython.buffer cimport (
    PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBUF_STRIDES, PyBUF_WRITABLE,
    PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.bytes cimport (
    PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

import os
import threading
import time

from fastgw.errors import FrameError

__all__ = [
    "OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG",
    "CLOSE_NORMAL", "CLOSE_GOING_AWAY", "CLOSE_PROTOCOL_ERROR", "CLOSE_UNSUPPORTED",
    "CLOSE_NO_STATUS", "CLOSE_ABNORMAL", "CLOSE_INVALID_DATA", "CLOSE_POLICY", "CLOSE_TOO_BIG",
    "CLOSE_INTERNAL_ERROR", "CLOSE_TRY_AGAIN", "CLOSE_BAD_GATEWAY",
    "EV_CONTROL", "EV_MESSAGE_START", "EV_MESSAGE_END",
    "FrameScanner", "apply_mask", "parse_close", "valid_close_code", "build_frame",
    "build_close", "Pump",
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
CLOSE_NO_STATUS = 1005      # never on the wire: "no status code was present"
CLOSE_ABNORMAL = 1006       # never on the wire: "the connection was dropped" (DESIGN.md section 4)
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

# Reason strings of FrameError, spelled exactly as in the twin (the differential tests compare
# them); each is short enough for a close frame (123 bytes, section 5.5.1).
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

cdef enum:
    C_OP_CONT = 0
    C_OP_CLOSE = 8
    C_PROTOCOL_ERROR = 1002
    C_INVALID_DATA = 1007
    C_TOO_BIG = 1009
    C_EV_CONTROL = 1
    C_EV_MESSAGE_START = 2
    C_EV_MESSAGE_END = 3
    MAX_CONTROL_PAYLOAD = 125

# The violations that byte 0 of a header can show (RFC 6455 section 5.2, 5.4, 5.5; RFC 7692
# section 6), numbered for the lookup table below.
cdef enum:
    ERR_NONE = 0
    ERR_RESERVED_OPCODE
    ERR_RSV23
    ERR_RSV1
    ERR_RSV1_CONTROL
    ERR_RSV1_CONT
    ERR_CONTROL_FRAGMENTED
    ERR_CONT_NO_MESSAGE
    ERR_DATA_IN_MESSAGE


cdef uint8_t _byte0_error(int b0, bint in_message, bint allow_rsv1) noexcept:
    """The first violation byte 0 shows, in the fixed order both twins use."""
    cdef int opcode = b0 & 0x0F
    if (3 <= opcode <= 7) or opcode >= 11:
        return ERR_RESERVED_OPCODE     # section 5.2: reserved for further frames
    if b0 & 0x30:
        return ERR_RSV23               # section 5.2: no extension of ours defines RSV2/RSV3
    if b0 & 0x40:
        # RSV1 = "compressed" under permessage-deflate, on a message's first frame only.
        if not allow_rsv1:
            return ERR_RSV1
        if opcode & 0x08:
            return ERR_RSV1_CONTROL
        if opcode == C_OP_CONT:
            return ERR_RSV1_CONT
    if opcode & 0x08:
        if not (b0 & 0x80):
            return ERR_CONTROL_FRAGMENTED  # section 5.5: control frames MUST NOT be fragmented
    elif opcode == C_OP_CONT:
        if not in_message:
            return ERR_CONT_NO_MESSAGE     # section 5.4: a continuation continues something
    elif in_message:
        return ERR_DATA_IN_MESSAGE         # section 5.4: messages MUST NOT interleave
    return ERR_NONE


# [allow_rsv1][in_message][byte 0] -> ERR_*: one load per header on the hot path, shared by all
# scanners (a per-scanner table would cost 512 bytes per idle direction).
cdef uint8_t _BYTE0[2][2][256]

cdef void _init_byte0_tables() noexcept:
    cdef int rsv1, inmsg, b0
    for rsv1 in range(2):
        for inmsg in range(2):
            for b0 in range(256):
                _BYTE0[rsv1][inmsg][b0] = _byte0_error(b0, inmsg, rsv1)

_init_byte0_tables()


cdef str _byte0_reason(int err, int b0):
    if err == ERR_RESERVED_OPCODE:
        return R_RESERVED_OPCODE.format(b0 & 0x0F)
    if err == ERR_RSV23:
        return R_RSV23
    if err == ERR_RSV1:
        return R_RSV1
    if err == ERR_RSV1_CONTROL:
        return R_RSV1_CONTROL
    if err == ERR_RSV1_CONT:
        return R_RSV1_CONT
    if err == ERR_CONTROL_FRAGMENTED:
        return R_CONTROL_FRAGMENTED
    if err == ERR_CONT_NO_MESSAGE:
        return R_CONT_NO_MESSAGE
    return R_DATA_IN_MESSAGE


cdef uint64_t _size_limit(object value) except? 0:
    value = int(value)
    if value < 0:
        raise ValueError("size limits must be >= 0 (0 means no limit)")
    if value >= (1 << 64):
        raise OverflowError("size limit too large")
    return <uint64_t>value


def _checked_state(state):
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


cdef class FrameScanner:
    """Validates one direction of one WebSocket connection, one chunk per call (see the .pyi)."""

    def __init__(self, *, masked, allow_rsv1=False, max_frame_size=0, max_message_size=0,
                 report_messages=False):
        self.max_frame_size = _size_limit(max_frame_size)
        self.max_message_size = _size_limit(max_message_size)
        self.masked = bool(masked)
        self.allow_rsv1 = bool(allow_rsv1)
        self.report_messages = bool(report_messages)
        self.events = []
        self._remaining = 0
        self._message_length = 0
        self._cur_fin = False
        self._in_message = False
        self._opcode_open = 0
        self._closed = False
        self.frames = self.messages = self.control_frames = 0
        self.payload_bytes = self.bytes = 0

    @property
    def at_boundary(self):
        return self._remaining == 0

    @property
    def in_message(self):
        return self._in_message

    @property
    def closed(self):
        return self._closed

    @property
    def opcode_open(self):
        return self._opcode_open

    def export_state(self):
        return (int(self.masked), int(self.allow_rsv1), self.max_frame_size,
                self.max_message_size, int(self.report_messages), self._remaining,
                self._message_length, int(self._cur_fin), int(self._in_message),
                self._opcode_open, int(self._closed), self.frames, self.messages,
                self.control_frames, self.payload_bytes, self.bytes)

    @staticmethod
    def from_state(state):
        cdef FrameScanner scanner
        values = _checked_state(state)
        scanner = FrameScanner(masked=values[0], allow_rsv1=values[1],
                               max_frame_size=values[2], max_message_size=values[3],
                               report_messages=values[4])
        scanner._remaining = values[5]
        scanner._message_length = values[6]
        scanner._cur_fin = values[7]
        scanner._in_message = values[8]
        scanner._opcode_open = values[9]
        scanner._closed = values[10]
        scanner.frames, scanner.messages, scanner.control_frames = values[11:14]
        scanner.payload_bytes, scanner.bytes = values[14:16]
        return scanner

    def __repr__(self):
        return (f"<FrameScanner masked={self.masked} frames={self.frames} "
                f"messages={self.messages} bytes={self.bytes} closed={self._closed}>")

    def scan(self, data):
        cdef Py_buffer view
        if PyBytes_CheckExact(data):
            return self._scan(<const unsigned char*>PyBytes_AS_STRING(data),
                              PyBytes_GET_SIZE(data))
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._scan(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef Py_ssize_t _scan(self, const unsigned char* p, Py_ssize_t n) except -1:
        # The state lives in locals during the loop, so that the compiler keeps it in registers
        # instead of loading and storing fields of `self` per frame; it is written back once,
        # after the loop, also when the loop stops at a fault.
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t avail, take
        cdef Py_ssize_t hlen = 0
        cdef uint64_t length
        cdef uint64_t remaining = self._remaining
        cdef uint64_t message_length = self._message_length
        cdef uint64_t max_frame = self.max_frame_size
        cdef uint64_t max_message = self.max_message_size
        cdef unsigned long long frames = 0, messages = 0, controls = 0, payload = 0
        cdef unsigned int b0, b1, opcode, want_mask
        cdef int opcode_open = self._opcode_open
        cdef bint in_message = self._in_message
        cdef bint cur_fin = self._cur_fin
        cdef bint report = self.report_messages
        cdef bint control, fin
        cdef bint closed = False
        cdef const uint8_t (*byte0)[256]
        cdef uint8_t err = ERR_NONE
        cdef int fault_code = 0
        cdef object fault_reason = None
        cdef list events = self.events
        cdef object key

        if PyList_GET_SIZE(events):
            del events[:]
        if self._closed:
            # Section 5.5.1: the Close frame is the last frame of its direction.
            if n > 0:
                raise FrameError(C_PROTOCOL_ERROR, R_AFTER_CLOSE, 0)
            return 0
        want_mask = 0x80 if self.masked else 0
        byte0 = _BYTE0[self.allow_rsv1]
        while pos < n:
            if remaining:
                # The rest of a data frame's payload: forwarded untouched, as it arrives.
                avail = n - pos
                take = avail if <uint64_t>avail < remaining else <Py_ssize_t>remaining
                pos += take
                payload += <unsigned long long>take
                remaining -= <uint64_t>take
                if remaining == 0 and cur_fin:
                    messages += 1
                    if report:
                        events.append((C_EV_MESSAGE_END, opcode_open, pos, message_length))
                    in_message = False
                    opcode_open = 0
                    message_length = 0
                continue

            # A frame header (section 5.2). Every check runs as soon as its bytes are here, so a
            # bad stream fails at the same stream position however it is split; on a fault the
            # loop stops with `pos` at the offending header.
            b0 = p[pos]
            err = byte0[in_message][b0]
            if err:
                fault_code = C_PROTOCOL_ERROR
                fault_reason = _byte0_reason(err, b0)
                break
            avail = n - pos
            if avail < 2:
                break
            b1 = p[pos + 1]
            if (b1 & 0x80) != want_mask:
                # Section 5.1: a client masks every frame, a server masks none.
                fault_code = C_PROTOCOL_ERROR
                fault_reason = R_UNMASKED if want_mask else R_MASKED
                break
            opcode = b0 & 0x0F
            control = (opcode & 0x08) != 0
            length = b1 & 0x7F
            if length < 126:
                hlen = 2
            elif control:
                # Section 5.5: control frame payloads are at most 125 bytes.
                fault_code = C_PROTOCOL_ERROR
                fault_reason = R_CONTROL_TOO_LONG
                break
            elif length == 126:
                hlen = 4
                if avail < 4:
                    break
                length = (<uint64_t>p[pos + 2] << 8) | p[pos + 3]
                if length < 126:
                    # Section 5.2: "the minimal number of bytes MUST be used".
                    fault_code = C_PROTOCOL_ERROR
                    fault_reason = R_NON_MINIMAL
                    break
            else:
                hlen = 10
                if avail < 10:
                    break
                length = ((<uint64_t>p[pos + 2] << 56) | (<uint64_t>p[pos + 3] << 48) |
                          (<uint64_t>p[pos + 4] << 40) | (<uint64_t>p[pos + 5] << 32) |
                          (<uint64_t>p[pos + 6] << 24) | (<uint64_t>p[pos + 7] << 16) |
                          (<uint64_t>p[pos + 8] << 8) | <uint64_t>p[pos + 9])
                if length >> 63:
                    # Section 5.2: "the most significant bit MUST be 0".
                    fault_code = C_PROTOCOL_ERROR
                    fault_reason = R_LENGTH_MSB
                    break
                if length < 65536:
                    fault_code = C_PROTOCOL_ERROR
                    fault_reason = R_NON_MINIMAL
                    break
            if max_frame and length > max_frame:
                fault_code = C_TOO_BIG
                fault_reason = R_FRAME_TOO_BIG
                break
            # Known from the header: the running total of the message plus this frame.
            if max_message and not control and (
                    (length + message_length if opcode == C_OP_CONT else length) > max_message):
                fault_code = C_TOO_BIG
                fault_reason = R_MESSAGE_TOO_BIG
                break
            if want_mask:
                hlen += 4
            if avail < hlen:
                break
            fin = (b0 & 0x80) != 0

            if control:
                # Held back until the whole frame is here, so that the caller can read it.
                if <uint64_t>(avail - hlen) < length:
                    break
                if want_mask:
                    key = PyBytes_FromStringAndSize(<const char*>p + pos + hlen - 4, 4)
                else:
                    key = None
                events.append((C_EV_CONTROL, opcode, pos + hlen, length, key))
                frames += 1
                controls += 1
                payload += length
                pos += hlen + <Py_ssize_t>length
                if opcode == C_OP_CLOSE:
                    # Section 5.5.1: nothing follows a Close frame; the scan stops right here.
                    closed = True
                    break
                continue

            # A data frame: consume its header and whatever part of its payload is here.
            frames += 1
            if opcode != C_OP_CONT:
                in_message = True
                opcode_open = opcode
                message_length = 0
                if report:
                    events.append((C_EV_MESSAGE_START, opcode, pos, (b0 & 0x40) != 0))
            message_length += length
            cur_fin = fin
            pos += hlen
            avail = n - pos
            take = avail if <uint64_t>avail < length else <Py_ssize_t>length
            pos += take
            payload += <unsigned long long>take
            remaining = length - <uint64_t>take
            if remaining == 0 and fin:
                messages += 1
                if report:
                    events.append((C_EV_MESSAGE_END, opcode_open, pos, message_length))
                in_message = False
                opcode_open = 0
                message_length = 0

        # Write the state back. On a fault it is the state after the frames before it, as if
        # this call had returned `pos`: scanning from the offending frame again raises again.
        self._remaining = remaining
        self._message_length = message_length
        self._opcode_open = opcode_open
        self._in_message = in_message
        self._cur_fin = cur_fin
        self._closed = closed
        self.frames += frames
        self.messages += messages
        self.control_frames += controls
        self.payload_bytes += payload
        self.bytes += <unsigned long long>pos
        if fault_code:
            raise FrameError(fault_code, fault_reason, pos)
        return pos


# -- masking (section 5.3) -------------------------------------------------------------------

cdef void mask_inplace(unsigned char* p, Py_ssize_t n, const unsigned char* key,
                       Py_ssize_t phase) noexcept nogil:
    """XOR p[0:n] with the key, starting at key byte `phase`: octet i gets key[(i + phase) % 4].

    Eight bytes at a time through memcpy into a uint64_t: alignment-safe on every CPU (the
    compiler turns each memcpy into one unaligned load or store) and independent of byte order,
    because the key is laid out in memory in the same order as the data it meets.
    """
    cdef unsigned char k[8]
    cdef uint64_t k8, w0, w1, w2, w3
    cdef Py_ssize_t i
    for i in range(8):
        k[i] = key[(phase + i) & 3]
    memcpy(&k8, k, 8)
    while n >= 32:
        memcpy(&w0, p, 8)
        memcpy(&w1, p + 8, 8)
        memcpy(&w2, p + 16, 8)
        memcpy(&w3, p + 24, 8)
        w0 ^= k8
        w1 ^= k8
        w2 ^= k8
        w3 ^= k8
        memcpy(p, &w0, 8)
        memcpy(p + 8, &w1, 8)
        memcpy(p + 16, &w2, 8)
        memcpy(p + 24, &w3, 8)
        p += 32
        n -= 32
    while n >= 8:
        memcpy(&w0, p, 8)
        w0 ^= k8
        memcpy(p, &w0, 8)
        p += 8
        n -= 8
    for i in range(n):
        p[i] ^= k[i]


def apply_mask(buf, mask, Py_ssize_t phase=0):
    cdef Py_buffer b
    cdef Py_buffer m
    cdef bint have_m = False
    PyObject_GetBuffer(buf, &b, PyBUF_WRITABLE)  # BufferError if read-only
    try:
        PyObject_GetBuffer(mask, &m, PyBUF_SIMPLE)
        have_m = True
        if m.len != 4:
            raise ValueError("a mask key is 4 bytes")
        if phase < 0 or phase > 3:
            raise ValueError("phase must be 0..3")
        if b.len >= 65536:
            # Big buffers: let other threads run meanwhile (the export pins the memory).
            with nogil:
                mask_inplace(<unsigned char*>b.buf, b.len, <const unsigned char*>m.buf, phase)
        else:
            mask_inplace(<unsigned char*>b.buf, b.len, <const unsigned char*>m.buf, phase)
        return (phase + b.len) & 3
    finally:
        if have_m:
            PyBuffer_Release(&m)
        PyBuffer_Release(&b)


# -- close frames (section 5.5.1, 7.4) -----------------------------------------------------------

cdef inline bint _valid_code(long code) noexcept:
    # Section 7.4.1/7.4.2 and the IANA registry: 1004 is reserved, 1005, 1006 and 1015 are never
    # sent, 1016-2999 are unassigned, 3000-4999 belong to libraries and applications.
    return (1000 <= code <= 1003) or (1007 <= code <= 1014) or (3000 <= code <= 4999)


def valid_close_code(code):
    if not isinstance(code, int):
        raise TypeError("a close code is an int")
    if code < 0 or code > 65535:
        return False
    return _valid_code(<long>code)


def parse_close(payload):
    cdef Py_buffer b
    cdef const unsigned char* p
    cdef long code
    PyObject_GetBuffer(payload, &b, PyBUF_SIMPLE)
    try:
        if b.len == 0:
            return None, ""  # section 5.5.1: the body is optional
        if b.len == 1:
            raise FrameError(C_PROTOCOL_ERROR, R_CLOSE_ONE_BYTE, 0)
        p = <const unsigned char*>b.buf
        code = (<long>p[0] << 8) | p[1]
        if not _valid_code(code):
            raise FrameError(C_PROTOCOL_ERROR, R_CLOSE_CODE.format(code), 0)
        try:
            reason = PyUnicode_DecodeUTF8(<const char*>p + 2, b.len - 2, "strict")
        except UnicodeDecodeError:
            # Section 8.1: invalid UTF-8 text fails the connection with 1007.
            raise FrameError(C_INVALID_DATA, R_CLOSE_UTF8, 0) from None
        return code, reason
    finally:
        PyBuffer_Release(&b)


# -- frames the gateway sends itself -----------------------------------------------------------

def build_frame(opcode, payload=b"", *, fin=True, rsv1=False, mask=False):
    cdef Py_buffer b
    cdef Py_ssize_t op = opcode
    cdef Py_ssize_t n, hlen
    cdef unsigned char* out
    cdef unsigned char mask_bit
    cdef int i
    cdef bint do_mask = bool(mask)
    cdef bint is_fin = bool(fin)
    cdef bint is_rsv1 = bool(rsv1)
    cdef bytes key = None
    if op not in (0, 1, 2, 8, 9, 10):
        raise ValueError(f"invalid opcode {op}")
    PyObject_GetBuffer(payload, &b, PyBUF_SIMPLE)
    try:
        n = b.len
        if op & 0x08:
            if n > MAX_CONTROL_PAYLOAD:
                raise ValueError("control frame payload longer than 125 bytes")
            if not is_fin or is_rsv1:
                raise ValueError("control frames cannot be fragmented or carry RSV1")
        # Section 5.2: the minimal length encoding.
        hlen = 2 if n < 126 else (4 if n < 65536 else 10)
        if do_mask:
            key = os.urandom(4)  # section 5.3: a fresh, unpredictable key per frame
            hlen += 4
        frame = PyBytes_FromStringAndSize(NULL, hlen + n)
        out = <unsigned char*>PyBytes_AS_STRING(frame)
        out[0] = (0x80 if is_fin else 0) | (0x40 if is_rsv1 else 0) | <unsigned char>op
        mask_bit = 0x80 if do_mask else 0
        if n < 126:
            out[1] = mask_bit | <unsigned char>n
        elif n < 65536:
            out[1] = mask_bit | 126
            out[2] = <unsigned char>(n >> 8)
            out[3] = <unsigned char>n
        else:
            out[1] = mask_bit | 127
            for i in range(8):
                out[2 + i] = <unsigned char>((<uint64_t>n) >> (56 - 8 * i))
        if n:
            memcpy(out + hlen, b.buf, n)
        if do_mask:
            memcpy(out + hlen - 4, PyBytes_AS_STRING(key), 4)
            mask_inplace(out + hlen, n, <const unsigned char*>PyBytes_AS_STRING(key), 0)
        return frame
    finally:
        PyBuffer_Release(&b)


def build_close(code=None, reason="", *, mask=False):
    cdef bytes raw
    cdef Py_ssize_t cut
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return build_frame(8, b"", mask=mask)
    if not isinstance(reason, str):
        raise TypeError("a close reason is a str")
    if not valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CONTROL_PAYLOAD - 2:
        # Cut at a character boundary: drop continuation bytes (10xxxxxx) at the cut.
        cut = MAX_CONTROL_PAYLOAD - 2
        while cut > 0 and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        raw = raw[:cut]
    return build_frame(8, int(code).to_bytes(2, "big") + raw, mask=mask)


# -- the clock ---------------------------------------------------------------------------------

cdef extern from *:
    """
    #include <time.h>
    #if defined(__APPLE__)
    #include <mach/mach_time.h>
    #endif
    /* The clock of time.monotonic(), read without a Python call: PyTime_MonotonicRaw() on
       3.13+; before that what CPython itself reads: mach_absolute_time() on macOS,
       clock_gettime(CLOCK_MONOTONIC) elsewhere (Linux, the BSDs). -1.0 means "no such clock
       here": the caller falls back to time.monotonic(). */
    static double fastgw_monotonic(void) {
    #if PY_VERSION_HEX >= 0x030D0000
        PyTime_t t;
        if (PyTime_MonotonicRaw(&t) == 0) return (double)t * 1e-9;
        return -1.0;
    #elif defined(__APPLE__)
        static mach_timebase_info_data_t timebase;
        if (timebase.denom == 0 && mach_timebase_info(&timebase) != KERN_SUCCESS) return -1.0;
        return (double)mach_absolute_time() * timebase.numer / timebase.denom * 1e-9;
    #elif defined(CLOCK_MONOTONIC)
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
            return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        return -1.0;
    #else
        return -1.0;
    #endif
    }
    """
    double fastgw_monotonic() nogil

_py_monotonic = time.monotonic

cdef double monotonic() except? -1.0:
    cdef double t = fastgw_monotonic()
    if t < 0.0:
        t = _py_monotonic()
    return t


# -- the relay buffer --------------------------------------------------------------------------
#
# Every Pump of a thread reads into one shared scratch arena, because thousands of idle sessions
# must not each pin a receive buffer: an idle pump owns only its held tail (< TAIL_CAP bytes).
#
# Why sharing is safe: get_buffer() and buffer_updated() are always called in pairs, on the
# loop's thread, with nothing in between but the read system call (uvloop: libuv's alloc_cb,
# read(), read_cb; asyncio: get_buffer, recv_into, buffer_updated). get_buffer() copies the pump's
# held tail to just in front of the read window, the read lands right behind it, and
# buffer_updated() scans, forwards and copies the new tail back into the pump before it returns.
# Between two pairs nothing in the arena belongs to anyone -- except what a transport keeps.
#
# DESIGN.md section 4: a transport keeps a view of whatever write() could not send at once and
# sends it later, so an arena that a transport (or a session) may still hold must never be read
# into again. The arena exports its memory itself (__getbuffer__) and counts live exports; every
# view we hand out is its own export. After a write (or a session callback) and after dropping
# our own views, any export beyond the read window's one means someone kept a view: the arena is
# retired, and the next read goes to a spare arena whose exports dropped to zero, or a new one.
# While the sink stays backed up, the pump hands it exact-size copies instead of views, so a slow
# peer pins at most one arena per sink; its write buffer's high-water mark (pause_writing) bounds
# the rest.
#
# So ARENA_SIZE is the memory a stalled consumer can cost beyond its write buffer: 64 KiB keeps a
# stalled session at ~111 KiB of RSS (benchmarks/soak: 1,000 stalled clients; 233 KiB with 256
# KiB arenas). Larger reads would save system calls on large messages: relaying 1 MiB messages
# measured 5.2x nginx per CPU-second with 256 KiB arenas, 4.4x with 64 KiB.
#
# One pool per thread: two loops in two threads must not read into the same memory (uvloop
# releases the GIL around the read).

cdef char* _FORMAT_B = "B"


cdef class _Arena:
    def __cinit__(self):
        self.base = <unsigned char*>PyMem_Malloc(ARENA_SIZE)
        if self.base == NULL:
            raise MemoryError()
        self.exports = 0
        self.read_view = None

    def __dealloc__(self):
        # Every export holds a reference to this object, so no view outlives the memory.
        if self.base != NULL:
            PyMem_Free(self.base)
            self.base = NULL

    def __getbuffer__(self, Py_buffer* buffer, int flags):
        if (flags & PyBUF_WRITABLE) and not self._win_writable:
            raise BufferError("read-only view of the relay arena")
        buffer.buf = self.base + self._win_start
        buffer.obj = self
        buffer.len = self._win_len
        buffer.readonly = not self._win_writable
        buffer.itemsize = 1
        buffer.format = _FORMAT_B if (flags & PyBUF_FORMAT) else NULL
        buffer.ndim = 1
        buffer.shape = NULL
        buffer.strides = NULL
        if (flags & PyBUF_ND) == PyBUF_ND:
            buffer.shape = &buffer.len         # as PyBuffer_FillInfo does
        if (flags & PyBUF_STRIDES) == PyBUF_STRIDES:
            buffer.strides = &buffer.itemsize
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* buffer):
        self.exports -= 1

    cdef object view(self, Py_ssize_t start, Py_ssize_t length, bint writable):
        # PyMemoryView_FromObject calls __getbuffer__ once, for this window: one export per view.
        self._win_start = start
        self._win_len = length
        self._win_writable = writable
        return PyMemoryView_FromObject(self)


cdef class _ArenaPool:
    def __cinit__(self):
        self.spare = []
        self.allocated = self.reused = self.retired = 0
        self.current = self._fresh()

    cdef _Arena _fresh(self):
        cdef _Arena arena
        cdef Py_ssize_t i
        for i in range(len(self.spare)):
            arena = <_Arena>self.spare[i]
            if arena.exports == 0:
                del self.spare[i]
                self.reused += 1
                break
        else:
            arena = _Arena()
            self.allocated += 1
        arena.read_view = arena.view(ARENA_HEAD, ARENA_SIZE - ARENA_HEAD, True)
        return arena

    cdef int retire(self, _Arena arena) except -1:
        if arena is not self.current:
            return 0
        # Drop our own read window (its export goes when the loop releases it) and keep the
        # arena as a spare: reused once nobody holds a view of it any more.
        arena.read_view = None
        self.retired += 1
        if len(self.spare) >= SPARE_MAX:
            del self.spare[0]
        self.spare.append(arena)
        self.current = self._fresh()
        return 0


cdef _ArenaPool _main_pool = None
cdef long _main_ident = 0
_tls = threading.local()


cdef inline _ArenaPool _pool():
    global _main_pool, _main_ident
    cdef long ident = PyThread_get_thread_ident()
    if _main_pool is not None and ident == _main_ident:
        return _main_pool
    if _main_pool is None:
        _main_pool = _ArenaPool()
        _main_ident = ident
        return _main_pool
    pool = getattr(_tls, "pool", None)
    if pool is None:
        pool = _ArenaPool()
        _tls.pool = pool
    return <_ArenaPool>pool


def _arena_info():
    """Arena statistics of the calling thread (tests and benchmarks only)."""
    cdef _ArenaPool pool = _pool()
    return {"allocated": pool.allocated, "reused": pool.reused, "retired": pool.retired,
            "spare": len(pool.spare)}


cdef class Pump:
    """One direction of a WebSocket session: the buffered protocol of one leg (see the .pyi)."""

    def __init__(self, FrameScanner scanner not None, session, *, str side):
        if side not in ("client", "backend"):
            raise ValueError('side must be "client" or "backend"')
        self.scanner = scanner
        self.session = session
        self.side = side
        self.sink = None
        self.transport = None
        self.last_read = monotonic()
        self.bytes_in = 0
        self.forwarding = True
        self.failed = False
        self._sink_backlog = False
        self._lent = None
        self._tail_len = 0

    def export_state(self):
        return PyBytes_FromStringAndSize(<const char*>self._tail, self._tail_len), self.bytes_in

    def import_state(self, tail, bytes_in):
        cdef Py_buffer b
        PyObject_GetBuffer(tail, &b, PyBUF_SIMPLE)
        try:
            if b.len > TAIL_CAP:
                raise ValueError("a held tail is at most 144 bytes")
            if bytes_in < b.len:
                raise ValueError("bytes_in counts the held tail too")
            memcpy(self._tail, b.buf, b.len)
            self._tail_len = b.len
        finally:
            PyBuffer_Release(&b)
        self.bytes_in = bytes_in

    def __repr__(self):
        return f"<Pump side={self.side} bytes_in={self.bytes_in} forwarding={self.forwarding}>"

    # -- asyncio protocol callbacks ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.session.on_connection_lost(self, exc)

    def eof_received(self):
        return self.session.on_eof(self)

    def pause_writing(self):
        # Our transport's write buffer is full: stop reading from the leg that feeds it, which
        # is our sink (the other pump reads the sink's transport and writes into ours).
        if self.sink is not None:
            self.sink.pause_reading()

    def resume_writing(self):
        if self.sink is not None:
            self.sink.resume_reading()

    def get_buffer(self, Py_ssize_t sizehint):
        cdef _Arena arena = _pool().current
        if self._tail_len:
            memcpy(arena.base + ARENA_HEAD - self._tail_len, self._tail, self._tail_len)
        self._lent = arena
        return arena.read_view

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef _Arena arena = self._lent
        cdef Py_ssize_t start
        if arena is None:
            raise RuntimeError("buffer_updated() without get_buffer()")
        self._lent = None
        if nbytes < 0 or nbytes > ARENA_SIZE - ARENA_HEAD:
            raise ValueError("nbytes out of range")
        self.last_read = monotonic()
        self.bytes_in += <unsigned long long>nbytes
        if self.failed:
            return
        start = ARENA_HEAD - self._tail_len
        self._process(arena, None, arena.base, start, self._tail_len + nbytes)

    def feed(self, data):
        cdef Py_buffer b
        cdef bytes owner
        PyObject_GetBuffer(data, &b, PyBUF_SIMPLE)
        try:
            self.last_read = monotonic()
            self.bytes_in += <unsigned long long>b.len
            if self.failed or b.len == 0:
                return
            if self._tail_len == 0 and PyBytes_CheckExact(data):
                owner = data  # immutable: views of it are safe to queue
            else:
                owner = PyBytes_FromStringAndSize(NULL, self._tail_len + b.len)
                memcpy(PyBytes_AS_STRING(owner), self._tail, self._tail_len)
                memcpy(PyBytes_AS_STRING(owner) + self._tail_len, b.buf, b.len)
        finally:
            PyBuffer_Release(&b)
        self._process(None, owner, <const unsigned char*>PyBytes_AS_STRING(owner), 0,
                      PyBytes_GET_SIZE(owner))

    def data_received(self, data):
        """The Protocol path, for loops that use get_buffer only on BufferedProtocol subclasses."""
        self.feed(data)

    # -- the work ------------------------------------------------------------------------------

    cdef object _view(self, _Arena arena, object owner, Py_ssize_t start, Py_ssize_t length):
        if arena is not None:
            return arena.view(start, length, False)
        return PyMemoryView_FromObject(owner)[start:start + length]

    cdef int _process(self, _Arena arena, object owner, const unsigned char* base,
                      Py_ssize_t start, Py_ssize_t n) except -1:
        cdef FrameScanner scanner = self.scanner
        cdef Py_ssize_t consumed, rest, fwd
        cdef object data = None
        cdef bint check = False
        cdef bint wrote_view = False
        try:
            try:
                consumed = scanner._scan(base + start, n)
            except FrameError as exc:
                check = True
                self._fail(arena, exc, self._view(arena, owner, start, n))
                return 0
            rest = n - consumed
            if rest > 0 and not scanner._closed:
                if rest > TAIL_CAP:  # impossible: only headers and control frames are held back
                    raise RuntimeError("frame scanner held back more than a control frame")
                memcpy(self._tail, base + start + consumed, rest)
                self._tail_len = rest
            else:
                self._tail_len = 0
            fwd = consumed
            if PyList_GET_SIZE(scanner.events):
                check = True
                data = self._view(arena, owner, start, n)
                fwd = self.session.on_control(self, data, consumed)
                if fwd < 0 or fwd > consumed:
                    raise ValueError("on_control() must return an int in 0..consumed")
            if fwd > 0 and self.forwarding and self.sink is not None:
                wrote_view = self._forward(arena, owner, base, start, fwd, data)
            if rest > 0 and scanner._closed:
                # Bytes after a Close frame (section 5.5.1): the next scan would reject them
                # anyway; report them now rather than hold an unbounded tail.
                check = True
                data = None
                self._fail(arena, FrameError(C_PROTOCOL_ERROR, R_AFTER_CLOSE, 0),
                           self._view(arena, owner, start + consumed, rest))
        finally:
            data = None
            if arena is not None and (check or wrote_view):
                if self._check_arena(arena) and wrote_view:
                    self._sink_backlog = True
        return 0

    cdef int _forward(self, _Arena arena, object owner, const unsigned char* base,
                      Py_ssize_t start, Py_ssize_t n, object data) except -1:
        """Write the first n bytes; 1 if the sink got a view of the arena (the caller checks)."""
        sink = self.sink
        if self._sink_backlog:
            if sink.get_write_buffer_size() > 0:
                # The sink is queueing anyway: hand it an exact-size copy that pins no arena.
                sink.write(PyBytes_FromStringAndSize(<const char*>base + start, n))
                return 0
            self._sink_backlog = False
        if data is None:
            view = self._view(arena, owner, start, n)
        elif n == len(data):
            view = data
        else:
            view = data[:n]
        sink.write(view)
        if arena is None:
            # Views of an immutable bytes object are safe to queue; only note the backlog.
            if sink.get_write_buffer_size() > 0:
                self._sink_backlog = True
            return 0
        return 1

    cdef int _fail(self, _Arena arena, object exc, object data) except -1:
        self.failed = True
        self.forwarding = False
        self._tail_len = 0
        self.session.on_frame_error(self, exc, data)
        return 0

    cdef int _check_arena(self, _Arena arena) except -1:
        """Retire the arena if anyone still holds a view of it; 1 if it was retired."""
        cdef Py_ssize_t own = 1 if arena.read_view is not None else 0
        if arena.exports > own:
            _pool().retire(arena)
            return 1
        return 0
