"""HTTP/1.1 message heads: what the proxy needs on top of httptools.

httptools (llhttp) does the parsing on both legs, and the head scanner (fastgw/_heads.pyi) reads
the common heads whole; this module turns either's output into `RequestHead` / `ResponseHead`,
applies the framing rules that keep a proxy safe from request smuggling (RFC 9112 section 6),
drops hop-by-hop headers (RFC 9110 section 7.6.1) and writes the heads the gateway sends. No I/O
here.
"""

from __future__ import annotations

from http import HTTPStatus

from fastgw.errors import RequestError

# RFC 9110 section 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
# Upgrade; Trailer and the Proxy-Authenticate/-Authorization pair are hop-by-hop since RFC 2616
# section 13.5.1. Plus any header the Connection header lists.
HOP_BY_HOP = frozenset({
    b"connection", b"proxy-connection", b"keep-alive", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})

# Headers the gateway sets itself towards the backend; a client's own values are replaced
# (X-Forwarded-For is appended to instead).
_FORWARDING = frozenset({b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host"})

# Reason phrases: http.HTTPStatus's, with RFC 9110's newer names where Python's are older (413,
# 422). The one table of them: every answer fastgw writes itself takes its phrase from here.
REASONS: dict[int, str] = {
    **{s.value: s.phrase for s in HTTPStatus},
    413: "Content Too Large", 422: "Unprocessable Content",
}


def reason(status: int) -> str:
    return REASONS.get(status, "Unknown")


# A status's class, as metrics label it: STATUS_CLASSES[status_class_index(status)].
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class_index(status: int) -> int:
    return status // 100 if 100 <= status <= 599 else 0


# Status lines, made once: "HTTP/1.1 200 OK\r\n".
_STATUS_LINES = {status: b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())
                 for status, phrase in REASONS.items()}

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


# Header names the gateway itself reads, lower-case. analyse_request/analyse_response lower-case
# every name once, keep those names (`lnames`) for the passes that forward headers, and index
# the values of these names in `fields`; nothing else looks at a header twice.
_REQUEST_FIELDS = frozenset({
    b"content-length", b"transfer-encoding", b"host", b"connection", b"upgrade", b"expect",
    b"x-request-id", b"x-forwarded-for", b"cookie", b"user-agent", b"sec-websocket-key",
    b"sec-websocket-version", b"sec-websocket-protocol", b"sec-websocket-extensions",
})
_RESPONSE_FIELDS = frozenset({
    b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"sec-websocket-accept",
    b"sec-websocket-protocol", b"sec-websocket-extensions",
})
# What forward_request_head never copies from the client: hop-by-hop headers, Host (set), the
# forwarding headers (set; X-Forwarded-For is appended to).
_NOT_FORWARDED = HOP_BY_HOP | _FORWARDING | {b"host", b"x-forwarded-for"}
# What client_response_head drops when the gateway chunks the body: its Content-Length too.
_NOT_CHUNKED = HOP_BY_HOP | {b"content-length"}


class RequestHead:
    """A parsed request head. `headers` keep their original case and order."""

    __slots__ = ("method", "url", "version", "headers", "lnames", "fields", "host",
                 "content_length", "chunked", "keep_alive", "upgrade", "connection_tokens",
                 "expect_continue", "t0", "size", "original_url", "request_id")

    def __init__(self, method: bytes, url: bytes, version: str, headers: list):
        self.method = method
        self.url = url
        self.version = version  # "1.1" or "1.0"
        self.headers = headers  # [(name, value), ...] as bytes
        self.lnames: list[bytes] = []  # the names, lower-case (analyse_request)
        self.fields: dict[bytes, list[bytes]] = {}  # values of the names the gateway reads
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.upgrade: bytes | None = None  # lower-cased Upgrade header value, if any
        self.connection_tokens: frozenset = frozenset()
        self.expect_continue = False
        self.t0 = 0.0  # loop time of the request's first byte
        self.size = 0  # bytes of the request head
        self.original_url = url
        self.request_id: bytes | None = None  # X-Request-Id as received

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def upgrade_requested(self) -> bool:
        """The request asks to switch to WebSocket (RFC 6455 section 4.1: Upgrade: websocket
        and Connection: upgrade); validated before anything else (handshake.validate_request)."""
        return self.upgrade == b"websocket" and b"upgrade" in self.connection_tokens

    def leaves_http(self) -> bool:
        """llhttp stops parsing after this request: an upgrade (Upgrade with Connection:
        upgrade, whatever the protocol) or CONNECT (RFC 9110 section 9.3.6)."""
        return self.method == b"CONNECT" or (
            self.upgrade is not None and b"upgrade" in self.connection_tokens)

    def header(self, name: bytes) -> bytes | None:
        """First value of a header the gateway reads (name lower-case, in _REQUEST_FIELDS)."""
        values = self.fields.get(name)
        return values[0] if values else None

    def path(self) -> str:
        """The URL path, without query or fragment (what routing matches)."""
        url = self.url
        end = url.find(b"?")
        if end < 0:
            end = url.find(b"#")
        return (url if end < 0 else url[:end]).decode("latin-1")

    def path_and_query(self) -> tuple[str, str]:
        url = self.url.split(b"#", 1)[0]
        q = url.find(b"?")
        return self.path(), ("" if q < 0 else url[q + 1:].decode("latin-1"))


# Header names as peers send them, lower-cased once: the same few dozen names come with every
# request and response, and a dict lookup costs less than bytes.lower() and hashing its result.
# Bounded (names seen after it fills are lowered each time): a client cannot grow it.
_LOWER: dict[bytes, bytes] = {}
_LOWER_MAX = 512


def _index(headers: list, wanted: frozenset) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    lnames = []
    fields: dict[bytes, list[bytes]] = {}
    lower = _LOWER
    for name, value in headers:
        lname = lower.get(name)
        if lname is None:
            lname = name.lower()
            if len(lower) < _LOWER_MAX:
                lower[name] = lname
        lnames.append(lname)
        if lname in wanted:
            values = fields.get(lname)
            if values is None:
                fields[lname] = [value]
            else:
                values.append(value)
    return lnames, fields


_NO_TOKENS: frozenset = frozenset()

# The tokens of a single value, as peers send it ("Upgrade", "keep-alive", "websocket"): a few
# values come with most requests and handshakes, and a dict lookup costs a tenth of splitting,
# stripping and lower-casing one. Bounded as _LOWER is; the sets are frozen, so shared.
_VALUE_TOKENS: dict[bytes, frozenset] = {}


def _tokens(values: list[bytes] | None) -> frozenset:
    """The comma-separated tokens of a header's values, lower-case (Connection, Upgrade)."""
    if not values:
        return _NO_TOKENS
    if len(values) == 1:
        value = values[0]
        cache = _VALUE_TOKENS  # a local typed dict (http1.pxd): get() is then a C call
        tokens = cache.get(value)
        if tokens is None:
            tokens = _split_tokens(values)
            if len(cache) < _LOWER_MAX:
                cache[value] = tokens
        return tokens
    return _split_tokens(values)


def _split_tokens(values: list[bytes]) -> frozenset:
    # find(), not `b"," in value`: CPython 3.11's bytes.__contains__ first tries its argument as
    # an integer and raises (and clears) a formatted TypeError for every bytes argument.
    if len(values) == 1 and values[0].find(b",") < 0:
        return frozenset((values[0].strip().lower(),))
    tokens = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip()
            if token:
                tokens.add(token.lower())
    return frozenset(tokens)


def request_framing(content_lengths: list[bytes] | None, transfer_encodings: list[bytes] | None,
                    version: str) -> tuple[int | None, bool]:
    """The request body's framing, (Content-Length or None, chunked), from the values of those
    headers; RequestError(400) for anything that could be read two ways (request smuggling).

    RFC 9112 section 6.3: a request with both Content-Length and Transfer-Encoding is an attack
    vector; so are repeated or malformed Content-Length values and any transfer coding other than
    a final `chunked` (we accept exactly `chunked`, as nginx does), and Transfer-Encoding in an
    HTTP/1.0 request, which an HTTP/1.0 hop would not understand (section 6.1).
    """
    if content_lengths and transfer_encodings:
        raise RequestError(400, "both Content-Length and Transfer-Encoding")
    if content_lengths:
        if len(content_lengths) > 1:
            raise RequestError(400, "repeated Content-Length")
        value = content_lengths[0].strip()
        if not value.isdigit() or len(value) > 18:
            raise RequestError(400, "malformed Content-Length")
        return int(value), False
    if transfer_encodings:
        if len(transfer_encodings) > 1 or transfer_encodings[0].strip().lower() != b"chunked":
            raise RequestError(400, "unsupported Transfer-Encoding (only a single 'chunked')")
        if version == "1.0":
            raise RequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
        return None, True
    return None, False


def analyse_request(head: RequestHead) -> None:
    """Fill in the framing fields and refuse what could be smuggled (RequestError 400), before
    anything reaches a backend; the connection is closed after such a refusal."""
    head.lnames, fields = _index(head.headers, _REQUEST_FIELDS)
    head.fields = fields
    head.content_length, head.chunked = request_framing(
        fields.get(b"content-length"), fields.get(b"transfer-encoding"), head.version)
    hosts = fields.get(b"host")
    if hosts:
        if len(hosts) > 1:
            raise RequestError(400, "repeated Host header")
        head.host = hosts[0].strip()
    elif head.version != "1.0":
        raise RequestError(400, "missing Host header")  # RFC 9112 section 3.2
    url = head.url
    if url[:1] != b"/":
        if url.startswith((b"http://", b"https://")):
            # Absolute form (RFC 9112 section 3.2.2): the authority in the URL wins over Host.
            rest = url.split(b"://", 1)[1]
            slash = rest.find(b"/")
            authority, path = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
            if not authority:
                raise RequestError(400, "absolute URL without a host")
            head.host = authority
            head.url = path
        elif not (url == b"*" and head.method == b"OPTIONS"):
            raise RequestError(400, "request target must be a path")
    if b"upgrade" in fields:
        head.upgrade = fields[b"upgrade"][0].strip().lower()
    if b"expect" in fields:
        head.expect_continue = fields[b"expect"][0].strip().lower() == b"100-continue"
    if b"x-request-id" in fields:
        head.request_id = fields[b"x-request-id"][0].strip()
    connection = fields.get(b"connection")
    tokens = _tokens(connection) if connection else _NO_TOKENS
    head.connection_tokens = tokens
    if head.version == "1.0":
        head.keep_alive = b"keep-alive" in tokens
    else:
        head.keep_alive = b"close" not in tokens


# The names a forwarded head leaves out, by (fixed names, Connection tokens): the same few token
# sets (shared through _tokens' cache) come with most heads, and a dict lookup costs a fraction of
# building their union for each head. Bounded as _LOWER is.
_DROPS: dict[tuple[frozenset, frozenset], frozenset] = {}


def dropped(fixed: frozenset, tokens: frozenset) -> frozenset:
    """`fixed` and the names the Connection header lists (RFC 9110 section 7.6.1)."""
    if not tokens:
        return fixed
    drops = _DROPS
    key = (fixed, tokens)
    drop = drops.get(key)
    if drop is None:
        drop = fixed | tokens
        if len(drops) < _LOWER_MAX:
            drops[key] = drop
    return drop


def forward_request_head(head: RequestHead, host: bytes, client_ip: str, proto: bytes,
                         port: bytes, upgrade: bool = False, extra: tuple = ()) -> bytes:
    """The request head sent to a backend, always HTTP/1.1 (RFC 9110 section 7.6).

    Hop-by-hop headers and those the Connection header names are dropped; Host is `host`;
    X-Forwarded-For gets the client appended, X-Forwarded-Proto/-Port and X-Original-Host are set.
    The body is re-framed by the caller: Content-Length is kept, chunked stays chunked.
    """
    drop = dropped(_NOT_FORWARDED, head.connection_tokens)
    out = [head.method, b" ", head.url, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    headers = head.headers
    lnames = head.lnames
    n = len(headers)
    for i in range(n):  # indexes, not zip(), and appends, not `out += (...)`: compiled, this
        if lnames[i] not in drop:  # is a C loop that builds no tuple per header
            pair = headers[i]
            out.append(pair[0])
            out.append(b": ")
            out.append(pair[1])
            out.append(b"\r\n")
    ip = client_ip.encode("ascii")
    xff = head.fields.get(b"x-forwarded-for")
    out += (b"X-Forwarded-For: ", b", ".join(xff) + b", " + ip if xff else ip,
            b"\r\nX-Forwarded-Proto: ", proto, b"\r\nX-Forwarded-Port: ", port,
            b"\r\nX-Original-Host: ", head.host or b"", b"\r\n")
    for pair in extra:
        out += (pair[0], b": ", pair[1], b"\r\n")
    if upgrade:
        out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif head.chunked:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def response_version(parser) -> str:
    """The version to build a ResponseHead with. analyse_response reads it only to decide
    keep-alive, and when llhttp already says the connection stays open "1.1" decides the same;
    so parser.get_http_version(), which formats a new string each time (a few % of a proxied
    request), is only asked when it matters."""
    return "1.1" if parser.should_keep_alive() else parser.get_http_version()


class ResponseHead:
    __slots__ = ("status", "reason", "version", "headers", "lnames", "fields", "content_length",
                 "chunked", "keep_alive", "connection_tokens")

    def __init__(self, status: int, reason: bytes, version: str, headers: list):
        self.status = status
        self.reason = reason
        self.version = version  # "1.0" only matters (keep-alive): see response_version()
        self.headers = headers
        self.lnames: list[bytes] = []
        self.fields: dict[bytes, list[bytes]] = {}
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.connection_tokens: frozenset = frozenset()

    def header(self, name: bytes) -> bytes | None:
        """First value of a header the gateway reads (name lower-case, in _RESPONSE_FIELDS)."""
        values = self.fields.get(name)
        return values[0] if values else None


def analyse_response(head: ResponseHead) -> None:
    head.lnames, fields = _index(head.headers, _RESPONSE_FIELDS)
    head.fields = fields
    lengths = fields.get(b"content-length")
    if lengths:
        v = lengths[0].strip()
        if v.isdigit():
            head.content_length = int(v)
    encodings = fields.get(b"transfer-encoding")
    if encodings:
        head.chunked = encodings[-1].strip().lower().endswith(b"chunked")
        if head.chunked:
            head.content_length = None
    connection = fields.get(b"connection")
    tokens = _tokens(connection) if connection else _NO_TOKENS
    head.connection_tokens = tokens
    if head.version == "1.0":
        head.keep_alive = b"keep-alive" in tokens
    else:
        head.keep_alive = b"close" not in tokens


# How a response body reaches the client (client_response_head): the gateway's decision.
NONE, LENGTH, CHUNKED, CLOSE = b"none", b"length", b"chunked", b"close"


def response_framing(method: bytes, status: int, content_length: int | None,
                     client_version: str) -> bytes:
    """How the response body is framed for the client (RFC 9112 section 6.3).

    NONE: no body (a response to HEAD, 204, 304; RFC 9110 sections 9.3.2, 15.3.5, 15.4.5);
    LENGTH: the backend's Content-Length is kept; CLOSE: the body ends when the connection
    closes (an HTTP/1.0 client cannot read chunked); CHUNKED: the gateway chunks it (a chunked
    or close-delimited backend body to an HTTP/1.1 client, which keeps the connection open).
    `content_length` is None when the backend sent none or sent chunked (analyse_response).
    """
    if method == b"HEAD" or status == 204 or status == 304:
        return NONE
    if content_length is not None:
        return LENGTH
    if client_version == "1.0":
        return CLOSE
    return CHUNKED


def client_response_head(head: ResponseHead, framing: bytes, keep_alive: bool,
                         client_version: str, extra: tuple = ()) -> bytes:
    """The response head sent to the client.

    `framing` is what the gateway decided: b"length" (keep Content-Length), b"chunked" (we
    chunk), b"close" (body ends at connection close) or b"none" (no body: HEAD, 204, 304, 1xx).
    """
    drop = dropped(_NOT_CHUNKED if framing == b"chunked" else HOP_BY_HOP, head.connection_tokens)
    status_line = None if head.reason else _STATUS_LINES.get(head.status)
    if status_line is None:
        status_line = b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason or b"Unknown")
    out = [status_line]
    headers = head.headers
    lnames = head.lnames
    n = len(headers)
    for i in range(n):  # as in forward_request_head
        if lnames[i] not in drop:
            pair = headers[i]
            out.append(pair[0])
            out.append(b": ")
            out.append(pair[1])
            out.append(b"\r\n")
    for pair in extra:
        out += (pair[0], b": ", pair[1], b"\r\n")
    if framing == b"chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif client_version == "1.0":
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


TEXT_PLAIN = b"text/plain; charset=utf-8"


def simple_response(status: int, body: str = "", *, keep_alive: bool = False,
                    headers: tuple = (), head_only: bool = False, payload: bytes = b"",
                    content_type: bytes = TEXT_PLAIN) -> bytes:
    """A short response the gateway writes itself (errors, redirects): a text/plain `body`, or
    `payload` bytes of `content_type` (an error page)."""
    phrase = reason(status)
    if not payload:
        if not body:
            body = f"{status} {phrase}\n"
        payload = body.encode("utf-8")
    out = [f"HTTP/1.1 {status} {phrase}\r\nServer: fastgw\r\n".encode()]
    for name, value in headers:
        out.append(f"{name}: {value}\r\n".encode("latin-1"))
    if status not in (204, 304):
        out.append(b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(payload)))
    out.append(b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only and status not in (204, 304):
        out.append(payload)
    return b"".join(out)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
