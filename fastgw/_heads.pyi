"""The head scanner: fastgw._heads (Cython) and fastgw._heads_py (its twin).

httptools (llhttp) is the parser of record on both legs. Its per-header Python callbacks cost
more than the parsing itself, so the common head takes a shortcut: these functions read a
complete request or response head in one pass, in C, and return it whole. They read only a
strict subset of HTTP/1.1, and for anything outside it (an incomplete head, a byte or a form
they do not take, a body to frame other than a Content-Length in a response) they return None
and the caller gives the bytes to httptools, which accepts, refuses and splits as always.
What they return is what httptools reports for the same bytes, split at the same place
(tests/test_heads.py proves it with hypothesis against httptools itself), so nothing accepted
here would have been refused there, and no answer depends on which of the two read a head.

The subset (RFC 9112 section 2 and 5 on HTTP/1.1 messages, RFC 9110 section 5 on fields):
- the start line: a request line with one of GET HEAD POST PUT DELETE OPTIONS PATCH, an
  origin-form target of unreserved, sub-delims, ":", "@", "/", "?" and "%", and HTTP/1.1; or a
  status line of HTTP/1.1, a status 101 or 200-599 but 204 and 304, and a non-empty reason;
- fields: a token name, a colon, spaces, and a non-empty value of visible ASCII with single
  spaces inside, each line ended by CRLF;
- at most one Connection field, of tokens made of letters, digits and "-";
- requests: no Content-Length or Transfer-Encoding (no body), no "close" connection option
  (llhttp reads nothing after such a request), and Upgrade only on a GET with the "upgrade"
  connection option (a WebSocket handshake, which leaves HTTP);
- responses: a 101 with Upgrade and the "upgrade" connection option, or any other status in the
  range with exactly one Content-Length of digits, no Transfer-Encoding and no Upgrade.
"""

__all__ = ["scan_request", "scan_response"]


def scan_request(data: bytes, start: int) -> tuple | None:
    """The request head at data[start:]: (end, method, url, headers) with end the offset just
    past its blank line and headers [(name, value), ...] as sent, or None (see above)."""


def scan_response(data: bytes, start: int) -> tuple | None:
    """The response head at data[start:]: (end, status, reason, headers, content_length), with
    content_length -1 for a 101, or None (see above)."""
