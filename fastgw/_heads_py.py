"""The head scanner's pure-Python twin (fastgw/_heads.pyx is the compiled engine).

Both follow the contract of fastgw/_heads.pyi: the same answer for the same bytes. This one is
written for reading, with regular expressions; it is what runs without a C compiler.
"""

from __future__ import annotations

import re

__all__ = ["scan_request", "scan_response"]

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A field value in the scanned subset: visible ASCII with single spaces inside, none at either
# end, not empty (RFC 9110 section 5.5 allows more: HTAB, obs-text; those heads go to httptools).
_VALUE = rb"[\x21-\x7e](?:[\x21-\x7e ]*[\x21-\x7e])?"
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ ]*(" + _VALUE + rb")\r\n")
_REQUEST_LINE = re.compile(
    rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*) HTTP/1\.1\r\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) ([\x21-\x7e](?:[\x21-\x7e ]*[\x21-\x7e])?)\r\n")
# Connection values in the subset: tokens of letters, digits and "-", separated by commas with
# optional spaces (what both llhttp and http1._tokens read the same way).
_CONNECTION = re.compile(rb"[A-Za-z0-9\-]+(?: *, *[A-Za-z0-9\-]+)*")
_CLOSE = re.compile(rb"(?:^|[ ,])close(?:$|[ ,])", re.IGNORECASE)
_UPGRADE_TOKEN = re.compile(rb"(?:^|[ ,])upgrade(?:$|[ ,])", re.IGNORECASE)


def _fields(data: bytes, pos: int) -> tuple[int, list, bytes | None, bool, int, int] | None:
    """The header fields from `pos` to the blank line: (end, headers, connection value, has
    Upgrade, Content-Length count, Transfer-Encoding count), or None outside the subset."""
    headers: list[tuple[bytes, bytes]] = []
    connection: bytes | None = None
    upgrade = False
    lengths = 0
    encodings = 0
    while True:
        if data.startswith(b"\r\n", pos):
            return pos + 2, headers, connection, upgrade, lengths, encodings
        match = _FIELD.match(data, pos)
        if match is None:
            return None
        name, value = match.group(1), match.group(2)
        lname = name.lower()
        if lname == b"connection":
            if connection is not None or _CONNECTION.fullmatch(value) is None:
                return None
            connection = value
        elif lname == b"upgrade":
            upgrade = True
        elif lname == b"content-length":
            lengths += 1
        elif lname == b"transfer-encoding":
            encodings += 1
        headers.append((name, value))
        pos = match.end()


def scan_request(data: bytes, start: int) -> tuple | None:
    match = _REQUEST_LINE.match(data, start)
    if match is None:
        return None
    fields = _fields(data, match.end())
    if fields is None:
        return None
    end, headers, connection, upgrade, lengths, encodings = fields
    if lengths or encodings:
        return None
    if connection is not None and _CLOSE.search(connection):
        return None
    if upgrade and (connection is None or not _UPGRADE_TOKEN.search(connection)):
        return None
    method = match.group(1)
    if upgrade and method != b"GET":
        return None
    return end, method, match.group(2), headers


def scan_response(data: bytes, start: int) -> tuple | None:
    match = _STATUS_LINE.match(data, start)
    if match is None:
        return None
    status = int(match.group(1))
    if status < 200 and status != 101 or status == 204 or status == 304:
        return None
    fields = _fields(data, match.end())
    if fields is None:
        return None
    end, headers, connection, upgrade, lengths, encodings = fields
    if encodings or lengths > 1:
        return None
    upgrade_token = connection is not None and _UPGRADE_TOKEN.search(connection) is not None
    if status == 101:
        if not (upgrade and upgrade_token) or lengths:
            return None
        return end, status, match.group(2), headers, -1
    if upgrade or upgrade_token or lengths != 1:
        return None
    length = -1
    for name, value in headers:
        if name.lower() == b"content-length":
            if not value.isdigit() or len(value) > 15:
                return None
            length = int(value)
    return end, status, match.group(2), headers, length
