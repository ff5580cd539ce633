"""The gateway's pure decisions, each tested as itself from a table of cases.

- closepolicy.plan: for each way the gateway ends a WebSocket session, what each leg gets;
- http1.response_framing: how a response body is framed for the client;
- http1.request_framing: the request smuggling rules;
- handshake.check_response: which backend 101s are accepted.
"""

from __future__ import annotations

import pytest

from fastgw.closepolicy import BACKEND, CLIENT, Action, Ending, plan
from fastgw.errors import RequestError, UpstreamError
from fastgw.handshake import Offer, accept_key, check_response
from fastgw.http1 import CHUNKED, CLOSE, LENGTH, NONE, ResponseHead, analyse_response, request_framing, response_framing

# -- closepolicy.plan ------------------------------------------------------------------------

GONE = None
PLANS = [
    # ending, side, violation code and reason -> client leg, backend leg
    (Ending.IDLE, CLIENT, 0, "",
     Action(1001, "idle timeout"), Action(1001, "idle timeout")),
    (Ending.SHUTDOWN, CLIENT, 0, "",
     Action(1001, "gateway shutting down"), Action(1001, "gateway shutting down")),
    (Ending.DRAINED, CLIENT, 0, "",
     Action(1001, "server removed from the pool"), Action(1001, "server removed from the pool")),
    (Ending.LOST, CLIENT, 0, "",
     GONE, Action(1001, "client went away")),
    (Ending.LOST, BACKEND, 0, "",
     Action(1014, "backend connection lost"), GONE),
    (Ending.VIOLATION, CLIENT, 1002, "unmasked frame",
     Action(1002, "unmasked frame", cut=True), Action(1001, "client unmasked frame")),
    (Ending.VIOLATION, CLIENT, 1007, "invalid UTF-8",
     Action(1007, "invalid UTF-8", cut=True), Action(1001, "client invalid UTF-8")),
    (Ending.VIOLATION, CLIENT, 1009, "message too big",
     Action(1009, "message too big", cut=True), Action(1001, "client message too big")),
    (Ending.VIOLATION, BACKEND, 1002, "masked frame",
     Action(1014, "backend masked frame"), Action(1002, "masked frame", cut=True)),
    (Ending.VIOLATION, BACKEND, 1009, "frame too big",
     Action(1001, "backend frame too big"), Action(1009, "frame too big", cut=True)),
]


@pytest.mark.parametrize("ending, side, code, reason, client, backend", PLANS)
def test_close_policy(ending, side, code, reason, client, backend):
    assert plan(ending, side, code, reason) == (client, backend)


def test_close_policy_never_sends_1006_or_1005():
    """RFC 6455 section 7.4.1: 1005 and 1006 must never be sent in a Close frame."""
    for ending, side, code, reason, *_ in PLANS:
        for action in plan(ending, side, code, reason):
            assert action is None or action.code not in (1005, 1006)


# -- http1.response_framing ------------------------------------------------------------------

FRAMINGS = [
    # method, status, backend Content-Length, client version -> framing
    (b"HEAD", 200, 10, "1.1", NONE),
    (b"HEAD", 200, None, "1.0", NONE),
    (b"GET", 204, None, "1.1", NONE),
    (b"GET", 304, 10, "1.1", NONE),
    (b"GET", 200, 10, "1.1", LENGTH),
    (b"GET", 200, 0, "1.0", LENGTH),
    (b"POST", 500, 3, "1.1", LENGTH),
    (b"GET", 200, None, "1.1", CHUNKED),  # backend chunked or close-delimited: we chunk
    (b"GET", 200, None, "1.0", CLOSE),  # an HTTP/1.0 client cannot read chunked
    (b"GET", 404, None, "1.1", CHUNKED),
]


@pytest.mark.parametrize("method, status, length, version, expected", FRAMINGS)
def test_response_framing(method, status, length, version, expected):
    assert response_framing(method, status, length, version) == expected


# -- http1.request_framing: the smuggling rules -----------------------------------------------

ACCEPTED = [
    # Content-Length values, Transfer-Encoding values, version -> (length, chunked)
    (None, None, "1.1", (None, False)),
    ([b"0"], None, "1.1", (0, False)),
    ([b" 42 "], None, "1.0", (42, False)),
    (None, [b"chunked"], "1.1", (None, True)),
    (None, [b" Chunked "], "1.1", (None, True)),
]

REFUSED = [
    ([b"5"], [b"chunked"], "1.1", "both Content-Length and Transfer-Encoding"),
    ([b"5"], [b"identity"], "1.1", "both Content-Length and Transfer-Encoding"),
    ([b"5", b"5"], None, "1.1", "repeated Content-Length"),
    ([b"5, 5"], None, "1.1", "malformed Content-Length"),
    ([b"-1"], None, "1.1", "malformed Content-Length"),
    ([b"+5"], None, "1.1", "malformed Content-Length"),
    ([b"0x10"], None, "1.1", "malformed Content-Length"),
    ([b""], None, "1.1", "malformed Content-Length"),
    ([b"1" * 19], None, "1.1", "malformed Content-Length"),
    (None, [b"gzip, chunked"], "1.1", "unsupported Transfer-Encoding"),
    (None, [b"chunked", b"chunked"], "1.1", "unsupported Transfer-Encoding"),
    (None, [b"identity"], "1.1", "unsupported Transfer-Encoding"),
    (None, [b"chunked"], "1.0", "Transfer-Encoding in an HTTP/1.0 request"),
]


@pytest.mark.parametrize("lengths, encodings, version, expected", ACCEPTED)
def test_request_framing_accepted(lengths, encodings, version, expected):
    assert request_framing(lengths, encodings, version) == expected


@pytest.mark.parametrize("lengths, encodings, version, why", REFUSED)
def test_request_framing_refused(lengths, encodings, version, why):
    with pytest.raises(RequestError) as caught:
        request_framing(lengths, encodings, version)
    assert caught.value.status == 400 and caught.value.reason.startswith(why)


# -- handshake.check_response ----------------------------------------------------------------

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = accept_key(KEY)  # RFC 6455 section 1.3's example: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
GOOD = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Accept", ACCEPT)]


def response(headers: list) -> ResponseHead:
    head = ResponseHead(101, b"Switching Protocols", "1.1", headers)
    analyse_response(head)
    return head


def offer(protocols: tuple = (), extensions: tuple = ()) -> Offer:
    return Offer(KEY, protocols, extensions)


AGREED = [
    # offer, backend headers -> (protocol, extensions)
    (offer(), GOOD, (None, ())),
    (offer(), [(b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, upgrade"),
               (b"sec-websocket-accept", b" " + ACCEPT + b" ")], (None, ())),
    (offer((b"chat", b"superchat")), GOOD + [(b"Sec-WebSocket-Protocol", b"superchat")],
     (b"superchat", ())),
    (offer(extensions=(b"permessage-deflate",)),
     GOOD + [(b"Sec-WebSocket-Extensions", b"permessage-deflate; server_no_context_takeover")],
     (None, (b"permessage-deflate",))),
    (offer(extensions=(b"permessage-deflate",)), GOOD, (None, ())),  # offered, not taken
]

REJECTED = [
    (offer(), GOOD[1:], "lacks 'Upgrade: websocket'"),
    (offer(), [(b"Upgrade", b"h2c")] + GOOD[1:], "lacks 'Upgrade: websocket'"),
    (offer(), GOOD[:1] + GOOD[2:], "lacks 'Connection: Upgrade'"),
    (offer(), GOOD[:2], "wrong Sec-WebSocket-Accept"),
    (offer(), GOOD[:2] + [(b"Sec-WebSocket-Accept", accept_key(b"x" * 24))],
     "wrong Sec-WebSocket-Accept"),
    (offer(), GOOD + [(b"Sec-WebSocket-Protocol", b"chat")], "subprotocol b'chat'"),
    (offer((b"chat",)), GOOD + [(b"Sec-WebSocket-Protocol", b"superchat")],
     "subprotocol b'superchat'"),
    (offer(), GOOD + [(b"Sec-WebSocket-Extensions", b"permessage-deflate")],
     "extension b'permessage-deflate'"),
]


@pytest.mark.parametrize("offered, headers, expected", AGREED)
def test_check_response_accepts(offered, headers, expected):
    agreement = check_response(offered, response(headers))
    assert (agreement.protocol, agreement.extensions) == expected


@pytest.mark.parametrize("offered, headers, why", REJECTED)
def test_check_response_rejects(offered, headers, why):
    with pytest.raises(UpstreamError) as caught:
        check_response(offered, response(headers))
    assert caught.value.status == 502 and why in caught.value.cause
