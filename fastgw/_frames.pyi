"""The WebSocket frame engine: fastgw._frames (Cython) and fastgw._frames_py (its twin).

Both modules expose exactly this API, with the same behaviour, error codes and reason strings;
import it through `fastgw.frames`, which picks one and sets `IMPLEMENTATION` ("c" or "py").

The engine works on whole reads (RFC 6455 section 5): one `FrameScanner.scan()` call walks every
frame header of a chunk and says how many leading bytes may be forwarded now. It never copies,
unmasks or assembles a data payload. `Pump` is the relay buffer of one direction of a session.

Every protocol violation is a `fastgw.errors.FrameError(code, reason, offset)`: `code` is the
close code to send to the offender (1002 protocol error, 1007 invalid data, 1009 too big).
"""

from typing import Any, Final, Protocol, final

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

# Opcodes (RFC 6455 section 5.2).
OP_CONT: Final = 0
OP_TEXT: Final = 1
OP_BINARY: Final = 2
OP_CLOSE: Final = 8
OP_PING: Final = 9
OP_PONG: Final = 10

# Close codes (RFC 6455 section 7.4.1 and the IANA registry).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_NO_STATUS: Final = 1005  # never sent: no status code was present
CLOSE_ABNORMAL: Final = 1006  # never sent: the connection dropped (DESIGN.md section 4)
CLOSE_INVALID_DATA: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013
CLOSE_BAD_GATEWAY: Final = 1014

# Event kinds, the first item of each tuple in FrameScanner.events.
EV_CONTROL: Final = 1
EV_MESSAGE_START: Final = 2
EV_MESSAGE_END: Final = 3

# (EV_CONTROL, opcode, payload_offset, payload_length, mask_key: bytes | None)
# (EV_MESSAGE_START, opcode, header_offset, rsv1: bool)
# (EV_MESSAGE_END, opcode, end_offset, message_length)
_Event = tuple[Any, ...]

@final
class FrameScanner:
    """Validates one direction of one WebSocket connection, one chunk per call.

    masked=True: every frame must be masked (client to gateway); masked=False: no frame may be
    (backend to gateway) -- RFC 6455 section 5.1. allow_rsv1: permessage-deflate was negotiated
    (RFC 7692), so RSV1 may be set on the first frame of a data message. Limits of 0 mean none;
    max_frame_size bounds each frame's payload, max_message_size a data message's total payload
    (both checked from the headers, before any payload byte is forwarded; 1009 when exceeded).
    report_messages: also report message starts and ends in `events` (off on the hot path).
    """

    @property
    def masked(self) -> bool: ...
    @property
    def allow_rsv1(self) -> bool: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def report_messages(self) -> bool: ...
    def __init__(
        self,
        *,
        masked: bool,
        allow_rsv1: bool = False,
        max_frame_size: int = 0,
        max_message_size: int = 0,
        report_messages: bool = False,
    ) -> None: ...
    def scan(self, data: bytes | bytearray | memoryview) -> int:
        """Scan one chunk and return how many leading bytes of it may be forwarded now.

        `data` is any C-contiguous bytes-like object and must start with the bytes the previous
        call did not consume. A frame header is consumed only when complete; a data frame's
        payload as it arrives; a control frame only when header and payload are both here (so the
        caller can read it through the event offsets). The scan stops right after a Close frame;
        any later call with data raises FrameError(1002, "data after close frame", 0).

        Raises FrameError(code, reason, offset) for the first violation, as early as the header
        bytes show it; `offset` counts the bytes of this call's `data` consumed before the
        offending frame (they are valid and may still be forwarded). The scanner is then in the
        state it would have after returning `offset`: scanning from the offending frame again
        raises the same error.
        """
    @property
    def events(self) -> list[_Event]:
        """This call's events in stream order; the same list, cleared at the start of each scan.

        Control frames always; message starts and ends only with report_messages=True. Offsets
        index the `data` of the scan call that reported them.
        """
    @property
    def frames(self) -> int:
        """Frames whose header was consumed (cumulative)."""
    @property
    def messages(self) -> int:
        """Completed data messages (cumulative)."""
    @property
    def control_frames(self) -> int:
        """Complete control frames consumed (cumulative)."""
    @property
    def payload_bytes(self) -> int:
        """Payload bytes consumed, data and control (cumulative)."""
    @property
    def bytes(self) -> int:
        """Bytes consumed, headers and payloads (cumulative)."""
    def export_state(self) -> tuple[int, ...]:
        """Where the scanner stands, as 16 integers: its settings (masked, allow_rsv1, the two
        limits, report_messages), its position in the stream (payload bytes of the current data
        frame still due, the open message's length so far, that frame's FIN, whether a message is
        open and its opcode, closed) and its counters. A data payload is never unmasked here, so
        no mask key or phase is part of it: the bytes pass with the sender's masking untouched.
        `from_state` of it continues the stream exactly where this one stopped (live upgrade)."""
    @staticmethod
    def from_state(state: tuple[int, ...] | list[int]) -> FrameScanner:
        """A scanner in the state `export_state()` gave. ValueError for an impossible state."""
    @property
    def at_boundary(self) -> bool:
        """No frame is partly consumed: the next byte starts a header, so the gateway may inject
        a frame of its own here (a control frame even inside a fragmented message, section 5.4)."""
    @property
    def in_message(self) -> bool:
        """A data message is open: its first frame was consumed, its last payload byte not yet."""
    @property
    def closed(self) -> bool:
        """A Close frame was consumed."""
    @property
    def opcode_open(self) -> int:
        """The opcode (OP_TEXT or OP_BINARY) of the open message, or 0."""

def apply_mask(buf: bytearray | memoryview, mask: bytes | bytearray | memoryview, phase: int = 0) -> int:
    """XOR the writable buffer `buf` in place with the 4-byte `mask` (RFC 6455 section 5.3).

    Byte i of `buf` is XORed with mask[(phase + i) % 4]; the return value, (phase + len(buf)) % 4,
    is the phase for the next piece, so a payload split across chunks can be unmasked piece by
    piece. Masking twice with the same key and phase restores the data. ValueError if the mask is
    not 4 bytes or phase not in 0..3; BufferError for a read-only buffer; TypeError for a
    non-buffer.
    """

def valid_close_code(code: int) -> bool:
    """Whether `code` may appear in a Close frame: 1000-1003, 1007-1014, 3000-4999.

    1004 is reserved, 1005, 1006 and 1015 are never sent, 1016-2999 are unassigned (section
    7.4, IANA registry). TypeError if `code` is not an int.
    """

def parse_close(payload: bytes | bytearray | memoryview) -> tuple[int | None, str]:
    """Read an unmasked Close frame payload (section 5.5.1): (code, reason).

    Empty payload: (None, ""). FrameError(1002) for a 1-byte payload or an invalid code,
    FrameError(1007) for a reason that is not valid UTF-8 (section 8.1).
    """

def build_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bool = False,
) -> bytes:
    """A frame the gateway sends itself, with the minimal length encoding (section 5.2).

    mask=True (frames to a backend, section 5.3) draws a fresh random key and masks the payload.
    ValueError for a reserved opcode, or a control frame longer than 125 bytes, fragmented or
    with RSV1.
    """

def build_close(code: int | None = None, reason: str = "", *, mask: bool = False) -> bytes:
    """A Close frame (section 5.5.1): the code, then the UTF-8 reason cut at a character
    boundary so that the payload fits 125 bytes. code=None gives an empty payload (then reason
    must be empty). ValueError for a code that valid_close_code() rejects (1005 and 1006 too)."""

class _Transport(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

class _Session(Protocol):
    def on_control(self, pump: Pump, data: memoryview, consumed: int) -> int:
        """Control frames were consumed: read them through pump.scanner.events (offsets index
        `data`, which is valid only during this call), write any frames of your own, and return
        how many leading bytes of `data` to forward (0..consumed)."""
    def on_frame_error(self, pump: Pump, exc: FrameError, data: memoryview) -> None:
        """The stream broke the protocol: `data[:exc.offset]` was valid (not yet forwarded; its
        control frames are in pump.scanner.events). The pump has stopped forwarding and drops
        everything it reads from now on."""
    def on_eof(self, pump: Pump) -> bool | None: ...
    def on_connection_lost(self, pump: Pump, exc: BaseException | None) -> None: ...

@final
class Pump:
    """The relay buffer of one direction of a WebSocket session.

    The buffered protocol of one leg's transport after the 101: it reads that leg's bytes
    (get_buffer/buffer_updated), scans them with `scanner` and writes what may be forwarded to
    the other leg's transport, `sink` -- as views, without copying. Policy stays in `session`
    (see _Session). `side` is the leg it reads from: "client" or "backend".

    All pumps of a thread read into one shared 256 KiB arena; a pump keeps only its held tail
    (an incomplete header or control frame, < 144 bytes) between reads. An arena that a transport
    may still hold a view of is never read into again (DESIGN.md section 4): the C module counts
    the arena's buffer exports, the twin looks at the sink's and transport's write buffers. So
    the `data` a session gets is valid during the callback only: copy what you keep, and write
    views of it only to pump.sink or pump.transport. While the sink is queueing (its write buffer
    is not empty) the pump hands it exact-size copies, so a slow peer pins at most one arena;
    pause_writing/resume_writing bound the rest.

    A FrameError ends the stream: the session gets on_frame_error, forwarding stops, and later
    input is counted (bytes_in) but dropped. Bytes after a Close frame are reported the same way
    (FrameError 1002 "data after close frame", offset 0 into the `data` given with it).

    uvloop treats any object with get_buffer/buffer_updated as a buffered protocol; loops that
    require an asyncio.BufferedProtocol subclass (the default asyncio loop) call data_received.
    """

    @property
    def scanner(self) -> FrameScanner: ...
    session: Any
    @property
    def side(self) -> str: ...
    sink: _Transport | None
    """The transport of the other leg, or None (nothing is written)."""
    transport: Any
    """This leg's transport (set by connection_made)."""
    forwarding: bool
    """False: bytes are still scanned but not written (set after a FrameError)."""
    @property
    def last_read(self) -> float:
        """time.monotonic() of the last read (or of creation)."""
    @property
    def bytes_in(self) -> int:
        """Raw bytes read from this leg."""
    @property
    def failed(self) -> bool:
        """A FrameError was reported; later input is dropped (the stream cannot resynchronize)."""

    def __init__(self, scanner: FrameScanner, session: _Session, *, side: str) -> None: ...
    def export_state(self) -> tuple[bytes, int]:
        """(held tail, bytes_in): the bytes read but not consumed by the scanner (an incomplete
        header or control frame, < 144 bytes) and the raw bytes read so far."""
    def import_state(self, tail: bytes | bytearray | memoryview, bytes_in: int) -> None:
        """Hold `tail` as if it had been read last (the next read is scanned after it), and
        count `bytes_in`. ValueError for a tail longer than 144 bytes or a count below it."""

    def connection_made(self, transport: Any) -> None: ...
    def connection_lost(self, exc: BaseException | None) -> None:
        """Calls session.on_connection_lost(self, exc)."""
    def eof_received(self) -> bool | None:
        """Returns session.on_eof(self)."""
    def pause_writing(self) -> None:
        """This leg's write buffer is full: pause reading the sink, the leg that feeds it."""
    def resume_writing(self) -> None:
        """Resume reading the sink."""
    def get_buffer(self, sizehint: int) -> memoryview:
        """The writable read window of the shared arena (the held tail is put in front of it)."""
    def buffer_updated(self, nbytes: int) -> None:
        """Scan held tail + new bytes, call the session for control frames or an error, write
        what may be forwarded to the sink, keep the unconsumed tail."""
    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes read before the pump took over the transport (e.g. frames that followed
        the 101 in the same read) exactly as if they had been received."""
    def data_received(self, data: bytes) -> None:
        """Same as feed(): the asyncio.Protocol path."""
