# cython: language_level=3, boundscheck=False, wraparound=False
"""The head scanner (Cython): a complete HTTP/1.1 head in one pass, or None for httptools.

The contract, the subset it reads and why, is fastgw/_heads.pyi; the pure-Python twin is
fastgw/_heads_py.py, and tests/test_heads.py holds both to httptools' answers.

One pass over the bytes with a character table per class; a field costs its two bytes objects
and a tuple, which is what the callers keep (and what httptools' callbacks would have made).
Methods and the most common field names are shared constants rather than new objects.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp

__all__ = ["scan_request", "scan_response"]

# Character classes (bit flags per byte value), filled once below.
cdef enum:
    TCHAR = 1     # RFC 9110 section 5.6.2 token characters
    URLCHAR = 2   # the origin-form subset: unreserved, sub-delims, ":", "@", "/", "?", "%"
    VCHAR = 4     # visible ASCII, 0x21-0x7E (RFC 5234 appendix B.1)
    CONNCHAR = 8  # a Connection option's characters in the subset: letters, digits, "-"

cdef unsigned char _class[256]


cdef void _fill_classes():
    cdef int c
    for c in range(256):
        _class[c] = 0
    for c in range(0x21, 0x7F):
        _class[c] |= VCHAR
    for ch in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        _class[<unsigned char>ch] |= TCHAR
    for ch in b"-._~!$&'()*+,;=:@/?%0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        _class[<unsigned char>ch] |= URLCHAR
    for ch in b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        _class[<unsigned char>ch] |= CONNCHAR


_fill_classes()

# The methods of the subset, returned as these objects.
cdef bytes _GET = b"GET"
cdef bytes _HEAD = b"HEAD"
cdef bytes _POST = b"POST"
cdef bytes _PUT = b"PUT"
cdef bytes _DELETE = b"DELETE"
cdef bytes _OPTIONS = b"OPTIONS"
cdef bytes _PATCH = b"PATCH"

# Field names as most peers spell them, returned as these objects (the callers' lower-casing
# caches then hit on the object's own hash).
cdef tuple _COMMON_NAMES = (
    b"Host", b"User-Agent", b"Accept", b"Accept-Encoding", b"Accept-Language", b"Connection",
    b"Upgrade", b"Content-Length", b"Content-Type", b"Cookie", b"Origin", b"Date", b"Server",
    b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"Sec-WebSocket-Accept",
    b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions", b"Cache-Control", b"Referer",
    b"X-Forwarded-For", b"X-Request-Id",
)

# What a field's name says to the scanner.
cdef enum:
    F_OTHER = 0
    F_CONNECTION = 1
    F_UPGRADE = 2
    F_CONTENT_LENGTH = 3
    F_TRANSFER_ENCODING = 4


cdef inline bint _lower_equal(const char* p, Py_ssize_t n, const char* lower, Py_ssize_t m):
    """p[:n], ASCII case folded, equals `lower` (lower-case, length m)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    if n != m:
        return False
    for i in range(n):
        c = <unsigned char>p[i]
        if 0x41 <= c <= 0x5A:
            c += 0x20
        if c != <unsigned char>lower[i]:
            return False
    return True


cdef int _kind(const char* p, Py_ssize_t n):
    if _lower_equal(p, n, b"connection", 10):
        return F_CONNECTION
    if _lower_equal(p, n, b"upgrade", 7):
        return F_UPGRADE
    if _lower_equal(p, n, b"content-length", 14):
        return F_CONTENT_LENGTH
    if _lower_equal(p, n, b"transfer-encoding", 17):
        return F_TRANSFER_ENCODING
    return F_OTHER


cdef object _name(const char* p, Py_ssize_t n):
    cdef bytes common
    for common in _COMMON_NAMES:
        if PyBytes_GET_SIZE(common) == n and memcmp(PyBytes_AS_STRING(common), p, n) == 0:
            return common
    return PyBytes_FromStringAndSize(p, n)


# Connection options found by _options().
cdef enum:
    O_CLOSE = 1
    O_UPGRADE = 2
    O_BAD = 4     # not a list of tokens in the subset


cdef int _options(const char* p, Py_ssize_t n):
    """The options of a Connection value in the subset: tokens of CONNCHAR separated by commas
    with optional spaces."""
    cdef Py_ssize_t i = 0, j
    cdef int found = 0
    while True:
        j = i
        while j < n and _class[<unsigned char>p[j]] & CONNCHAR:
            j += 1
        if j == i:
            return O_BAD
        if _lower_equal(p + i, j - i, b"close", 5):
            found |= O_CLOSE
        elif _lower_equal(p + i, j - i, b"upgrade", 7):
            found |= O_UPGRADE
        while j < n and p[j] == b' ':
            j += 1
        if j == n:
            return found
        if p[j] != b',':
            return O_BAD
        j += 1
        while j < n and p[j] == b' ':
            j += 1
        i = j


cdef struct Fields:
    Py_ssize_t end        # offset just past the blank line
    int connections       # Connection fields seen
    int options           # their options (O_*)
    int upgrades          # Upgrade fields seen
    int lengths           # Content-Length fields seen
    int encodings         # Transfer-Encoding fields seen
    Py_ssize_t length     # the last Content-Length value, -1 when not digits (or too long)


cdef list _fields(const char* s, Py_ssize_t pos, Py_ssize_t size, Fields* f):
    """The fields from `pos` to the blank line, filling `f`; None outside the subset."""
    cdef list headers = []
    cdef Py_ssize_t name_start, name_end, value_start, value_end, i
    cdef int kind
    cdef unsigned char c
    f.connections = f.options = f.upgrades = f.lengths = f.encodings = 0
    f.length = -1
    while True:
        if pos + 1 >= size:
            return None
        if s[pos] == b'\r':
            if s[pos + 1] != b'\n':
                return None
            f.end = pos + 2
            return headers
        name_start = pos
        while pos < size and _class[<unsigned char>s[pos]] & TCHAR:
            pos += 1
        if pos == name_start or pos >= size or s[pos] != b':':
            return None
        name_end = pos
        pos += 1
        while pos < size and s[pos] == b' ':
            pos += 1
        value_start = pos
        value_end = pos = _visible(s, pos, size)
        if value_end == value_start or pos + 1 >= size or s[pos] != b'\r' or s[pos + 1] != b'\n':
            return None
        pos += 2
        kind = _kind(s + name_start, name_end - name_start)
        if kind == F_CONNECTION:
            f.connections += 1
            f.options |= _options(s + value_start, value_end - value_start)
        elif kind == F_UPGRADE:
            f.upgrades += 1
        elif kind == F_CONTENT_LENGTH:
            f.lengths += 1
            f.length = 0
            if value_end - value_start > 15:
                f.length = -1
            else:
                for i in range(value_start, value_end):
                    c = <unsigned char>s[i]
                    if c < 0x30 or c > 0x39:
                        f.length = -1
                        break
                    f.length = f.length * 10 + (c - 0x30)
        elif kind == F_TRANSFER_ENCODING:
            f.encodings += 1
        headers.append((_name(s + name_start, name_end - name_start),
                        PyBytes_FromStringAndSize(s + value_start, value_end - value_start)))


cdef inline Py_ssize_t _visible(const char* s, Py_ssize_t pos, Py_ssize_t size):
    """Where a run of visible characters starting at `pos` ends: spaces may come between them,
    not before the first nor after the last (a value or reason phrase of the subset)."""
    cdef Py_ssize_t j
    if pos >= size or not _class[<unsigned char>s[pos]] & VCHAR:
        return pos
    while pos < size:
        if _class[<unsigned char>s[pos]] & VCHAR:
            pos += 1
        elif s[pos] == b' ':
            j = pos + 1
            while j < size and s[j] == b' ':
                j += 1
            if j < size and _class[<unsigned char>s[j]] & VCHAR:
                pos = j
            else:
                break
        else:
            break
    return pos


cdef object _method(const char* p, Py_ssize_t n):
    if n == 3:
        if memcmp(p, b"GET", 3) == 0:
            return _GET
        if memcmp(p, b"PUT", 3) == 0:
            return _PUT
    elif n == 4:
        if memcmp(p, b"HEAD", 4) == 0:
            return _HEAD
        if memcmp(p, b"POST", 4) == 0:
            return _POST
    elif n == 5 and memcmp(p, b"PATCH", 5) == 0:
        return _PATCH
    elif n == 6 and memcmp(p, b"DELETE", 6) == 0:
        return _DELETE
    elif n == 7 and memcmp(p, b"OPTIONS", 7) == 0:
        return _OPTIONS
    return None


def scan_request(bytes data, Py_ssize_t start):
    cdef const char* s = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = start, url_start, url_end
    cdef Fields f
    cdef list headers
    if start < 0 or start >= size:
        return None
    while pos < size and 0x41 <= <unsigned char>s[pos] <= 0x5A:
        pos += 1
    if pos >= size or s[pos] != b' ':
        return None
    method = _method(s + start, pos - start)
    if method is None:
        return None
    pos += 1
    url_start = pos
    if pos >= size or s[pos] != b'/':
        return None
    while pos < size and _class[<unsigned char>s[pos]] & URLCHAR:
        pos += 1
    url_end = pos
    if size - pos < 11 or memcmp(s + pos, b" HTTP/1.1\r\n", 11) != 0:
        return None
    headers = _fields(s, pos + 11, size, &f)
    if headers is None or f.lengths or f.encodings or f.connections > 1 or f.options & O_BAD \
            or f.options & O_CLOSE:
        return None
    if f.upgrades and (not f.options & O_UPGRADE or method is not _GET):
        return None
    return (f.end, method, PyBytes_FromStringAndSize(s + url_start, url_end - url_start),
            headers)


def scan_response(bytes data, Py_ssize_t start):
    cdef const char* s = PyBytes_AS_STRING(data)
    cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t pos = start, reason_start, i
    cdef int status
    cdef unsigned char c
    cdef Fields f
    cdef list headers
    if start < 0 or size - start < 13 or memcmp(s + start, b"HTTP/1.1 ", 9) != 0:
        return None
    pos = start + 9
    for i in range(pos, pos + 3):
        if <unsigned char>s[i] < 0x30 or <unsigned char>s[i] > 0x39:
            return None
    if s[pos] < b'1' or s[pos] > b'5' or s[pos + 3] != b' ':
        return None
    status = (s[pos] - 0x30) * 100 + (s[pos + 1] - 0x30) * 10 + (s[pos + 2] - 0x30)
    if status < 200 and status != 101 or status == 204 or status == 304:
        return None
    pos += 4
    reason_start = pos
    pos = _visible(s, pos, size)
    if pos == reason_start or size - pos < 2 or s[pos] != b'\r' or s[pos + 1] != b'\n':
        return None
    reason = PyBytes_FromStringAndSize(s + reason_start, pos - reason_start)
    headers = _fields(s, pos + 2, size, &f)
    if headers is None or f.encodings or f.lengths > 1 or f.connections > 1 \
            or f.options & O_BAD:
        return None
    if status == 101:
        if not f.upgrades or not f.options & O_UPGRADE or f.lengths:
            return None
        return f.end, status, reason, headers, -1
    if f.upgrades or f.options & O_UPGRADE or f.lengths != 1 or f.length < 0:
        return None
    return f.end, status, reason, headers, f.length
