# cython: language_level=3, boundscheck=False, wraparound=False
"""The access log's line writer (Cython): one call turns a record's values into its JSON line.

The pure-Python twin is fastgw/_logline_py.py; fastgw/logline.py picks one, and both follow the
contract of fastgw/_logline.pyi, byte for byte (tests/test_logs.py proves it with hypothesis, and
checks both against json.loads).

A record is built once per request, handshake and session, and the line is most of what the
access log costs: here it is written into one growing C buffer, field by field (constants
copied, integers and durations formatted in place, wire bytes escaped in one pass), and turned
into a bytes object once. No intermediate string per field, no join, no encode.

JSON strings (RFC 8259 section 7) are escaped exactly as json.dumps(..., ensure_ascii=False)
does: `"` and `\\` and the C0 controls (\\b \\f \\n \\r \\t, others \\u00XX); every other
character is written as UTF-8, lone surrogates as "?" (what encoding with "replace" gives).
Bytes from the wire are latin-1 (RFC 9110 section 5.5): a byte of 0x80-0xFF is the character
U+0080-U+00FF.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport realloc
from libc.string cimport memcpy

import os


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    int PyUnicode_KIND(object)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct tm:
        pass
    tm* gmtime_r(const time_t* timep, tm* result)
    size_t strftime(char* s, size_t maxsize, const char* fmt, const tm* t)


__all__ = ["timestamp", "request_line", "session_line", "transaction_id"]

# The line being built: one buffer for the process, grown as needed (the loop's thread builds
# one line at a time, under the GIL).
cdef char* _buf = NULL
cdef Py_ssize_t _cap = 0
cdef Py_ssize_t _len = 0

# The second whose "YYYY-mm-ddTHH:MM:SS" text is in _second_text (formatted once per second).
cdef long long _second = -1
cdef char _second_text[32]

cdef const char* _HEX = b"0123456789abcdef"

# Transaction ids: 16 hex digits of a random per-process prefix, then a counter in 16 more.
cdef char _id[32]
cdef unsigned long long _id_next = 1
_ID_PREFIX = os.urandom(8).hex().encode("ascii")
memcpy(_id, PyBytes_AS_STRING(_ID_PREFIX), 16)


cdef int _reserve(Py_ssize_t extra) except -1:
    global _buf, _cap
    cdef Py_ssize_t need = _len + extra
    cdef Py_ssize_t cap
    cdef char* p
    if need <= _cap:
        return 0
    cap = _cap * 2 if _cap * 2 > need else need
    if cap < 4096:
        cap = 4096
    p = <char*>realloc(_buf, cap)
    if p == NULL:
        raise MemoryError()
    _buf = p
    _cap = cap
    return 0


cdef inline int _put(const char* s, Py_ssize_t n) except -1:
    global _len
    _reserve(n)
    memcpy(_buf + _len, s, n)
    _len += n
    return 0


cdef int _int(long long v) except -1:
    global _len
    cdef char digits[24]
    cdef int i = 24
    cdef bint negative = v < 0
    cdef unsigned long long u = <unsigned long long>(-v) if negative else <unsigned long long>v
    while True:
        i -= 1
        digits[i] = <char>(48 + u % 10)
        u //= 10
        if u == 0:
            break
    if negative:
        i -= 1
        digits[i] = b'-'
    return _put(digits + i, 24 - i)


cdef int _seconds(double t) except -1:
    """A duration as a JSON number with microseconds at most: 0.0012, 3.0."""
    global _len
    cdef long long micros = <long long>(t * 1000000.0 + 0.5)
    cdef char frac[6]
    cdef int n = 6
    cdef int i
    cdef long long rest
    if micros <= 0:
        return _put(b"0.0", 3)
    _int(micros // 1000000)
    rest = micros % 1000000
    for i in range(5, -1, -1):
        frac[i] = <char>(48 + rest % 10)
        rest //= 10
    while n > 1 and frac[n - 1] == b'0':
        n -= 1
    _put(b".", 1)
    return _put(frac, n)


cdef int _stamp(double now) except -1:
    """ISO 8601 UTC with milliseconds: 2026-12-05T09:00:00.123Z."""
    global _second
    cdef long long second = <long long>now
    cdef long long millis = <long long>(now * 1000.0) - second * 1000
    cdef time_t t
    cdef tm parts
    cdef char tail[5]
    if second != _second:
        t = <time_t>second
        gmtime_r(&t, &parts)
        strftime(_second_text, sizeof(_second_text), b"%Y-%m-%dT%H:%M:%S", &parts)
        _second = second
    if millis < 0:
        millis = 0
    elif millis > 999:
        millis = 999
    _put(_second_text, 19)
    tail[0] = b'.'
    tail[1] = <char>(48 + millis // 100)
    tail[2] = <char>(48 + millis // 10 % 10)
    tail[3] = <char>(48 + millis % 10)
    tail[4] = b'Z'
    return _put(tail, 5)


cdef inline Py_ssize_t _escape_one(unsigned int c, char* out) noexcept:
    """The JSON escape of a character below 0x20, `"` or `\\` into out; its length."""
    out[0] = b'\\'
    if c == 0x22:
        out[1] = b'"'
    elif c == 0x5C:
        out[1] = b'\\'
    elif c == 0x0A:
        out[1] = b'n'
    elif c == 0x0D:
        out[1] = b'r'
    elif c == 0x09:
        out[1] = b't'
    elif c == 0x08:
        out[1] = b'b'
    elif c == 0x0C:
        out[1] = b'f'
    else:
        out[1] = b'u'
        out[2] = b'0'
        out[3] = b'0'
        out[4] = _HEX[c >> 4]
        out[5] = _HEX[c & 15]
        return 6
    return 2


cdef int _latin1(const unsigned char* s, Py_ssize_t n) except -1:
    """Latin-1 text (bytes from the wire, or an ASCII str) as the inside of a JSON string."""
    global _len
    cdef Py_ssize_t i, start = 0
    cdef unsigned int c
    cdef char* out
    for i in range(n):
        c = s[i]
        if 0x20 <= c <= 0x7E and c != 0x22 and c != 0x5C:
            continue
        _put(<const char*>s + start, i - start)
        start = i + 1
        _reserve(6)
        out = _buf + _len
        if c >= 0x80:  # U+0080-U+00FF in UTF-8
            out[0] = <char>(0xC0 | (c >> 6))
            out[1] = <char>(0x80 | (c & 0x3F))
            _len += 2
        elif c == 0x7F:
            out[0] = <char>c
            _len += 1
        else:
            _len += _escape_one(c, out)
    return _put(<const char*>s + start, n - start)


cdef int _wire(bytes value) except -1:
    return _latin1(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cdef int _text(str value) except -1:
    """A str as the inside of a JSON string."""
    global _len
    cdef Py_ssize_t i, n
    cdef int kind
    cdef void* data
    cdef unsigned int c  # a code point (not Py_UCS4, which Cython treats as a character)
    cdef char* out
    if PyUnicode_IS_ASCII(value):
        return _latin1(<const unsigned char*>PyUnicode_DATA(value), PyUnicode_GET_LENGTH(value))
    kind = PyUnicode_KIND(value)
    data = PyUnicode_DATA(value)
    n = PyUnicode_GET_LENGTH(value)
    for i in range(n):
        c = <unsigned int>PyUnicode_READ(kind, data, i)
        _reserve(6)
        out = _buf + _len
        if c < 0x20 or c == 0x22 or c == 0x5C:
            _len += _escape_one(c, out)
        elif c < 0x80:
            out[0] = <char>c
            _len += 1
        elif c < 0x800:
            out[0] = <char>(0xC0 | (c >> 6))
            out[1] = <char>(0x80 | (c & 0x3F))
            _len += 2
        elif 0xD800 <= c <= 0xDFFF:  # a lone surrogate: not encodable ("replace")
            out[0] = b'?'
            _len += 1
        elif c < 0x10000:
            out[0] = <char>(0xE0 | (c >> 12))
            out[1] = <char>(0x80 | ((c >> 6) & 0x3F))
            out[2] = <char>(0x80 | (c & 0x3F))
            _len += 3
        else:
            out[0] = <char>(0xF0 | (c >> 18))
            out[1] = <char>(0x80 | ((c >> 12) & 0x3F))
            out[2] = <char>(0x80 | ((c >> 6) & 0x3F))
            out[3] = <char>(0x80 | (c & 0x3F))
            _len += 4
    return 0


cdef inline int _lit(bytes constant) except -1:
    return _put(PyBytes_AS_STRING(constant), PyBytes_GET_SIZE(constant))


cdef bytes _take():
    return PyBytes_FromStringAndSize(_buf, _len)


cdef int _route(str listener, str rule, str pool, str settings, str server) except -1:
    """The fields both records have, from listenerName to serverRouted (inside the string that
    the caller opened and that the next field closes)."""
    _lit(b'","listenerName":"')
    _text(listener)
    _lit(b'","ruleName":"')
    _text(rule)
    _lit(b'","backendPoolName":"')
    _text(pool)
    _lit(b'","backendSettingName":"')
    _text(settings)
    _lit(b'","serverRouted":"')
    return _text(server)


cdef int _envelope(double now) except -1:
    global _len
    _len = 0
    _lit(b'{"time":"')
    _stamp(now)
    _lit(b'","level":"info","log":"access","timeStamp":"')
    _stamp(now)
    return 0


def timestamp(double now):
    """`now` (seconds since the epoch) as the `time` of a log record."""
    global _len
    _len = 0
    _stamp(now)
    return _take().decode("ascii")


def request_line(double now, bint handshake, str client_ip, long long client_port, object tls,
                 bytes method, bytes uri, bytes agent, str version, long long status,
                 long long received, long long sent, double taken, object host,
                 bytes original_host, str listener, str rule, str pool, str settings,
                 str server, object latency, bytes transaction_id, str error):
    """The line of one answered request or handshake (see _logline.pyi)."""
    _envelope(now)
    _lit(b'","type":"websocket","clientIp":"' if handshake else b'","type":"request","clientIp":"')
    _text(client_ip)
    _lit(b'","clientPort":')
    _int(client_port)
    _lit(b',"httpMethod":"')
    _wire(method)
    _lit(b'","requestUri":"')
    _wire(uri)
    _lit(b'","userAgent":"')
    _wire(agent)
    _lit(b'","httpStatus":')
    _int(status)
    _lit(b',"httpVersion":"')
    _text(version)
    _lit(b'","receivedBytes":')
    _int(received)
    _lit(b',"sentBytes":')
    _int(sent)
    _lit(b',"timeTaken":')
    _seconds(taken)
    if tls is None:
        _lit(b',"sslEnabled":"off","sslProtocol":"","sslCipher":"')
    else:
        _lit(b',"sslEnabled":"on","sslProtocol":"')
        _text(tls[0])
        _lit(b'","sslCipher":"')
        _text(tls[1])
    _lit(b'","host":"')
    if host is None:
        _wire(original_host)
    else:
        _text(host)
    _lit(b'","originalHost":"')
    _wire(original_host)
    _route(listener, rule, pool, settings, server)
    _lit(b'","serverStatus":"')
    if latency is not None and server:
        _int(status)
    _lit(b'","serverResponseLatency":')
    if latency is None:
        _lit(b'null')
    else:
        _seconds(latency)
    _lit(b',"transactionId":"')
    _wire(transaction_id)
    _lit(b'","error_info":"')
    _text(error)
    _lit(b'"}')
    return _take()


def session_line(double now, str client_ip, long long client_port, bytes uri, str listener,
                 str rule, str pool, str settings, str server, bytes transaction_id,
                 double duration, long long close_code, str closed_by, str close_reason,
                 long long client_frames, long long client_bytes, long long backend_frames,
                 long long backend_bytes, long long client_messages, long long backend_messages,
                 long long upgrades):
    """The `session-end` line of one WebSocket session (see _logline.pyi)."""
    _envelope(now)
    _lit(b'","type":"session-end","clientIp":"')
    _text(client_ip)
    _lit(b'","clientPort":')
    _int(client_port)
    _lit(b',"requestUri":"')
    _wire(uri)
    _route(listener, rule, pool, settings, server)
    _lit(b'","transactionId":"')
    _wire(transaction_id)
    _lit(b'","duration":')
    _seconds(duration)
    _lit(b',"closeCode":')
    _int(close_code)
    _lit(b',"closedBy":"')
    _text(closed_by)
    _lit(b'","closeReason":"')
    _text(close_reason)
    _lit(b'","clientFrames":')
    _int(client_frames)
    _lit(b',"clientBytes":')
    _int(client_bytes)
    _lit(b',"backendFrames":')
    _int(backend_frames)
    _lit(b',"backendBytes":')
    _int(backend_bytes)
    _lit(b',"clientMessages":')
    _int(client_messages)
    _lit(b',"backendMessages":')
    _int(backend_messages)
    _lit(b',"upgrades":')
    _int(upgrades)
    _lit(b'}')
    return _take()


def transaction_id():
    """The next transaction id of this process (see _logline.pyi)."""
    global _id_next
    cdef unsigned long long n = _id_next
    cdef int i
    _id_next = n + 1
    for i in range(31, 15, -1):
        _id[i] = _HEX[n & 15]
        n >>= 4
    return PyBytes_FromStringAndSize(_id, 32)
