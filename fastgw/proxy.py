"""One proxied HTTP request/response pair: the exchange between a client connection and a backend.

The client connection (downstream.py) parses requests and queues one exchange per request; the
head of the queue runs. Running means: pick a server, take an idle keep-alive connection or
open one (bounded by the settings' request_timeout), send the head, stream the body as it
arrives, then read the backend's response (the head scanner, fastgw/_heads.pyi, when its first
read holds exactly a head and its Content-Length body; otherwise the connection's httptools
parser) and stream it to the client, re-framed for the client (http1.response_framing).

Exchange states (ExchangeState), and the transitions this module makes:

    WAITING     -- reached the head of the queue, a WAF inspects it -->     INSPECTING
    WAITING     -- reached the head of the queue -->                        CONNECTING
    INSPECTING  -- the WAF let it through (head and body inspected) -->    CONNECTING
    INSPECTING  -- the WAF blocked it (answered 403/413) -->               DONE
    CONNECTING  -- a backend connection is ready, the head sent -->        SENT
    CONNECTING  -- connect failed: the next server -->                     CONNECTING
    SENT        -- the response head went to the client -->                RESPONDING
    SENT        -- a reused connection closed before any answer -->        CONNECTING (once)
    CONNECTING, SENT  -- failure or timeout: 502/503/504 answered -->      DONE
    RESPONDING  -- the response ended -->                                  DONE
    RESPONDING  -- the backend broke off or timed out: the client
                   connection is closed (the only signal left) -->         DONE
    any         -- the client went away -->                                DONE

A WAF verdict that blocks answers from INSPECTING, before any backend connection exists.
"""

from __future__ import annotations

import enum
import traceback
from typing import TYPE_CHECKING, Any

import httptools
from httptools import HttpParserError, HttpParserUpgrade

from fastgw import affinity, http1, log
from fastgw.acceptor import Driven
from fastgw.contracts import ClientSide, ExchangeServices, ProxiedExchange
from fastgw.errors import SHORTAGES, UpstreamError
from fastgw.heads import scan_response

# Names used on every request, imported as such: a compiled module reaches a global faster than
# an attribute of another module.
from fastgw.http1 import (
    CHUNKED,
    CLOSE,
    LAST_CHUNK,
    NONE,
    ResponseHead,
    analyse_response,
    client_response_head,
    forward_request_head,
    response_framing,
    response_version,
)
from fastgw.local import gateway_answer
from fastgw.logline import transaction_id
from fastgw.rewrite import apply_headers, rewrite_response
from fastgw.upstream import IDLE_TIMEOUT, UpstreamConnection, connect

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.backends import Backend
    from fastgw.routing import Route


class ExchangeState(enum.IntEnum):
    WAITING = 0
    INSPECTING = 1
    CONNECTING = 2
    SENT = 3
    RESPONDING = 4
    DONE = 5


# The states as module globals: read on every request, they are cheaper than ExchangeState.<name>.
WAITING, INSPECTING, CONNECTING, SENT, RESPONDING, DONE = ExchangeState



def parser_failure(what: str, exc: Exception) -> str:
    """The cause of a failed parse: the backend's bytes, or (a callback raised) our own bug,
    which is logged with its traceback rather than blamed on the backend."""
    if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ is not None:
        error = exc.__context__
        log.event(log.ERROR, "internal_error", where="response callback", error=repr(error),
                  traceback="".join(traceback.format_exception(error)))
        return f"internal error while relaying the response: {error!r}"
    return f"{what}: {exc}"


# Body bytes buffered for a request whose backend connection is not ready yet, before the client
# is paused.
MAX_BUFFERED_BODY = 256 * 1024


class HttpExchange(ProxiedExchange):
    """A request routed to a backend pool."""

    # httptools calls on_* methods of this object while parsing the backend's response.
    __slots__ = ("client", "services", "state", "conn", "parser", "body", "body_bytes",
                 "resp_headers", "framing", "tried", "retry_ok", "upstream_started",
                 "received_bytes", "connect_task", "client_paused_by_us", "response_head",
                 "releasing",
                 "last_error", "affinity", "waf", "out", "request_timeout", "cookie_affinity",
                 "read_at", "rewrite")

    def __init__(self, client: ClientSide, head: http1.RequestHead, route: Route,
                 backend: Backend, services: ExchangeServices):
        self.begin(head, route, backend)
        self.client = client
        self.services = services
        self.state = WAITING
        self.conn: UpstreamConnection | None = None
        self.parser: Any = None  # httptools.HttpResponseParser while a response is read
        self.body: list[bytes] = []  # request body chunks waiting for the backend connection
        self.body_bytes = 0
        self.resp_headers: list = []
        self.response_head: http1.ResponseHead | None = None
        self.framing = NONE
        self.tried: tuple = ()
        # A request that failed on a reused keep-alive connection before any answer may be sent
        # again on a fresh one when repeating it is harmless: idempotent and without a body.
        self.retry_ok = self.request_done and head.method in http1.IDEMPOTENT
        self.last_error: UpstreamError | None = None
        settings = backend.settings
        self.request_timeout: float = settings.request_timeout  # read on every backend read
        self.cookie_affinity: bool = settings.cookie_affinity
        self.affinity = (affinity.requested(head.fields.get(b"cookie"), settings.affinity_cookie_name)
                         if settings.cookie_affinity else None)
        # The transaction id of the access log; sent as X-Request-Id unless the client sent one.
        self.request_id = head.request_id or transaction_id()
        self.waf: Any = None  # the listener's fastgw.waf.Waf, while the request waits for it
        self.out: list[bytes] = []  # response bytes for the client, written once per backend read
        self.upstream_started = 0.0
        self.read_at = 0.0  # loop time of the backend's latest read
        self.received_bytes = 0
        self.connect_task: Driven | None = None  # the backend connection being opened
        self.releasing: UpstreamConnection | None = None  # released once the read is parsed
        self.client_paused_by_us = False
        # rewrite.Request when the route has a rewrite rule set (the dispatcher sets it).
        self.rewrite: Any = None

    # -- driving the request ---------------------------------------------------------------

    def start(self) -> None:
        """Called when this exchange reaches the head of the client's queue."""
        client = self.client
        self.started = client.clock()
        self.sent_at_start = client.sent
        self.answering = True
        waf = self.services.waf_for(self.route.listener)
        if waf is not None:
            self.waf = waf
            self.state = INSPECTING
            self._inspect_when_ready()
            return
        self._dispatch()

    def _inspect_when_ready(self) -> None:
        """Run the WAF once the body it inspects is here (all of it, or its limit)."""
        waf = self.waf
        limit = waf.body_limit
        head = self.head
        over = limit is not None and (self.body_bytes > limit or (
            head.content_length is not None and head.content_length > limit))
        if limit is not None and not self.request_done and not over:
            if head.expect_continue and not self.body_bytes:
                # The WAF needs the body before any backend sees the request: invite it now,
                # as nginx does when it reads a body itself (RFC 9110 section 10.1.1).
                head.expect_continue = False
                self.client.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                # The backend gets the whole body at once: no Expect for it to answer.
                kept = [i for i, lname in enumerate(head.lnames) if lname != b"expect"]
                head.headers = [head.headers[i] for i in kept]
                head.lnames = [head.lnames[i] for i in kept]
            return  # request_body / request_complete call again
        self.waf = None
        client = self.client
        verdict = waf.inspect(
            client_ip=client.peer_ip, client_port=client.peer_port, server_ip=client.local_ip,
            server_port=client.socket_key[1], method=head.method, uri=head.original_url,
            http_version=head.version, headers=head.headers,
            body=self.body if (limit is not None and self.body) else None,
            body_truncated=over,
            transaction_id=self.request_id.decode("latin-1"), hostname=None)
        self.services.waf_verdict(verdict)
        if verdict.blocked:
            self.status = verdict.status
            self.error = verdict.reason
            if not self.request_done:
                self.keep_client = False
            headers = (("Location", verdict.location),) if verdict.location else ()
            body = (f"{verdict.status} {http1.reason(verdict.status)}\n"
                    f"The request was blocked by the web application firewall.\n"
                    f"Transaction id: {verdict.transaction_id}\n")
            client.write(gateway_answer(client, head, self.route, verdict.status, body,
                                        self.request_id, keep_alive=self.keep_client,
                                        headers=headers, head_only=head.method == b"HEAD"))
            self.state = RESPONDING
            self._finish()
            return
        self._dispatch()

    def _dispatch(self) -> None:
        preferred = self.backend.by_affinity.get(self.affinity) if self.affinity else None
        endpoint = self.backend.choose(self.tried, preferred)
        if endpoint is None:
            if not self.backend.endpoints:
                self.fail(UpstreamError(503, "backend pool has no servers"))
            elif self.tried:
                self.fail(self.last_error or UpstreamError(502, "no server could take the request"))
            else:
                self.fail(UpstreamError(502, "no healthy server in the backend pool"))
            return
        self.endpoint = endpoint
        self.tried += (endpoint,)
        self.state = CONNECTING
        client = self.client
        now = client.clock()
        client.deadline_at = now + self.request_timeout
        # The most recently used idle keep-alive connection that is still good.
        idle = endpoint.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since <= IDLE_TIMEOUT \
                    and not conn.transport.is_closing():
                self._attach(conn)
                return
            conn.close()
        # uvloop's create_connection runs without a Task or a coroutine of ours around it
        # (acceptor.Driven): a Task and its steps cost more than the rest of opening a backend
        # connection. Its end comes to coro_done or coro_failed; close() abandons it.
        try:
            ssl_ctx, sni = self.services.upstream_tls(self.backend)
        except Exception as exc:  # an unusable TLS configuration
            self.coro_failed(exc)
            return
        self.connect_task = task = Driven(connect(client.loop, endpoint, ssl_ctx, sni), self)
        task()

    def coro_done(self, result: tuple) -> None:
        """The backend connection is open (create_connection's (transport, protocol))."""
        self.connect_task = None
        conn: UpstreamConnection = result[1]
        if self.state != CONNECTING:  # the client went away, or we timed out
            conn.close()
            return
        self._attach(conn)

    def coro_failed(self, exc: BaseException) -> None:
        """Opening the backend connection failed."""
        self.connect_task = None
        endpoint = self.endpoint
        if self.state != CONNECTING or endpoint is None or not isinstance(exc, Exception):
            return  # over already, or cancelled with the loop
        if isinstance(exc, OSError):
            services = self.services
            shortage = SHORTAGES.get(exc.errno or 0)
            if shortage is not None:
                # The gateway's own shortage, not the server's fault (DESIGN.md section 4): 503,
                # and nothing counted against the server.
                services.gateway_shortage(shortage)
                self.fail(UpstreamError(503, "gateway out of file descriptors"
                                        if shortage in ("EMFILE", "ENFILE") else
                                        "gateway out of memory for sockets"))
                return
            endpoint.failures += 1
            services.endpoint_failed(endpoint, f"connect: {exc.strerror or exc}")
            self.last_error = UpstreamError(502, f"connect to {endpoint.name} failed: "
                                                 f"{exc.strerror or exc}")
            # Nothing was sent: the next server may take the request.
            self._dispatch()
            return
        endpoint.failures += 1  # TLS failures and the like
        self.fail(UpstreamError(502, f"connect to {endpoint.name} failed: {exc}"))

    def _attach(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.exchange = self
        conn.uses += 1
        endpoint = conn.endpoint
        endpoint.active += 1
        endpoint.requests += 1
        self.parser = conn.response_parser()
        self.resp_headers = []
        client = self.client
        head = self.head
        data = self.request_head()
        self.upstream_started = client.clock()
        self.state = SENT
        if client.write_paused:
            conn.transport.pause_reading()
            conn.paused = True
        if self.body:
            chunks = self.body
            self.body = []
            if head.chunked:
                chunks = [http1.chunk(c) for c in chunks]
            if self.request_done and head.chunked:
                chunks.append(LAST_CHUNK)
            conn.transport.writelines([data, *chunks])
        else:
            if self.request_done and head.chunked:
                data += LAST_CHUNK
            conn.transport.write(data)
        if self.client_paused_by_us:
            self.client_paused_by_us = False
            client.resume_reading_for(self)

    def request_head(self) -> bytes:
        """The request head for the backend: Host kept or overridden, forwarding headers, the
        upgrade headers for a handshake, and X-Request-Id (the access log's transactionId)
        unless the client sent one."""
        client = self.client
        head = self.head
        settings = self.backend.settings
        host = settings.host_name.encode("latin-1") if settings.host_name else head.host or b""
        rewrite = self.rewrite
        if rewrite is not None and rewrite.edits:
            # Made here, after the WAF saw the request as the client sent it; once only, since
            # a retry on another server sends this head again.
            head.headers, head.lnames = apply_headers(head.headers, head.lnames, rewrite.edits)
            rewrite.edits = ()
        extra = () if head.request_id is not None else ((b"X-Request-Id", self.request_id),)
        return forward_request_head(head, host, client.peer_ip, client.proto, client.port_bytes,
                                    self.upgrading, extra)

    def edit_response_head(self, head: ResponseHead) -> None:
        """The route's rewrite set applied to a response head from the backend."""
        edits = rewrite_response(self.rewrite, head.headers, head.lnames)
        if edits:
            head.headers, head.lnames = apply_headers(head.headers, head.lnames, edits)

    def response_extra(self) -> tuple:
        """Set-Cookie headers when this response pins (or re-pins) the client to a server."""
        endpoint = self.endpoint
        settings = self.backend.settings
        if not settings.cookie_affinity or endpoint is None or endpoint.affinity_id == self.affinity:
            return ()
        return affinity.set_cookies(settings.affinity_cookie_name, endpoint.affinity_id)

    def request_body(self, data: bytes) -> None:
        """A piece of the request body arrived from the client."""
        self.body_received += len(data)
        if self.state == SENT or self.state == RESPONDING:
            conn = self.conn
            if conn is not None:
                if self.head.chunked:
                    conn.transport.write(http1.chunk(data))
                else:
                    conn.transport.write(data)
            return
        if self.state == DONE:
            return  # the answer went out already (early response, error): discard
        self.body.append(data)
        self.body_bytes += len(data)
        if self.state == INSPECTING:
            self._inspect_when_ready()
        elif self.body_bytes > MAX_BUFFERED_BODY and not self.client_paused_by_us:
            self.client_paused_by_us = True
            self.client.pause_reading_for(self)

    def request_complete(self) -> None:
        self.request_done = True
        if self.state == INSPECTING:
            self._inspect_when_ready()
            return
        if self.state in (SENT, RESPONDING) and self.head.chunked and self.conn is not None:
            self.conn.transport.write(LAST_CHUNK)

    # -- the backend's response (its connection's parser calls response_*) ---------------

    def upstream_data(self, data: bytes) -> None:
        first = not self.received_bytes
        self.received_bytes += len(data)
        # request_timeout bounds each wait for the backend, as nginx's proxy_read_timeout.
        client = self.client
        self.read_at = now = client.clock()  # this read's time, for the callbacks it causes
        client.deadline_at = now + self.request_timeout
        stray = False
        try:
            if not (first and self._scanned(data)):
                self.parser.feed_data(data)
        except HttpParserUpgrade:
            # A 101 to a plain request (we never asked for one): refuse it.
            stray = self.releasing is not None
            if not stray:
                self.fail(UpstreamError(502, "backend switched protocols on a plain request"))
        except HttpParserError as exc:
            # After the response ended, an error is about bytes the backend should not have
            # sent (a body longer than its Content-Length): not this exchange's failure.
            stray = self.releasing is not None
            if not stray:
                self.fail(UpstreamError(502, parser_failure("invalid response from backend", exc)))
        if self.out:
            self._flush()
        if self.releasing is not None:
            self._settle(stray)

    def _scanned(self, data: bytes) -> bool:
        """Take a whole response that the head scanner reads (fastgw/_heads.pyi) in the first
        read of it, as the parser's callbacks would have taken it; False leaves it to httptools.

        The connection's parser is then between messages (a pooled connection goes back only
        after a response that ended with a read, upstream.py), and stays so: the response is
        taken only when this read holds it exactly, its head and its Content-Length body. Not
        for HEAD, whose response has no body whatever its Content-Length says."""
        found = scan_response(data, 0)
        if found is None:
            return False
        end = found[0]
        length = found[4]
        if length < 0 or end + length != len(data) or self.head.method == b"HEAD":
            return False
        self._response_head(found[1], "1.1", found[3])
        if length:
            self.response_body(data[end:])
        # The scanner's subset is where llhttp's keep-alive verdict is the head's own.
        self._response_done(True)
        return True

    def _settle(self, stray: bool) -> None:
        """The response ended during the read just parsed: the connection goes back to the
        pool only now, after the whole read (bytes after the response would otherwise reach the
        next request through the pooled parser), and only if nothing followed the response."""
        conn = self.releasing
        self.releasing = None
        if conn is None:
            return
        if stray or conn.transport is None or conn.transport.is_closing():
            conn.close()
        else:
            conn.release(self.client.upstream_keepalive, self.read_at)

    def _flush(self) -> None:
        """Everything one backend read produced for the client goes out in one write (writev):
        a response's head and body, and the last chunk, cost one system call, not three."""
        out, self.out = self.out, []
        self.client.writelines(out)

    def response_header(self, name: bytes, value: bytes) -> None:
        self.resp_headers.append((name, value))

    def response_head_complete(self) -> None:
        parser = self.parser
        headers, self.resp_headers = self.resp_headers, []
        self._response_head(parser.get_status_code(), response_version(parser), headers)

    def _response_head(self, status: int, version: str, headers: list) -> None:
        """A complete response head (from httptools' callbacks or the head scanner)."""
        head = ResponseHead(status, b"", version, headers)
        if status < 200:
            # Interim responses (100 Continue, 103 Early Hints) pass to HTTP/1.1 clients.
            if self.head.version != "1.0" and status != 101:
                self.out.append(client_response_head(head, NONE, True, "1.1"))
            return
        analyse_response(head)
        self.response_head = head
        self.status = status
        latency = self.server_latency = self.read_at - self.upstream_started
        backend = self.backend
        histo = backend.latency
        if histo is None:
            histo = backend.latency = self.services.latency_histo(backend)
        histo.observe(latency)
        req = self.head
        framing = response_framing(req.method, status, head.content_length, req.version)
        if framing == CLOSE:
            self.keep_client = False
        self.framing = framing
        self.state = RESPONDING
        if self.rewrite is not None:
            self.edit_response_head(head)
        extra = self.response_extra() if self.cookie_affinity else ()
        self.out.append(client_response_head(head, framing, self.keep_client,
                                                   req.version, extra))
        if framing == NONE:
            # llhttp would wait for a HEAD response's announced body; the message ends here.
            self.response_complete()

    def response_body(self, body: bytes) -> None:
        if self.framing == CHUNKED:
            self.out += (b"%x\r\n" % len(body), body, b"\r\n")
        else:
            self.out.append(body)

    def response_complete(self) -> None:
        self._response_done(False)

    def _response_done(self, scanned: bool) -> None:
        """The response ended. `scanned`: the head scanner read it, and llhttp's keep-alive
        verdict is the head's own (otherwise the parser is asked)."""
        if self.state != RESPONDING:
            return  # an interim (1xx) response ended; the final one follows
        framing = self.framing
        out = self.out
        if framing == CHUNKED:
            out.append(LAST_CHUNK)
        client = self.client
        self.out = []
        client.writelines(out)  # before the next pipelined answer can start
        conn, self.conn = self.conn, None
        head = self.response_head
        if conn is not None:
            if framing == NONE:
                conn.parser = None  # see upstream.py: llhttp would wait for a HEAD's body
            if (head is not None and self.request_done and head.keep_alive and framing != CLOSE
                    and (head.content_length is not None or head.chunked or framing == NONE)
                    and (scanned or self.parser.should_keep_alive())):
                # Back to the pool once the read is parsed (_settle); until then its parser's
                # callbacks have no exchange, and any of them drops the connection.
                conn.exchange = None
                self.releasing = conn
            else:
                conn.close()
        self._release_endpoint()
        self.state = DONE
        client.exchange_done(self)

    def _close_delimited(self) -> bool:
        """The response body ends when the backend closes (RFC 9112 section 6.3 rule 8)."""
        head = self.response_head
        return (head is not None and head.content_length is None and not head.chunked
                and self.framing != NONE)

    def upstream_eof(self) -> None:
        if self.state == RESPONDING and self._close_delimited():
            self.response_complete()
            self._settle(True)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.state == DONE:
            return
        conn, self.conn = self.conn, None
        if self.state == RESPONDING:
            if self._close_delimited():
                self.response_complete()
                self._settle(True)
                return
            self._release_endpoint()
            if self.out:
                self._flush()
            log.event(log.WARNING, "upstream_lost_mid_response", **self._log_fields(),
                      cause=str(exc or "connection closed"))
            self.state = DONE
            self.client.abort_exchange(self)
            return
        self._release_endpoint()
        endpoint = self.endpoint
        reused = conn is not None and conn.uses > 1
        if reused and self.received_bytes == 0 and self.retry_ok:
            # A keep-alive connection the server closed as we reused it: try a fresh one,
            # on the same server (nothing says it is unhealthy).
            self.tried = tuple([e for e in self.tried if e is not endpoint])
            self._dispatch()
            return
        if endpoint is not None:
            endpoint.failures += 1
        cause = f"backend closed the connection{': ' + str(exc) if exc else ''}"
        self.fail(UpstreamError(502, cause))

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for(self)

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading_for(self)

    # -- the client's side of flow control ---------------------------------------------------

    def pause_backend(self) -> None:
        """The client reads our answer slower than the backend sends it."""
        conn = self.conn
        if conn is not None and conn.transport is not None and not conn.paused:
            conn.transport.pause_reading()
            conn.paused = True

    def resume_backend(self) -> None:
        conn = self.conn
        if conn is not None and conn.paused and conn.transport is not None:
            conn.paused = False
            conn.transport.resume_reading()

    def client_data(self, data: bytes) -> None:
        pass  # only an upgrading exchange is given the bytes after its head

    # -- endings ---------------------------------------------------------------------------

    def on_deadline(self) -> None:
        if self.state in (CONNECTING, SENT):
            self.fail(UpstreamError(504, f"no response within {self.backend.settings.request_timeout:g}s"))
        elif self.state == RESPONDING:
            log.event(log.WARNING, "upstream_timeout_mid_response", **self._log_fields())
            conn, self.conn = self.conn, None
            if conn is not None:
                conn.abort()
            self._release_endpoint()
            self.state = DONE
            self.client.abort_exchange(self)

    def fail(self, error: UpstreamError) -> None:
        """Answer the client with the error's status (the response has not started)."""
        if self.state in (RESPONDING, DONE):
            return
        if self.connect_task is not None:
            self.connect_task.close()
            self.connect_task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        self._release_endpoint()
        self.status = error.status
        self.error = error.cause
        log.event(log.WARNING, "upstream_error", **self._log_fields(), status=error.status,
                  cause=error.cause)
        if not self.request_done:
            self.keep_client = False  # the rest of the body would be read as a new request
        self.client.write(gateway_answer(self.client, self.head, self.route, error.status, "",
                                         self.request_id, keep_alive=self.keep_client,
                                         head_only=self.head.method == b"HEAD"))
        self.state = RESPONDING
        self._finish()

    def client_lost(self) -> None:
        """The client went away: drop the backend connection unless it is done."""
        if self.connect_task is not None:
            self.connect_task.close()
            self.connect_task = None
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        self._release_endpoint()
        self.state = DONE

    def _release_endpoint(self) -> None:
        endpoint = self.endpoint
        if endpoint is not None and self.state in (SENT, RESPONDING) and self.parser is not None:
            endpoint.active -= 1
            self.parser = None

    def _finish(self) -> None:
        self.state = DONE
        self.client.exchange_done(self)

    def _log_fields(self) -> dict:
        return {
            "rule": self.route.rule.name, "pool": self.backend.pool.name,
            "settings": self.backend.settings.name,
            "server": self.endpoint.name if self.endpoint is not None else None,
            "method": self.head.method.decode("latin-1"),
        }
