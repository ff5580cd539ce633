"""A WebSocket upgrade request on its way through the gateway, until the session starts.

It is an HTTP exchange (same routing, server choice, connect timeout, retries and 502/503/504
answers) with three differences: the request validated first (handshake.validate_request: 400 or
426 before any backend is contacted), the upgrade headers set explicitly on the backend request,
and the backend's 101 checked (handshake.check_response: 502 on a wrong accept key, subprotocol
or extension) before the client gets its own 101. Then both transports go to a WebSocketSession
(relay.py). A backend answer other than 101 is relayed to the client as a normal response, after
which the connection closes (what the client sent after its request may be WebSocket frames).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httptools

from fastgw import handshake, http1, log
from fastgw.contracts import ClientSide, ExchangeServices, Recorder
from fastgw.errors import UpstreamError
from fastgw.handshake import check_response, client_101
from fastgw.heads import scan_response
from fastgw.http1 import ResponseHead, analyse_response, response_version
from fastgw.log import DEBUG, enabled  # two module lookups fewer per handshake
from fastgw.proxy import DONE, HttpExchange, parser_failure
from fastgw.relay import WebSocketSession

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.backends import Backend, SessionCount
    from fastgw.routing import Route

# Client bytes held while the handshake is with the backend (frames sent before our 101).
MAX_EARLY_DATA = 1 << 20


class WebSocketExchange(HttpExchange):
    __slots__ = ("offer", "early", "early_bytes", "switching", "session", "recorder",
                 "close_timeout", "sessions")

    def __init__(self, client: ClientSide, head: http1.RequestHead, route: Route,
                 backend: Backend, services: ExchangeServices, offer: handshake.Offer,
                 recorder: Recorder, close_timeout: float):
        HttpExchange.__init__(self, client, head, route, backend, services)
        self.offer = offer
        self.recorder = recorder  # the session reports its start and end there
        self.close_timeout = close_timeout
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.upgrading = True
        self.keep_client = False  # whatever the backend answers, this connection is not HTTP after
        self.retry_ok = True  # nothing of a handshake is lost by sending it again elsewhere
        self.switching: http1.ResponseHead | None = None
        self.session: WebSocketSession | None = None
        # A place among the settings' open sessions (max_sessions), taken now and given back
        # by release_session when the handshake fails or the session ends.
        count = backend.sessions
        count.open += 1
        self.sessions: SessionCount | None = count

    # -- bytes from the client before the session starts ----------------------------------

    def client_data(self, data: bytes) -> None:
        if not data:
            return
        self.early.append(data)
        self.early_bytes += len(data)
        if self.early_bytes > MAX_EARLY_DATA:
            self.client.pause_reading_for(self)

    # -- the backend's answer --------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        first = not self.received_bytes
        self.received_bytes += len(data)
        self.read_at = self.client.clock()
        if first:
            # A 101 the head scanner reads (fastgw/_heads.pyi) is taken as httptools would have
            # taken it: the head, then what follows it is the backend's first frames.
            found = scan_response(data, 0)
            if found is not None and found[1] == 101:
                self._switching(found[3], "1.1")
                self._switch(data[found[0]:])
                self._settle(True)
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._switch(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError(502, parser_failure("invalid handshake response from backend", exc)))
        # A refused handshake's connection is not kept: what follows such an answer is unknown.
        self._settle(True)

    def response_head_complete(self) -> None:
        parser = self.parser
        if parser.get_status_code() == 101:
            headers, self.resp_headers = self.resp_headers, []
            self._switching(headers, response_version(parser))
            return
        HttpExchange.response_head_complete(self)

    def _switching(self, headers: list, version: str) -> None:
        """The backend's 101 head: kept until the end of the message (_switch)."""
        head = ResponseHead(101, b"", version, headers)
        analyse_response(head)
        self.switching = head

    def _switch(self, backend_early: bytes) -> None:
        head = self.switching
        if head is not None:
            self.server_latency = self.read_at - self.upstream_started
        if head is None:
            self.fail(UpstreamError(502, "backend upgraded without a 101"))
            return
        try:
            agreement = check_response(self.offer, head)
        except UpstreamError as error:
            self.fail(error)
            return
        conn, self.conn = self.conn, None
        if conn is None:  # cannot be: a 101 was read from it
            return
        conn.exchange = None
        conn.parser = None  # the connection carries frames from now on
        self.parser = None  # the endpoint's active count now belongs to the session
        client = self.client
        if self.rewrite is not None:
            # The Sec-WebSocket-* headers the backend agreed on stay as they are: config.py
            # refuses rules that touch them.
            self.edit_response_head(head)
        client.write(client_101(head, self.response_extra()))
        self.status = 101
        self.state = DONE
        session = WebSocketSession(client, conn, self, agreement.deflate, self.recorder,
                                   self.close_timeout)
        self.session = session
        client.upgraded(self, session)
        session.start(b"".join(self.early), backend_early)
        self.early = []
        # The session keeps this exchange for its identity (route, backend, request id, URL)
        # for as long as it lives: drop the heads' header lists, which it does not need.
        request = self.head
        request.headers = []
        request.lnames = []
        request.fields = {}
        self.rewrite = None  # it holds the original header lists
        self.switching = None
        if enabled(DEBUG):
            log.event(log.DEBUG, "websocket_open", rule=self.route.rule.name,
                      server=conn.endpoint.name, protocol=agreement.protocol,
                      extensions=list(agreement.extensions))

    def client_lost(self) -> None:
        if self.session is None:
            HttpExchange.client_lost(self)
            release_session(self)


def release_session(ex: Any) -> None:
    """Give back the exchange's place among its settings' sessions (once; called when the
    handshake is answered without a session, its client is lost, or its session ends). `ex` is
    a WebSocketExchange, or the identity of a session resumed after a live upgrade
    (fastgw.handover), which holds a place the same way."""
    count = ex.sessions
    if count is not None:
        ex.sessions = None
        count.open -= 1
