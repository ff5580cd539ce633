"""Answers the gateway gives itself, in their turn among pipelined requests: 404 for a request no
rule matches, redirects (redirect rules), and refusals (400, 413, 431, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastgw import http1

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.downstream import ClientConnection
    from fastgw.config import Config, RuleConfig


class LocalAnswer:
    """An exchange answered by the gateway itself; the request body is read and discarded."""

    __slots__ = ("client", "head", "status", "body", "headers", "keep_client", "request_done",
                 "route", "backend", "sent_at_start", "started", "error", "endpoint",
                 "server_latency", "body_received")

    def __init__(self, client: "ClientConnection", head: http1.RequestHead | None, status: int,
                 body: str = "", *, headers: tuple = (), keep: bool = True, route=None):
        self.client = client
        self.head = head
        self.status = status
        self.body = body
        self.headers = headers
        self.route = route
        self.backend = None
        self.request_done = head is None or not head.has_body
        self.keep_client = keep and (head is None or head.keep_alive)
        self.sent_at_start = 0
        self.started = 0.0
        self.error = body.splitlines()[-1] if status >= 400 and body else ""
        self.endpoint = None
        self.server_latency = None
        self.body_received = 0

    def start(self) -> None:
        # A body still unread when we answer may never come (Expect: 100-continue), and then the
        # next bytes would be misread as its body: close instead (RFC 9110 section 10.1.1).
        if not self.request_done:
            self.keep_client = False
        head_only = self.head is not None and self.head.method == b"HEAD"
        self.sent_at_start = self.client.sent
        self.started = self.client.loop.time()
        self.client.write(http1.simple_response(self.status, self.body, keep_alive=self.keep_client,
                                                headers=self.headers, head_only=head_only))
        self.client.exchange_done(self)

    def request_body(self, data: bytes) -> None:
        pass

    def request_complete(self) -> None:
        self.request_done = True

    def client_lost(self) -> None:
        pass


def redirect_location(config: "Config", rule: "RuleConfig", head: http1.RequestHead) -> str:
    """The Location of a redirect rule for this request."""
    path, query = head.path_and_query()
    if rule.target_url is not None:
        base = rule.target_url
        location = base.rstrip("/") + path if rule.include_path else base
    else:
        target = config.listener(rule.target_listener)
        scheme = target.protocol
        host = (head.host or b"").decode("latin-1")
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif ":" in host:
            host = host.rsplit(":", 1)[0]
        if not host:
            host = target.host_names[0] if target.host_names and "*" not in target.host_names[0] \
                else "localhost"
        default_port = 443 if scheme == "https" else 80
        port = "" if target.port == default_port else f":{target.port}"
        location = f"{scheme}://{host}{port}" + (path if rule.include_path else "/")
    if rule.include_query and query:
        location += ("&" if "?" in location else "?") + query
    return location
