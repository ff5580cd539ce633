# Declarations of fastgw._frames (the WebSocket frame engine in C); see _frames.pyx for the why and
# _frames.pyi for the public API.

cimport cython
from libc.stdint cimport uint8_t, uint64_t

cdef enum:
    TAIL_CAP = 144          # longest held-back tail: an incomplete control frame (< 6 + 125 bytes)
    ARENA_SIZE = 65536      # the shared receive arena (64 KiB; see _frames.pyx on arenas)
    ARENA_HEAD = 256        # room in front of the read window for a pump's held tail
    SPARE_MAX = 4           # retired arenas kept for reuse once no transport holds them


@cython.final
cdef class FrameScanner:
    cdef readonly bint masked
    cdef readonly bint allow_rsv1
    cdef readonly uint64_t max_frame_size
    cdef readonly uint64_t max_message_size
    cdef readonly bint report_messages
    cdef readonly list events
    cdef readonly unsigned long long frames
    cdef readonly unsigned long long messages
    cdef readonly unsigned long long control_frames
    cdef readonly unsigned long long payload_bytes
    cdef readonly unsigned long long bytes

    cdef uint64_t _remaining        # payload bytes of the current data frame still due
    cdef uint64_t _message_length   # payload bytes of the open message so far (from headers)
    cdef bint _cur_fin              # FIN of the data frame whose payload is being consumed
    cdef bint _in_message
    cdef int _opcode_open
    cdef bint _closed

    cdef Py_ssize_t _scan(self, const unsigned char* p, Py_ssize_t n) except -1


@cython.final
cdef class _Arena:
    cdef unsigned char* base
    cdef Py_ssize_t exports         # live buffer exports (memoryviews) of this arena
    cdef Py_ssize_t _win_start
    cdef Py_ssize_t _win_len
    cdef bint _win_writable
    cdef object read_view           # writable memoryview of [ARENA_HEAD, ARENA_SIZE), or None

    cdef object view(self, Py_ssize_t start, Py_ssize_t length, bint writable)


@cython.final
cdef class _ArenaPool:
    cdef _Arena current
    cdef list spare
    cdef readonly Py_ssize_t allocated
    cdef readonly Py_ssize_t reused
    cdef readonly Py_ssize_t retired

    cdef _Arena _fresh(self)
    cdef int retire(self, _Arena arena) except -1


@cython.final
cdef class Pump:
    cdef readonly FrameScanner scanner
    cdef public object session
    cdef readonly str side
    cdef public object sink
    cdef public object transport
    cdef readonly double last_read
    cdef readonly unsigned long long bytes_in
    cdef public bint forwarding
    cdef readonly bint failed
    cdef bint _sink_backlog
    cdef _Arena _lent
    cdef Py_ssize_t _tail_len
    cdef unsigned char _tail[TAIL_CAP]

    cdef int _process(self, _Arena arena, object owner, const unsigned char* base,
                      Py_ssize_t start, Py_ssize_t n) except -1
    cdef object _view(self, _Arena arena, object owner, Py_ssize_t start, Py_ssize_t length)
    cdef int _forward(self, _Arena arena, object owner, const unsigned char* base,
                      Py_ssize_t start, Py_ssize_t n, object data) except -1
    cdef int _fail(self, _Arena arena, object exc, object data) except -1
    cdef int _check_arena(self, _Arena arena) except -1


cdef void mask_inplace(unsigned char* p, Py_ssize_t n, const unsigned char* key,
                       Py_ssize_t phase) noexcept nogil
cdef double monotonic() except? -1.0
