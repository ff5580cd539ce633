"""Answers the gateway gives itself, in their turn among pipelined requests: 404 for a request no
rule matches, redirects (redirect rules), and refusals (400, 413, 431, ...); and `gateway_answer`,
the one function that turns a status the gateway answers by itself into bytes on the wire, with
the operator's error page (`error_pages`) when one is configured for it.

Error pages are read and checked when a configuration is loaded (`ErrorPages.load`, and
preflight.py for `fastgw check`): `{status}` is substituted then, `{transaction_id}` per answer.
"""

from __future__ import annotations

import html
import itertools
import os
from typing import TYPE_CHECKING, Any, cast

from fastgw import http1
from fastgw.config import item_key
from fastgw.contracts import ClientSide, Exchange
from fastgw.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.config import Config, RuleConfig
    from fastgw.routing import Route, Router

# Transaction ids (X-Request-Id, access log, error pages): a random per-process prefix and a
# counter, unique without a system call per request.
_ID_PREFIX = os.urandom(8).hex().encode()
_id_counter = itertools.count(1)


def next_request_id() -> bytes:
    return b"%s%016x" % (_ID_PREFIX, next(_id_counter))


MAX_PAGE_SIZE = 64 * 1024
TEXT_HTML = b"text/html; charset=utf-8"


def page_files(cfg: "Config") -> list[tuple[str, str | None, int, str]]:
    """Every configured error page: (key path, listener name or None for [gateway], status,
    absolute path)."""
    files: list[tuple[str, str | None, int, str]] = [
        (f"gateway.error_pages.{status}", None, status, path)
        for status, path in cfg.gateway.error_pages]
    for i, lst in enumerate(cfg.listeners):
        prefix = item_key("listeners", i, lst.name)
        files += [(f"{prefix}.error_pages.{status}", lst.name, status, path)
                  for status, path in lst.error_pages]
    return files


def read_page(path: str) -> tuple[str, str]:
    """(the page's text, "") or ("", why it cannot be served)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PAGE_SIZE + 1)
    except OSError as exc:
        return "", f"{path}: cannot read: {exc.strerror or exc}"
    if len(data) > MAX_PAGE_SIZE:
        return "", f"{path}: larger than {MAX_PAGE_SIZE // 1024} KiB"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return "", f"{path}: not UTF-8 (the page is sent as text/html; charset=utf-8)"


class Page:
    """One error page, rendered as far as it can be before a request: `{status}` substituted and
    the text split around `{transaction_id}` (no other braces are touched: CSS has them)."""

    __slots__ = ("parts",)

    def __init__(self, status: int, text: str):
        self.parts = [p.encode("utf-8")
                      for p in text.replace("{status}", str(status)).split("{transaction_id}")]

    def body(self, request_id: bytes) -> bytes:
        parts = self.parts
        if len(parts) == 1:
            return parts[0]
        # The id may be the client's own X-Request-Id: escaped, it cannot inject markup.
        return html.escape(request_id.decode("latin-1")).encode("utf-8").join(parts)


class ErrorPages:
    """The error pages of the running configuration, per listener (a listener's table overrides
    [gateway]'s per status). One object for the gateway's lifetime, which every client
    connection holds: a reload swaps its contents, and the next answer uses the new pages."""

    __slots__ = ("default", "by_listener", "router")

    def __init__(self) -> None:
        self.default: dict[int, Page] = {}
        self.by_listener: dict[str, dict[int, Page]] = {}  # listeners with pages of their own
        self.router: Router | None = None

    def load(self, cfg: "Config", router: "Router") -> None:
        """Read the pages of `cfg` (raise ConfigError, changing nothing, if one cannot be)."""
        default: dict[int, Page] = {}
        own: dict[str, dict[int, Page]] = {}
        problems = []
        for key, listener, status, path in page_files(cfg):
            text, why = read_page(path)
            if why:
                problems.append((cfg.source, key, why))
            elif listener is None:
                default[status] = Page(status, text)
            else:
                own.setdefault(listener, {})[status] = Page(status, text)
        if problems:
            raise ConfigError(problems)
        self.default = default
        self.by_listener = {name: {**default, **pages} for name, pages in own.items()}
        self.router = router

    def find(self, socket_key: tuple, head: http1.RequestHead | None, route: "Route | None",
             status: int) -> Page | None:
        if not self.default and not self.by_listener:
            return None
        if route is not None:
            name = route.listener.name
        else:  # no rule took the request, or it was refused before routing: the Host decides
            router = self.router
            listener = router.listener_for(socket_key, head.host if head is not None else None) \
                if router is not None else None
            name = listener.name if listener is not None else ""
        return self.by_listener.get(name, self.default).get(status)


def gateway_answer(client: ClientSide, head: http1.RequestHead | None, route: Any, status: int,
                   body: str, request_id: bytes, *, keep_alive: bool, headers: tuple = (),
                   head_only: bool = False) -> bytes:
    """The bytes of an answer the gateway gives by itself (refusals, 404, WAF blocks, 502/503/504,
    redirects): every such answer is made here, so that a configured error page replaces the
    text of any 4xx or 5xx, whatever produced it. Backend responses never pass here."""
    pages = client.pages
    if status >= 400 and pages is not None:
        page = pages.find(client.socket_key, head, route, status)
        if page is not None:
            return http1.simple_response(status, keep_alive=keep_alive, headers=headers,
                                         head_only=head_only, payload=page.body(request_id),
                                         content_type=TEXT_HTML)
    return http1.simple_response(status, body, keep_alive=keep_alive, headers=headers,
                                 head_only=head_only)


class LocalAnswer(Exchange):
    """An exchange answered by the gateway itself; the request body is read and discarded.

    `keep=False` closes the connection after the answer (a refusal: nothing after the request
    can be trusted, or, for a refused upgrade request, what follows may be WebSocket frames)."""

    __slots__ = ("client", "body", "headers")

    def __init__(self, client: ClientSide, head: http1.RequestHead | None, status: int,
                 body: str = "", *, headers: tuple = (), keep: bool = True, route=None):
        self.begin(head, route, None)
        # The transaction id of the access log record, and of the error page if there is one.
        self.request_id = (head.request_id if head is not None else None) or next_request_id()
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
        client.write(gateway_answer(client, self.head, self.route, self.status, self.body,
                                    self.request_id, keep_alive=self.keep_client,
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
