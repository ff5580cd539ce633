"""Routing is pure: (socket, Host, path) -> Route, tested without sockets."""

from __future__ import annotations

from fastgw import config
from fastgw.routing import Router, normalize_host, normalize_path

TOML = """
[[listeners]]
name = "site-a"
port = 80
host_names = ["a.example.com"]

[[listeners]]
name = "wild"
port = 80
host_names = ["*.example.org", "*.deep.example.org"]

[[listeners]]
name = "catchall"
port = 80

[[listeners]]
name = "other-port"
port = 8080

[[backend_pools]]
name = "api"
servers = ["10.0.0.1"]
[[backend_pools]]
name = "static"
servers = ["10.0.0.2"]
[[backend_pools]]
name = "default"
servers = ["10.0.0.3"]

[[backend_settings]]
name = "s"

[[rules]]
name = "a-paths"
type = "path_based"
listener = "site-a"
backend_pool = "default"
backend_settings = "s"
  [[rules.paths]]
  paths = ["/api/*", "/exact"]
  backend_pool = "api"
  [[rules.paths]]
  paths = ["/api/special", "/static/*"]
  backend_pool = "static"

[[rules]]
name = "wild-low"
type = "basic"
priority = 200
listener = "wild"
backend_pool = "default"
backend_settings = "s"

[[rules]]
name = "wild-high"
type = "path_based"
priority = 100
listener = "wild"
backend_settings = "s"
  [[rules.paths]]
  paths = ["/admin/*"]
  backend_pool = "api"

[[rules]]
name = "catchall"
listener = "catchall"
backend_pool = "static"
backend_settings = "s"

[[rules]]
name = "redirect"
type = "redirect"
listener = "other-port"
target_listener = "catchall"
"""


def router() -> Router:
    return Router(config.loads(TOML))


def target(route):
    return None if route is None else (route.rule.name, route.backend_pool)


def test_exact_host_and_first_matching_path():
    r = router()
    key = ("0.0.0.0", 80)
    assert target(r.match(key, "a.example.com", "/api/x")) == ("a-paths", "api")
    # First match wins: /api/special matches /api/* before the later exact path.
    assert target(r.match(key, "a.example.com", "/api/special")) == ("a-paths", "api")
    assert target(r.match(key, "a.example.com", "/static/app.js")) == ("a-paths", "static")
    assert target(r.match(key, "a.example.com", "/exact")) == ("a-paths", "api")
    assert target(r.match(key, "a.example.com", "/exact/more")) == ("a-paths", "default")
    assert target(r.match(key, "a.example.com", "/")) == ("a-paths", "default")


def test_host_matching_ignores_case_port_and_trailing_dot():
    r = router()
    key = ("0.0.0.0", 80)
    for host in ("A.Example.COM", "a.example.com:8443", "a.example.com."):
        assert target(r.match(key, host, "/api/")) == ("a-paths", "api")


def test_wildcards_and_priority_fall_through():
    r = router()
    key = ("0.0.0.0", 80)
    # The higher-priority path_based rule has no default pool: unmatched paths fall through.
    assert target(r.match(key, "x.example.org", "/admin/panel")) == ("wild-high", "api")
    assert target(r.match(key, "x.example.org", "/home")) == ("wild-low", "default")
    assert target(r.match(key, "a.b.deep.example.org", "/")) == ("wild-low", "default")
    assert r.listener_for(key, "x.deep.example.org").name == "wild"
    # The bare domain is not covered by *.example.org: the basic listener takes it.
    assert target(r.match(key, "example.org", "/")) == ("catchall", "static")


def test_basic_listener_takes_unknown_hosts_and_missing_host():
    r = router()
    assert target(r.match(("0.0.0.0", 80), "unknown.test", "/x")) == ("catchall", "static")
    assert target(r.match(("0.0.0.0", 80), None, "/x")) == ("catchall", "static")


def test_no_match_is_none():
    cfg = config.loads(TOML.replace('[[listeners]]\nname = "catchall"\nport = 80\n', "").replace(
        '[[rules]]\nname = "catchall"\nlistener = "catchall"\nbackend_pool = "static"\n'
        'backend_settings = "s"\n', "").replace('target_listener = "catchall"',
                                                 'target_listener = "site-a"'))
    r = Router(cfg)
    assert r.match(("0.0.0.0", 80), "nobody.test", "/") is None
    assert r.match(("0.0.0.0", 9999), "a.example.com", "/") is None


def test_redirect_route():
    route = router().match(("0.0.0.0", 8080), "a", "/x")
    assert route.is_redirect and route.rule.target_listener == "catchall"


def test_path_normalization_prevents_bypass():
    r = router()
    key = ("0.0.0.0", 80)
    for path in ("/%61dmin/x", "/static/../admin/x", "//admin/x", "/admin/./x"):
        assert target(r.match(key, "x.example.org", path)) == ("wild-high", "api"), path
    assert normalize_path("/a/b/../c/") == "/a/c/"
    assert normalize_path("/plain") == "/plain"
    assert normalize_path("/..") == "/"


def test_normalize_host():
    assert normalize_host("[::1]:8080") == "[::1]"
    assert normalize_host("Example.COM.") == "example.com"


def test_describe_lists_every_route():
    text = "\n".join(router().describe())
    assert "/api/*" in text and "redirect 301" in text and "hosts: *.example.org" in text


def test_request_path_drops_query_and_fragment():
    from fastgw.http1 import RequestHead
    assert RequestHead(b"GET", b"/a/b?x=1#f", "1.1", []).path() == "/a/b"
    assert RequestHead(b"GET", b"/a#frag", "1.1", []).path() == "/a"
    assert RequestHead(b"GET", b"/a?q=1#f", "1.1", []).path_and_query() == ("/a", "q=1")
