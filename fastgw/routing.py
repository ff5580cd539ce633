"""Routing: (socket, Host, path) -> Route. Pure, compiled once per configuration.

A listening socket is identified by (bind, port); several listeners may share it (multi-site),
told apart by the Host header: an exact host name first, then the longest matching `*.suffix`
wildcard, then the socket's basic listener (one without host names). Host matching ignores case,
a trailing dot and the port.

Each listener's rules are tried by priority (lower first, then file order). A `basic` or
`redirect` rule always matches. A `path_based` rule tries its path maps in order — first match
wins, a trailing `*` matches any suffix — and otherwise falls back to the rule's own backend pool;
a path_based rule without one lets unmatched paths fall through to the next rule. Nothing
matching: None, which the proxy answers with 404.

Paths are matched in normalized form (percent-decoded, dot-segments resolved, repeated slashes
merged, as nginx matches locations), so that `/%61dmin` cannot slip past a rule for `/admin/*`;
the request is still forwarded with its original URI.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

from fastgw.config import Config, ListenerConfig, RuleConfig
from fastgw.http1 import STATUS_CLASSES
from fastgw.rewrite import RuleSet, compile_set

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Route:
    """What a request is sent to: a (pool, settings) pair, or a redirect.

    `backend_key` is (pool, settings), the key of the gateway's Backend (("", "") for a
    redirect). `counter_labels[i]` are the request counter's labels (listener, rule, pool, status class)
    for the status class http1.STATUS_CLASSES[i]: made once here, looked up per request.
    `rewrite` is the compiled rewrite rule set of the rule or path map, or None."""

    listener: ListenerConfig
    rule: RuleConfig
    backend_pool: str | None = None
    backend_settings: str | None = None
    is_redirect: bool = False
    backend_key: tuple[str, str] = ("", "")
    counter_labels: tuple = ()
    rewrite: RuleSet | None = None


def _route(listener: ListenerConfig, rule: RuleConfig, pool: str | None, settings: str | None,
           is_redirect: bool = False, rewrite: RuleSet | None = None) -> Route:
    labels = tuple((listener.name, rule.name, pool or "", cls) for cls in STATUS_CLASSES)
    return Route(listener, rule, pool, settings, is_redirect, (pool or "", settings or ""), labels,
                 rewrite)


# The compiled table's parts are plain classes (not dataclasses): compiled, they are extension
# types (routing.pxd), read on every request without attribute lookups.
class _PathMatcher:
    __slots__ = ("patterns", "default")

    def __init__(self, patterns: tuple, default: Route | None):
        self.patterns = patterns  # ((path or prefix, is_prefix, route), ...)
        self.default = default

    def match(self, path: str) -> Route | None:
        for pattern, is_prefix, route in self.patterns:
            if path.startswith(pattern) if is_prefix else path == pattern:
                return route
        return self.default


class _Site:
    """One listener: its rules, compiled."""

    __slots__ = ("listener", "rules")

    def __init__(self, listener: ListenerConfig, rules: tuple):
        self.listener = listener
        self.rules = rules  # (_PathMatcher, ...)

    def match(self, path: str) -> Route | None:
        for rule in self.rules:
            route = rule.match(path)
            if route is not None:
                return route
        return None


class _Socket:
    """The listeners sharing one (bind, port)."""

    __slots__ = ("exact", "wildcards", "basic")

    def __init__(self, exact: dict, wildcards: tuple, basic: _Site | None):
        self.exact = exact  # host name -> _Site
        self.wildcards = wildcards  # ((".suffix", site), ...), longest suffix first
        self.basic = basic

    def site(self, host: str) -> _Site | None:
        site = self.exact.get(host)
        if site is not None:
            return site
        for suffix, site in self.wildcards:
            if host.endswith(suffix):
                return site
        return self.basic


class Router:
    """The compiled routing table of one configuration."""

    __slots__ = ("config", "sockets", "_sites")

    def __init__(self, config: Config):
        self.config = config
        # Each set compiled once (its patterns with it), shared by the routes that name it.
        sets = {s.name: compile_set(s) for s in config.rewrite_rule_sets}
        sites = {lst.name: _Site(lst, self._compile_rules(config, lst, sets))
                 for lst in config.listeners}
        groups: dict[tuple[str, int], list[ListenerConfig]] = {}
        for lst in config.listeners:
            groups.setdefault((lst.bind, lst.port), []).append(lst)
        self.sockets: dict[tuple[str, int], _Socket] = {}
        for key, members in groups.items():
            exact: dict[str, _Site] = {}
            wildcards: list[tuple[str, _Site]] = []
            basic = None
            for lst in members:
                if not lst.host_names:
                    basic = sites[lst.name]
                for host in lst.host_names:
                    if host.startswith("*."):
                        wildcards.append((host[1:], sites[lst.name]))
                    else:
                        exact[host] = sites[lst.name]
            wildcards.sort(key=lambda item: -len(item[0]))
            self.sockets[key] = _Socket(exact, tuple(wildcards), basic)
        self._sites: dict = {}

    @staticmethod
    def _compile_rules(config: Config, listener: ListenerConfig, sets: dict[str, RuleSet]
                       ) -> tuple[_PathMatcher, ...]:
        rules = sorted((r for r in config.rules if r.listener == listener.name),
                       key=lambda r: (r.priority, r.order))
        compiled = []
        for rule in rules:
            default = None
            if rule.type == "redirect" or rule.backend_pool is not None:
                default = _route(listener, rule, rule.backend_pool, rule.backend_settings,
                                 rule.type == "redirect", sets.get(rule.rewrite_rule_set or ""))
            patterns = []
            for path_map in rule.paths:
                route = _route(listener, rule, path_map.backend_pool, path_map.backend_settings,
                               False, sets.get(path_map.rewrite_rule_set or ""))
                for p in path_map.paths:
                    if p.endswith("*"):
                        patterns.append((p[:-1], True, route))
                    else:
                        patterns.append((p, False, route))
            compiled.append(_PathMatcher(tuple(patterns), default))
        return tuple(compiled)

    def socket_keys(self) -> list[tuple[str, int]]:
        """The (bind, port) pairs to listen on."""
        return list(self.sockets)

    def _site(self, socket_key: tuple[str, int], host: bytes | None) -> _Site | None:
        """The listener (site) a Host header selects on a socket; remembered per Host value,
        because a gateway sees the same few Host headers over and over."""
        key = (socket_key, host)
        site = self._sites.get(key, _MISSING)
        if site is _MISSING:
            sock = self.sockets.get(socket_key)
            if sock is None:
                site = None
            elif host:
                site = sock.site(normalize_host(host.decode("latin-1")))
            else:
                site = sock.basic
            if len(self._sites) > 4096:  # Host headers are client input: keep the memo bounded
                self._sites.clear()
            self._sites[key] = site
        return site

    def match(self, socket_key: tuple[str, int], host: bytes | str | None, path: str
              ) -> Route | None:
        """Route a request that arrived on `socket_key` with this Host header and URL path."""
        if isinstance(host, str):
            host = host.encode("latin-1")
        site = self._site(socket_key, host)
        if site is None:
            return None
        if "%" in path or "/." in path or "//" in path:
            path = normalize_path(path)
        for matcher in site.rules:
            for pattern, is_prefix, route in matcher.patterns:
                if path.startswith(pattern) if is_prefix else path == pattern:
                    return route
            if matcher.default is not None:
                return matcher.default
        return None

    def listener_for(self, socket_key: tuple[str, int], host: bytes | str | None
                     ) -> ListenerConfig | None:
        """The listener a Host selects (for TLS SNI, logs and WAF policy), or None."""
        if isinstance(host, str):
            host = host.encode("latin-1")
        site = self._site(socket_key, host)
        return site.listener if site is not None else None

    def describe(self) -> list[str]:
        """The routing table as text, for `fastgw check`."""
        lines = []
        for (bind, port), sock in self.sockets.items():
            sites = list(sock.exact.values()) + [s for _, s in sock.wildcards]
            if sock.basic is not None:
                sites.append(sock.basic)
            seen = set()
            for site in sites:
                lst = site.listener
                if lst.name in seen:
                    continue
                seen.add(lst.name)
                hosts = ", ".join(lst.host_names) or "*"
                lines.append(f"{lst.protocol}://{bind}:{port}  listener {lst.name!r}  hosts: {hosts}")
                for matcher in site.rules:
                    for pattern, is_prefix, route in matcher.patterns:
                        shown = pattern + "*" if is_prefix else pattern
                        lines.append(f"    {shown:<24} -> {_target(route)}  {_origin(route)}")
                    if matcher.default is not None:
                        label = "(any path)" if not matcher.patterns else "(other paths)"
                        route = matcher.default
                        lines.append(f"    {label:<24} -> {_target(route)}  {_origin(route)}")
        return lines


def _origin(route: Route) -> str:
    rewrite = f", rewrite {route.rewrite.name!r}" if route.rewrite is not None else ""
    return f"(rule {route.rule.name!r}{rewrite})"


def _target(route: Route) -> str:
    rule = route.rule
    if rule.type == "redirect":
        where = rule.target_url or f"listener {rule.target_listener!r}"
        return f"redirect {rule.status} to {where}"
    return f"pool {route.backend_pool!r} with settings {route.backend_settings!r}"


def normalize_host(host: str) -> str:
    """Host header -> lower-case name without port or trailing dot ("[::1]" kept bracketed)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    colon = host.rfind(":")
    if colon >= 0:
        host = host[:colon]
    return host.rstrip(".").lower()


def normalize_path(path: str) -> str:
    """The path as nginx matches it: decoded, dot-segments resolved, slashes merged."""
    if "%" not in path and "/." not in path and "//" not in path:
        return path  # the common case costs one scan
    if "%" in path:
        path = unquote(path, errors="surrogateescape")
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path.startswith("//"):  # normpath keeps a leading '//' (POSIX); a URL path does not
        path = "/" + path.lstrip("/")
    if trailing and path != "/":
        path += "/"
    return path
