"""Answers the gateway gives itself, in their turn among pipelined requests: 404 for a request no
rule matches, redirects (redirect rules), and refusals (400, 413, 431, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from fastgw import http1
from fastgw.contracts import ClientSide, Exchange

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.config import Config, RuleConfig


class LocalAnswer(Exchange):
    """An exchange answered by the gateway itself; the request body is read and discarded.

    `keep=False` closes the connection after the answer (a refusal: nothing after the request
    can be trusted, or, for a refused upgrade request, what follows may be WebSocket frames)."""

    __slots__ = ("client", "body", "headers")

    def __init__(self, client: ClientSide, head: http1.RequestHead | None, status: int,
                 body: str = "", *, headers: tuple = (), keep: bool = True, route=None):
        self.begin(head, route, None)
        self.client = client
        self.status = status
        self.body = body
        self.headers = headers
        self.keep_client = keep and self.keep_client
        self.error = body.splitlines()[-1] if status >= 400 and body else ""

    def start(self) -> None:
        # A body still unread when we answer may never come (Expect: 100-continue), and then the
        # next bytes would be misread as its body: close instead (RFC 9110 section 10.1.1).
        if not self.request_done:
            self.keep_client = False
        client = self.client
        head_only = self.head is not None and self.head.method == b"HEAD"
        self.sent_at_start = client.sent
        self.started = client.clock()
        self.answering = True
        client.write(http1.simple_response(self.status, self.body, keep_alive=self.keep_client,
                                           headers=self.headers, head_only=head_only))
        client.exchange_done(self)

    def request_body(self, data: bytes) -> None:
        pass

    def request_complete(self) -> None:
        self.request_done = True

    def client_data(self, data: bytes) -> None:
        pass  # after a refused upgrade request: discarded, the connection closes

    def client_lost(self) -> None:
        pass

    def on_deadline(self) -> None:
        pass  # answered at once: no deadline of its own

    def pause_backend(self) -> None:
        pass

    def resume_backend(self) -> None:
        pass


def redirect_location(config: "Config", rule: "RuleConfig", head: http1.RequestHead) -> str:
    """The Location of a redirect rule for this request."""
    path, query = head.path_and_query()
    if rule.target_url is not None:
        base = rule.target_url
        location = base.rstrip("/") + path if rule.include_path else base
    else:
        target = config.listener(cast(str, rule.target_listener))  # config: one of the two
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
