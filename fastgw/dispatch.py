"""The routing decision: a request head becomes the exchange that answers it.

`Dispatcher` implements contracts.ConnectionHost for every client connection of a gateway:

* `start_exchange`: a WebSocket upgrade request is validated first (handshake.validate_request:
  400/426 before anything else), then every request is routed (routing.Router): no rule, 404;
  a redirect rule, its redirect; otherwise an HttpExchange or WebSocketExchange to the rule's
  backend. The gateway's own answers to an upgrade request close the connection afterwards
  (what follows such a request may be WebSocket frames).
* a route with a rewrite rule set (rewrite.py): the request's URL is rewritten here, before a
  backend is chosen, and with `reroute` the new path is routed again (the new route's own set
  is not applied: one set per request, no loops); its header edits wait for the exchange, which
  makes them after the WAF has inspected the request as the client sent it.
* `connection_opened` / `connection_closed`: the set of open client connections, whose deadlines
  the Sweeper checks; once the gateway stops, new connections are refused.
* Per-client limits (clientgate.py): a connection whose socket has a gate tells it when it
  closes, and each of its requests and handshakes is first checked against requests_per_ip
  (429 with Retry-After, RFC 6585 section 4).
* `admit`: a connection was just accepted. At `limit` open connections (`[gateway]
  max_connections`) it tells its `AcceptControl` to stop accepting, and to resume once one
  has closed: new clients wait in the listen backlog meanwhile.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastgw import handshake, log
from fastgw.backends import Backend
from fastgw.config import Config
from fastgw.contracts import ClientSide, ConnectionHost, Exchange, ExchangeServices, Recorder
from fastgw.errors import HandshakeError
from fastgw.handshake import validate_request
from fastgw.http1 import RequestHead
from fastgw.local import LocalAnswer, redirect_location
from fastgw.proxy import HttpExchange
from fastgw.rewrite import Request, peer_certificate, rewrite_request
from fastgw.routing import Router
from fastgw.timeouts import Sweeper
from fastgw.wsproxy import WebSocketExchange

NOT_FOUND = "404 Not Found\nno rule matches this request\n"
TOO_MANY = "429 Too Many Requests\nrequests_per_ip exceeded for this client\n"
# Retry-After of the 503 beyond max_sessions (RFC 9110 section 10.2.3): sessions come and go
# within seconds under load; a client that retries sooner would only be refused again.
SESSIONS_RETRY_AFTER = "5"


class AcceptControl(Protocol):
    """Who accepts client connections (the gateway's listeners)."""

    def pause_accepting(self) -> None: ...

    def resume_accepting(self) -> None: ...


class Dispatcher(ConnectionHost):
    __slots__ = ("config", "router", "backends", "services", "recorder", "sweeper",
                 "connections", "stopping", "limit", "accepting", "control")

    def __init__(self, config: Config, router: Router, backends: dict[tuple[str, str], Backend],
                 services: ExchangeServices, recorder: Recorder, sweeper: Sweeper,
                 limit: int, control: AcceptControl) -> None:
        self.config = config
        self.router = router
        self.backends = backends
        self.services = services
        self.recorder = recorder
        self.sweeper = sweeper
        self.connections: set = set()
        self.stopping = False
        self.limit = limit  # open client connections at most (max_connections)
        self.accepting = True
        self.control = control

    def configure(self, config: Config, router: Router,
                  backends: dict[tuple[str, str], Backend]) -> None:
        """A reload: new requests are routed by the new configuration."""
        self.config = config
        self.router = router
        self.backends = backends

    # -- contracts.ConnectionHost ----------------------------------------------------------

    def start_exchange(self, client: ClientSide, head: RequestHead) -> Exchange:
        gate = client.gate
        if gate is not None and gate.rate is not None:  # requests_per_ip
            retry = gate.rate.take(client.peer_ip, client.clock())
            if retry:
                return self._too_many(client, head, gate, retry)
        if head.upgrade_requested():
            return self._handshake(client, head)
        route = self.router.match(client.socket_key, head.host, head.path())
        if route is None:
            return LocalAnswer(client, head, 404, NOT_FOUND)
        if route.is_redirect:
            return self._redirect(client, head, route, True)
        if route.rewrite is not None:
            return self._rewritten(client, head, route, None)
        backend = self.backends[route.backend_key]
        return HttpExchange(client, head, route, backend, self.services)

    def _handshake(self, client: ClientSide, head: RequestHead) -> Exchange:
        """An upgrade request: validated before anything else, then routed like any request."""
        try:
            offer = validate_request(head)
        except HandshakeError as exc:
            return self._refuse(client, head, None, exc)
        route = self.router.match(client.socket_key, head.host, head.path())
        if route is None:
            return LocalAnswer(client, head, 404, NOT_FOUND, keep=False)
        if route.is_redirect:
            return self._redirect(client, head, route, False)
        if route.rewrite is not None:
            return self._rewritten(client, head, route, offer)
        return self._session(client, head, route, offer, self.backends[route.backend_key], None)

    def _session(self, client: ClientSide, head: RequestHead, route: Any,
                 offer: handshake.Offer, backend: Backend, source: Request | None) -> Exchange:
        """A routed handshake (`source`: its rewrite state, if the route has a rule set): the
        settings' policies first, before any backend is contacted."""
        count = backend.sessions
        try:
            if backend.ws_checks:
                settings = backend.settings
                if settings.websocket_allowed_origins:
                    handshake.check_origin(head, settings.websocket_allowed_origins)
                if settings.websocket_allowed_subprotocols and offer.protocols:
                    handshake.restrict_protocols(head, offer,
                                                 settings.websocket_allowed_subprotocols)
            if count.limit and count.open >= count.limit:
                settings = backend.settings
                raise HandshakeError(503, f"max_sessions ({settings.max_sessions}) of backend "
                                          f"settings {settings.name} reached",
                                     headers=(("Retry-After", SESSIONS_RETRY_AFTER),))
        except HandshakeError as exc:
            return self._refuse(client, head, route, exc)
        ex = WebSocketExchange(client, head, route, backend, self.services, offer,
                               self.recorder, self.config.gateway.close_timeout)
        ex.rewrite = source
        return ex

    def _rewritten(self, client: ClientSide, head: RequestHead, route: Any,
                   offer: handshake.Offer | None) -> Exchange:
        """The exchange of a request whose route has a rewrite rule set (`offer`: a handshake's)."""
        ruleset = route.rewrite
        source = Request(
            ruleset, client.peer_ip, client.peer_port, client.socket_key[1],
            client.proto == b"https", head.method, head.url, head.host, head.headers,
            head.lnames, peer_certificate(client.transport.get_extra_info("ssl_object"))
            if ruleset.needs_certificate else None)
        plan = rewrite_request(source)
        if plan is not None:
            source.edits = plan.headers
            if plan.url is not None:
                head.url = plan.url
                if plan.reroute:
                    route = self.router.match(client.socket_key, head.host, head.path())
                    if route is None:
                        return LocalAnswer(client, head, 404, NOT_FOUND, keep=offer is None)
                    if route.is_redirect:
                        return self._redirect(client, head, route, offer is None)
        backend = self.backends[route.backend_key]
        if offer is not None:
            return self._session(client, head, route, offer, backend, source)
        ex = HttpExchange(client, head, route, backend, self.services)
        ex.rewrite = source
        return ex

    def _refuse(self, client: ClientSide, head: RequestHead, route: Any, exc: HandshakeError
                ) -> Exchange:
        """A handshake refused: its reason goes to the log and the access log's error_info."""
        log.event(log.INFO, "handshake_refused", status=exc.status, reason=exc.reason,
                  client=client.peer_ip)
        return LocalAnswer(client, head, exc.status, f"{exc.status} {exc.reason}\n",
                           headers=exc.headers, keep=False, route=route)

    def _too_many(self, client: ClientSide, head: RequestHead, gate: Any, retry: int
                  ) -> Exchange:
        """Over requests_per_ip: 429 (RFC 6585 section 4), the connection closed after it on a
        handshake; the firewall record carries the answer's transaction id."""
        answer = LocalAnswer(client, head, 429, TOO_MANY, headers=(("Retry-After", str(retry)),),
                             keep=not head.upgrade_requested())
        gate.request_refused(client.peer_ip, client.peer_port, head, answer.request_id, retry)
        return answer

    def _redirect(self, client: ClientSide, head: RequestHead, route: Any, keep: bool
                  ) -> Exchange:
        location = redirect_location(self.config, route.rule, head)
        return LocalAnswer(client, head, route.rule.status, f"Redirecting to {location}\n",
                           headers=(("Location", location),), route=route, keep=keep)

    def admit(self, client: Any) -> None:
        """A connection was accepted (its transport is being made)."""
        connections = self.connections
        connections.add(client)
        if len(connections) >= self.limit and self.accepting:
            self.accepting = False
            self.control.pause_accepting()

    def connection_opened(self, client: Any) -> bool:
        if self.stopping:
            return False
        self.connections.add(client)
        self.sweeper.add(client)
        return True

    def connection_closed(self, client: Any) -> None:
        connections = self.connections
        connections.discard(client)
        self.sweeper.discard(client)
        gate = client.gate
        if gate is not None:  # max_connections_per_ip
            client.gate = None  # its count released once, however the connection ended
            gate.closed(client.peer_ip)
        if not self.accepting and len(connections) < self.limit and not self.stopping:
            self.accepting = True
            self.control.resume_accepting()
