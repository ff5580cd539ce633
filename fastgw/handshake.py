"""The WebSocket opening handshake (RFC 6455 section 4), as a proxy performs it. Pure.

The gateway validates the client's upgrade request (section 4.2.1) before anything reaches a
backend, forwards it with the client's own Sec-WebSocket-Key, and answers the client only after
the backend's 101, whose Sec-WebSocket-Accept, subprotocol and extensions it checks against what
the client offered (section 4.1, the client's duties, which the gateway performs on the client's
behalf). The backend chooses the subprotocol and the extensions; the gateway passes its choice on.
"""

from __future__ import annotations

import binascii
import hashlib

from fastgw import http1
from fastgw.config import parse_origin
from fastgw.errors import HandshakeError, UpstreamError
from fastgw.http1 import _tokens, dropped

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (section 4.2.2 step 5.4)."""
    return binascii.b2a_base64(hashlib.sha1(key.strip() + GUID).digest(), newline=False)


def is_key(key: bytes) -> bool:
    """A Sec-WebSocket-Key is 16 bytes in base64 (section 4.1): 22 base64 characters and "==".
    Checked by shape, without decoding (the same acceptance as a strict b64decode)."""
    return len(key) == 24 and key[22:] == b"==" and not key[:22].translate(None, _BASE64)


class Offer:
    """What the client asked for, kept to check the backend's answer."""

    __slots__ = ("key", "protocols", "extensions")

    def __init__(self, key: bytes, protocols: tuple, extensions: tuple):
        self.key = key
        self.protocols = protocols  # Sec-WebSocket-Protocol values offered, as sent
        self.extensions = extensions  # extension names offered (lower-case)

    def __repr__(self) -> str:
        return f"Offer(key={self.key!r}, protocols={self.protocols!r}, extensions={self.extensions!r})"


def validate_request(head: http1.RequestHead) -> Offer:
    """Check a client's upgrade request; raise HandshakeError(400 or 426) if it is not valid.

    `head` went through http1.analyse_request, which indexed the headers read here.
    """
    if head.method != b"GET":
        raise HandshakeError(400, "WebSocket upgrade must use GET")
    if head.version != "1.1":
        raise HandshakeError(400, "WebSocket upgrade needs HTTP/1.1")
    if not head.host:
        raise HandshakeError(400, "missing Host header")
    if head.has_body:
        raise HandshakeError(400, "WebSocket upgrade request must not have a body")
    fields = head.fields
    if b"websocket" not in _tokens(fields.get(b"upgrade")):
        raise HandshakeError(400, "Upgrade header must name websocket")
    if b"upgrade" not in head.connection_tokens:
        raise HandshakeError(400, "Connection header must contain 'upgrade'")
    keys = fields.get(b"sec-websocket-key", ())
    if len(keys) != 1:
        raise HandshakeError(400, "exactly one Sec-WebSocket-Key is required")
    key = keys[0].strip()
    if not is_key(key):
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded")
    versions = fields.get(b"sec-websocket-version")
    if not versions or len(versions) != 1 or versions[0].strip() != b"13":
        # Section 4.4: answer with the versions we speak.
        raise HandshakeError(426, "unsupported Sec-WebSocket-Version (13 is supported)",
                             headers=(("Sec-WebSocket-Version", "13"),))
    # Loops, not generator expressions: the compiled build makes this a C function (cpdef),
    # which cannot hold a closure.
    protocols = []
    for value in fields.get(b"sec-websocket-protocol") or ():
        for item in value.split(b","):
            item = item.strip()
            if item:
                protocols.append(item)
    extensions = []
    for value in fields.get(b"sec-websocket-extensions") or ():
        for item in value.split(b","):
            if item.strip():
                extensions.append(item.split(b";")[0].strip().lower())
    return Offer(key, tuple(protocols), tuple(extensions))


def check_origin(head: http1.RequestHead, allowed: tuple) -> None:
    """Refuse (403) a handshake whose Origin is missing or not in `allowed`
    (config.SettingsConfig.websocket_allowed_origins): browsers send Origin with every
    handshake (RFC 6455 section 4.1 step 8, section 10.2) and no CORS check protects a
    WebSocket, so the allowlist is what stops cross-site WebSocket hijacking."""
    # Not indexed in head.fields: only a handshake under an allowlist reads it.
    values = [pair[1] for pair, lname in zip(head.headers, head.lnames) if lname == b"origin"]
    if not values:
        raise HandshakeError(403, "Origin header missing (websocket_allowed_origins is set)")
    text = b",".join(values).decode("latin-1")
    origin = parse_origin(text) if len(values) == 1 else None
    if origin is not None:
        scheme, host, port = origin
        for a_scheme, a_host, a_port in allowed:
            if a_scheme == scheme and a_port == port and (
                    a_host == host or (a_host[0] == "." and host.endswith(a_host))):
                return
    raise HandshakeError(403, f"Origin {text!r} is not in websocket_allowed_origins")


def restrict_protocols(head: http1.RequestHead, offer: Offer, allowed: tuple) -> None:
    """Keep only the offered subprotocols in `allowed` (websocket_allowed_subprotocols), in the
    offer and in the Sec-WebSocket-Protocol the backend gets; 403 when none is left (the backend
    could only refuse or pick one we do not allow). An offer of none is left alone."""
    kept = tuple(p for p in offer.protocols if p.decode("latin-1") in allowed)
    if not kept:
        raise HandshakeError(403, "none of the offered subprotocols is in "
                                  "websocket_allowed_subprotocols")
    if kept == offer.protocols:
        return
    offer.protocols = kept
    headers = []
    lnames = []
    for pair, lname in zip(head.headers, head.lnames):
        if lname == b"sec-websocket-protocol":
            if lname in lnames:
                continue  # one header carries the list (RFC 6455 section 11.3.4)
            pair = (pair[0], b", ".join(kept))
        headers.append(pair)
        lnames.append(lname)
    head.headers = headers
    head.lnames = lnames
    head.fields[b"sec-websocket-protocol"] = [b", ".join(kept)]


class Agreement:
    """What the backend's 101 settled: passed on to the client, and to the relay's scanners."""

    __slots__ = ("protocol", "extensions")

    def __init__(self, protocol: bytes | None, extensions: tuple):
        self.protocol = protocol
        self.extensions = extensions  # names, lower-case

    def __repr__(self) -> str:
        return f"Agreement(protocol={self.protocol!r}, extensions={self.extensions!r})"

    @property
    def deflate(self) -> bool:
        """permessage-deflate (RFC 7692) was accepted: RSV1 marks compressed messages."""
        return b"permessage-deflate" in self.extensions


def check_response(offer: Offer, head: http1.ResponseHead) -> Agreement:
    """Check a backend's 101 (section 4.1, the client's checks); raise UpstreamError(502)."""
    if b"websocket" not in _tokens(head.fields.get(b"upgrade")):
        raise UpstreamError(502, "backend 101 lacks 'Upgrade: websocket'")
    if b"upgrade" not in head.connection_tokens:
        raise UpstreamError(502, "backend 101 lacks 'Connection: Upgrade'")
    accept = head.header(b"sec-websocket-accept")
    if accept is None or accept.strip() != accept_key(offer.key):
        raise UpstreamError(502, "backend 101 has a wrong Sec-WebSocket-Accept")
    protocol = head.header(b"sec-websocket-protocol")
    if protocol is not None:
        protocol = protocol.strip()
        if protocol not in offer.protocols:
            # Not offered to the backend: the client did not offer it, or it is not allowed.
            raise UpstreamError(502, f"backend chose subprotocol {protocol!r}, which was not "
                                     "offered to it")
    extensions = []
    for value in head.fields.get(b"sec-websocket-extensions") or ():
        for ext in value.split(b","):
            ext_name = ext.split(b";")[0].strip().lower()
            if not ext_name:
                continue
            if ext_name not in offer.extensions:
                raise UpstreamError(502, f"backend chose extension {ext_name!r} the client did not offer")
            extensions.append(ext_name)
    return Agreement(protocol, tuple(extensions))


_NOT_IN_101 = http1.HOP_BY_HOP | {b"content-length"}


def client_101(head: http1.ResponseHead, extra: tuple = ()) -> bytes:
    """The 101 sent to the client: the backend's, minus hop-by-hop headers, re-stated exactly."""
    drop = dropped(_NOT_IN_101, head.connection_tokens)
    out = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"]
    for (name, value), lname in zip(head.headers, head.lnames):
        if lname not in drop:
            out += (name, b": ", value, b"\r\n")
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)
