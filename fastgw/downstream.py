"""The downstream leg: one client connection on a listener, speaking HTTP/1.1 until it upgrades.

httptools parses the client's requests, or the head scanner (fastgw/_heads.pyi) reads a whole
head in one call while httptools has not been given any of the connection's bytes (see
_scan); each complete request head becomes an exchange
(contracts.Exchange, started by the ConnectionHost: the routing decision) queued in arrival order
(pipelining: responses go out in request order, RFC 9112 section 9.3.2), and the head of the
queue runs. A WebSocket upgrade request leaves HTTP behind once its exchange performs the
upgrade: after the backend's 101 the connection's transport is handed to the relay.

Connection states (ConnectionState), and the transitions this module makes:

    HTTP       -- an upgrade request whose exchange performs the upgrade -->  UPGRADING
    UPGRADING  -- the backend answered 101 -->                               RELAYING (the relay
                                                                             owns the transport)
    UPGRADING  -- the backend answered otherwise, or failed -->              CLOSING (the answer
                                                                             is relayed, then close)
    HTTP       -- an answer that ends the connection (refusal, close) -->    CLOSING
    any        -- connection lost -->                                        CLOSED

An upgrade request the gateway refuses (an invalid handshake, no route) is answered in its turn
like any request and the connection closes after it; it never enters UPGRADING. After such a
request, and after any refusal, nothing more is parsed: what follows may be WebSocket frames, or
a request that cannot be trusted.

Timeouts (the connection's deadline_at, checked by the gateway's Sweeper): `header_timeout` from
the first byte of a request head to its end (408 then close); `keepalive_timeout` while idle
between requests (close); while an answer is in flight its exchange owns the deadline, and after
the upgrade the relay session does.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any

import httptools

from fastgw import http1, log
from fastgw.config import GatewayConfig
from fastgw.contracts import ClientSide, ConnectionHost, Exchange, Recorder
from fastgw.errors import HandshakeError, RequestError
from fastgw.heads import scan_request
from fastgw.http1 import RequestHead, analyse_request
from fastgw.local import LocalAnswer, gateway_answer
from fastgw.logline import transaction_id
from fastgw.timeouts import NEVER


class ConnectionState(enum.IntEnum):
    HTTP = 0
    UPGRADING = 1
    RELAYING = 2
    CLOSING = 3
    CLOSED = 4


# The states as module globals: read on every request, they are cheaper than
# ConnectionState.<name>.
HTTP, UPGRADING, RELAYING, CLOSING, CLOSED = ConnectionState


# Reasons a client's reading may be paused; reading resumes when none is left.
PAUSE_UPSTREAM = 1  # a backend (or our buffer) does not take the request body fast enough
PAUSE_PIPELINE = 2  # too many pipelined requests waiting


MAX_PIPELINED = 32

# The queue of every connection that left HTTP (shared, and holds nothing: maxlen 0).
_NO_QUEUE: deque = deque(maxlen=0)


class ClientConnection(ClientSide):
    """One client connection; httptools calls its on_* methods while parsing requests.

    An asyncio protocol by its methods (the event loop needs no base class): compiled, it is an
    extension type (downstream.pxd), which cannot derive from asyncio.Protocol."""

    __slots__ = ("host", "recorder", "state", "parser", "queue", "parsing", "pause_reasons",
                 "in_head", "head_bytes", "pending_head", "url", "headers", "requests",
                 "upgrade_exchange", "session", "refused", "request_started", "header_timeout",
                 "keepalive_timeout", "max_header_size", "keepalive_token", "parser_fed",
                 "__weakref__")

    def __init__(self, host: ConnectionHost, recorder: Recorder, limits: GatewayConfig,
                 loop: Any, socket_key: tuple[str, int], tls: bool, pages: Any = None):
        self.host = host
        self.pages = pages  # local.ErrorPages, shared by the gateway's connections
        self.recorder = recorder
        self.loop = loop
        self.clock = loop.time  # the loop's clock, bound once (read several times a request)
        # The limits as of the connection's start, read per request: copied once into plain
        # (compiled: typed) fields.
        self.header_timeout: float = limits.header_timeout
        self.keepalive_timeout: float = limits.keepalive_timeout
        self.max_header_size: int = limits.max_header_size
        self.upstream_keepalive = limits.upstream_keepalive
        self.socket_key = socket_key
        self.proto = b"https" if tls else b"http"
        self.port_bytes = str(socket_key[1]).encode()
        self.transport: Any = None
        self.state = HTTP
        self.parser: Any = httptools.HttpRequestParser(self)  # None once HTTP is over
        self.parser_fed = False  # httptools has been given bytes: it reads all that follow
        self.queue: deque[Exchange] = deque()  # in request order; queue[0] is answering
        self.parsing: Exchange | None = None  # the exchange whose request is being read
        self.write_paused = False
        self.pause_reasons: dict[object, int] = {}
        self.peer_ip = ""  # set before connection_made when a PROXY header named the client
        self.peer_port = 0
        self.gate: Any = None
        self.deadline_at = NEVER  # checked by the gateway's Sweeper (timeouts.py)
        self.in_head = False
        self.head_bytes = 0
        self.pending_head = 0
        self.url = b""
        self.headers: list = []
        self.keepalive_token = False  # a Connection header of this request says keep-alive
        self.requests = 0
        self.upgrade_exchange: Exchange | None = None  # UPGRADING: the exchange performing it
        self.session: Any = None  # RELAYING: the relay session (it owns the deadline)
        self.refused = False  # parse nothing more (a refusal, or a refused upgrade request)
        self.request_started = 0.0
        self.sent = 0  # bytes written to the client (access log sentBytes)
        self.tls_info: tuple[str, str] | None = None  # (protocol version, cipher) on https

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        if not self.peer_ip:
            peer = transport.get_extra_info("peername")
            if isinstance(peer, tuple):
                self.peer_ip, self.peer_port = peer[0], peer[1]
        # TCP_NODELAY: uvloop and asyncio set it on every TCP transport already.
        if self.proto == b"https":
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                cipher = ssl_object.cipher()
                self.tls_info = (ssl_object.version() or "", cipher[0] if cipher else "")
        if not self.host.connection_opened(self):
            self.close()  # the gateway is stopping
            return
        self.deadline_at = self.clock() + self.header_timeout

    def data_received(self, data: bytes) -> None:
        if self.state != HTTP or self.refused:
            ex = self.upgrade_exchange
            if ex is not None:  # UPGRADING: bytes that follow the upgrade request
                ex.client_data(data)
            return  # nothing more is parsed (see the module docstring)
        if not self.parser_fed:
            try:
                start = self._scan(data)
            except Exception as error:  # what a callback raising it would have caused
                self._request_failed(error)
                return
            if start < 0:
                return
            if start:
                data = data[start:]
            self.parser_fed = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data, exc.args[0])
            return
        except httptools.HttpParserCallbackError as exc:
            self._request_failed(exc.__context__)
            return
        except httptools.HttpParserError as exc:
            self.refuse(400, f"malformed request: {exc}")
            return
        if self.in_head:
            # A head still incomplete after this read: bound what llhttp buffers for it (one
            # read of slack over the limit; the exact limit applies per completed header).
            self.pending_head += len(data)
            if self.pending_head > self.max_header_size + 65536:
                self.refuse(431, "request head too large")

    def _scan(self, data: bytes) -> int:
        """Take the requests at the start of `data` that the head scanner reads whole, as
        httptools' callbacks would have taken them. Returns where httptools must go on, or -1
        when nothing is left for it.

        Only while httptools has not been given any of this connection's bytes: it is then
        between messages, and each request scanned here is one it never sees. The scanner reads
        no body (its requests have none) and no `Connection: close` request (after which llhttp
        refuses more bytes), so httptools is at a message boundary again after each. A head
        over max_header_size is left to httptools, which refuses it from on_header (431)."""
        pos = 0
        size = len(data)
        while True:
            found = scan_request(data, pos)
            if found is None:
                return pos
            end = found[0]
            if end - pos > self.max_header_size:
                return pos
            self.request_started = self.clock()
            self._request(found[1], found[2], "1.1", found[3], end - pos)
            self.on_message_complete()
            if self.state != HTTP or self.refused:
                self._after_upgrade(data, end)
                return -1
            if end == size:
                return -1
            pos = end

    def _request_failed(self, error: BaseException | None) -> None:
        """A request callback raised `error`: a refusal it carries, or an internal error."""
        if isinstance(error, (RequestError, HandshakeError)):
            self.refuse(error.status, error.reason, error.headers)
        else:
            log.event(log.ERROR, "internal_error", where="request callback",
                      error=repr(error), client=self.peer_ip)
            self.refuse(500, "internal error")

    def eof_received(self) -> bool:
        # The client finished sending (half-close). Answer what is in flight, then close.
        if self.queue:
            for ex in self.queue:
                ex.keep_client = False
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.deadline_at = NEVER
        self.parser = None  # it holds our bound methods: a cycle the collector would have to find
        queue, self.queue = self.queue, deque()
        for i, ex in enumerate(queue):
            ex.client_lost()
            if i == 0 and ex.answering:
                # The client left while its request was being answered (nginx logs 499).
                self.recorder.exchange_finished(self, ex, "client closed the connection")
        self.parsing = None
        self.upgrade_exchange = None
        self.host.connection_closed(self)

    def pause_writing(self) -> None:
        # The client reads our response slower than the backend sends it.
        self.write_paused = True
        if self.queue:
            ex = self.queue[0]
            ex.pause_backend()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.queue:
            ex = self.queue[0]
            ex.resume_backend()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        if not self.in_head:
            # The request's first callback (on_message_begin, merged here to save a call per
            # request; llhttp may call on_url again for a URL split across reads).
            self.request_started = now = self.clock()
            self.in_head = True
            self.head_bytes = len(url)
            self.pending_head = 0
            self.url = url
            self.headers = []
            self.keepalive_token = False
            if not self.queue:  # while an answer is in flight, its exchange owns the deadline
                self.deadline_at = now + self.header_timeout
            return
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.max_header_size:
            raise RequestError(431 if len(self.url) < 8192 else 414, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_header_size:
            raise RequestError(431, "request head too large")
        if len(name) == 10 and name.lower() == b"connection" \
                and value.lower().find(b"keep-alive") >= 0:  # find(): see http1._tokens
            self.keepalive_token = True  # see _version()

    def _version(self) -> str:
        """The request's HTTP version. parser.get_http_version() formats a new string each time
        (a few % of a proxied request); llhttp's keep-alive verdict tells HTTP/1.1 without it
        unless a "keep-alive" token could be an HTTP/1.0 client's (or nothing is kept alive)."""
        parser = self.parser
        if parser.should_keep_alive() and not self.keepalive_token:
            return "1.1"
        return parser.get_http_version()

    def on_headers_complete(self) -> None:
        self.in_head = False
        headers, self.headers = self.headers, []
        method = self.parser.get_method()
        self._request(method, self.url, self._version(), headers,
                      self.head_bytes + len(method) + 13)

    def _request(self, method: bytes, url: bytes, version: str, headers: list,
                 size: int) -> None:
        """A complete request head (from httptools' callbacks or the head scanner)."""
        if not self.queue:
            self.deadline_at = NEVER
        head = RequestHead(method, url, version, headers)
        head.t0 = self.request_started
        head.size = size
        self.requests += 1
        analyse_request(head)
        ex = self.host.start_exchange(self, head)
        if ex.upgrading:
            # From here on the connection is no longer parsed as HTTP, even if the handshake
            # waits behind pipelined requests: what follows the head is WebSocket (or nothing).
            self.state = UPGRADING
            self.upgrade_exchange = ex
        elif head.leaves_http():
            # llhttp stops after this request (an upgrade the gateway refused or does not do,
            # CONNECT): it is answered in its turn, then the connection closes.
            ex.keep_client = False
            self.refused = True
        self.parsing = ex
        self.queue.append(ex)
        if len(self.queue) == 1:
            ex.start()
        elif len(self.queue) > MAX_PIPELINED:
            self.pause_reading_for(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.request_body(body)

    def on_message_complete(self) -> None:
        ex, self.parsing = self.parsing, None
        if ex is not None:
            ex.request_complete()

    # -- what exchanges and sessions call (contracts.ClientSide) ---------------------------

    def write(self, data: bytes) -> None:
        if self.state != CLOSED:
            self.sent += len(data)
            self.transport.write(data)

    def writelines(self, chunks: list) -> None:
        if self.state != CLOSED:
            for chunk in chunks:
                self.sent += len(chunk)
            self.transport.writelines(chunks)

    def exchange_done(self, ex: Exchange) -> None:
        """`ex` (the head of the queue) has written its whole answer."""
        if not self.queue or self.queue[0] is not ex:
            return
        self.queue.popleft()
        self.recorder.exchange_finished(self, ex, "")
        if self.state >= CLOSING:
            return
        if not ex.keep_client:
            self.close()
            return
        if PAUSE_PIPELINE in self.pause_reasons and len(self.queue) <= MAX_PIPELINED // 2:
            self.resume_reading_for(PAUSE_PIPELINE)
        if self.queue:
            nxt = self.queue[0]
            nxt.start()
        elif self.in_head:
            self.deadline_at = self.request_started + self.header_timeout
        else:
            self.deadline_at = self.clock() + self.keepalive_timeout

    def upgraded(self, ex: Exchange, session: Any) -> None:
        """`ex` (the head of the queue) switched protocols: the session owns the transport now."""
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
        self.recorder.exchange_finished(self, ex, "")
        self.state = RELAYING
        self.upgrade_exchange = None
        self.session = session  # its deadlines are kept in our deadline_at
        self.pause_reasons.clear()
        self.parser = None  # no more HTTP here (and the parser's callbacks refer back to us)
        # A session lives for hours: keep nothing of HTTP it does not need (a deque alone is
        # over half a kilobyte; RSS per idle session is a figure of merit).
        self.queue = _NO_QUEUE
        self.headers = []
        self.url = b""

    def session_ended(self) -> None:
        """The relay session ended: both legs are closed (the connection is done)."""
        self.session = None
        self.state = CLOSED
        self.host.connection_closed(self)

    def abort_exchange(self, ex: Exchange) -> None:
        """A response broke off midway: closing is the only signal the client can read."""
        if self.queue and self.queue[0] is ex:
            self.queue.popleft()
            self.recorder.exchange_finished(self, ex, "response broken off")
        self.close()

    def pause_reading_for(self, reason: object) -> None:
        if not self.pause_reasons and self.transport is not None and self.state < CLOSING:
            self.transport.pause_reading()
        self.pause_reasons[reason] = 1

    def resume_reading_for(self, reason: object) -> None:
        if self.pause_reasons.pop(reason, None) and not self.pause_reasons \
                and self.state < CLOSING and self.transport is not None:
            self.transport.resume_reading()

    def refuse(self, status: int, reason: str, headers: tuple = ()) -> None:
        """Answer an unacceptable request, then close: nothing after it can be trusted.

        The answer takes its turn after the pipelined requests already in flight.
        """
        if self.state >= CLOSING or self.refused:
            return
        self.refused = True
        self.parsing = None
        log.event(log.INFO, "request_refused", status=status, reason=reason, client=self.peer_ip,
                  listener_port=self.socket_key[1])
        answer = LocalAnswer(self, None, status, f"{status} {http1.reason(status)}\n{reason}\n",
                             headers=headers, keep=False)
        self.queue.append(answer)
        if len(self.queue) == 1:
            answer.start()
        elif self.transport is not None:
            self.transport.pause_reading()

    def close(self) -> None:
        if self.state < CLOSING:
            self.state = CLOSING
        self.deadline_at = NEVER
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- upgrades and deadlines ------------------------------------------------------------

    def _after_upgrade(self, data: bytes, offset: int) -> None:
        """llhttp stopped after a request that leaves HTTP; data[offset:] is not HTTP."""
        ex = self.upgrade_exchange
        if ex is not None:  # UPGRADING
            ex.client_data(data[offset:])
        # Otherwise on_headers_complete made the connection close after that request's answer,
        # and the bytes after it are discarded.

    def on_deadline(self) -> None:
        """The Sweeper says our deadline passed: whose it is depends on what we are doing."""
        if self.state == RELAYING:
            self.session.on_deadline()  # the session's idle or close deadline
            return
        if self.state >= CLOSING:
            return
        if self.queue:
            ex = self.queue[0]
            ex.on_deadline()  # the answer in flight: backend timeout
            return
        if self.in_head:
            request_id = transaction_id()
            log.event(log.INFO, "header_timeout", client=self.peer_ip,
                      transaction_id=request_id.decode())
            self.write(gateway_answer(self, None, None, 408, "", request_id, keep_alive=False))
        self.close()
