"""Configuration: one TOML file (tomllib) -> frozen dataclasses, with every check.

`load(path)` returns a `Config` or raises `ConfigError` listing *all* problems at once, each as
(file, key path, reason) — `fastgw check` prints them as `FILE:key.path: reason`. A key path names
an item of an array by index and, once it has one, by name (`listeners[0] "public".port`, see
`item_key`); an unknown key or name comes with the closest known one ("did you mean"), and a
reference to an item that exists but has problems of its own is not reported a second time. The
key names are the configuration contract (the README's reference tables); keys added here (marked
"fastgw:" below) extend it.

Checks that need the outside world (certificate files readable and matching, WAF rule files
parseable) live in preflight.py (`fastgw check`, start-up and reload run them), so that this
module stays pure: TOML in, values out.
"""

from __future__ import annotations

import builtins
import dataclasses
import difflib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, overload

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from fastgw.errors import ConfigError

# --------------------------------------------------------------------------------------------
# The dataclasses: what the rest of fastgw sees.


@dataclass(frozen=True, slots=True, kw_only=True)
class WafConfig:
    """The `[waf]` table, or a listener's own `waf` table (which replaces it for that listener)."""

    mode: str = "off"  # "off" | "detection" | "prevention"
    crs_path: str = "/usr/share/modsecurity-crs"
    crs_setup: str = "/etc/modsecurity/crs/crs-setup.conf"
    paranoia_level: int = 1
    anomaly_threshold: int = 5
    request_body_check: bool = True
    max_request_body_size: int = 131072
    disabled_rules: tuple[int, ...] = ()
    exclusions: tuple[str, ...] = ()
    custom_rules: tuple[str, ...] = ()  # absolute paths: relative ones are resolved against the config file


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    workers: int = 1  # resolved: "auto" becomes os.cpu_count()
    admin: tuple[str, int] | None = None  # (host, port) of /metrics, /healthz, /backend-health
    access_log: str = "-"  # fastgw: "-" = stderr, "off", or a file path
    firewall_log: str = "-"  # fastgw: the WAF's log, same choices
    header_timeout: float = 10.0  # fastgw: seconds to receive a whole request head
    keepalive_timeout: float = 75.0  # fastgw: idle client keep-alive connection (nginx's default)
    max_header_size: int = 32768  # fastgw: request head limit; larger gets 431
    shutdown_timeout: float = 10.0  # fastgw: graceful stop deadline for in-flight work
    close_timeout: float = 5.0  # fastgw: WebSocket close handshake deadline
    upstream_keepalive: int = 32  # fastgw: idle keep-alive connections kept per backend server
    max_connections: int = 0  # client connections per process; 0 = derived from RLIMIT_NOFILE
    upgrade_drain_timeout: float = 300.0  # fastgw: after a live upgrade, what stayed closes by then
    # The gateway's own 4xx/5xx answers as HTML pages: ((status, absolute path), ...), sorted
    error_pages: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    name: str
    port: int
    bind: str = "0.0.0.0"
    protocol: str = "http"
    host_names: tuple[str, ...] = ()  # lower-case; "*.example.org" wildcards
    certificate: str | None = None  # absolute path (https)
    private_key: str | None = None
    waf: WafConfig | None = None  # None: the global [waf]
    client_ca: str | None = None  # https: mutual TLS, a PEM CA bundle (absolute path)
    client_verify: str = "off"  # "required" | "optional" | "off"
    error_pages: tuple[tuple[int, str], ...] = ()  # override [gateway] error_pages per status
    proxy_protocol: bool = False  # a PROXY protocol v1/v2 header precedes HTTP or TLS
    proxy_protocol_from: tuple[str, ...] = ()  # CIDRs of the peers that may send it; () = any
    max_connections_per_ip: int = 0  # 0 = none
    requests_per_ip: int = 0  # requests and handshakes per rate_window; 0 = none
    rate_window: float = 60.0


# The keys that act before the Host header picks a listener: listeners sharing a socket share them.
SOCKET_KEYS = ("proxy_protocol", "proxy_protocol_from", "max_connections_per_ip",
               "requests_per_ip", "rate_window")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerAddress:
    host: str  # host name or IP literal (IPv6 without brackets)
    port: int | None  # None: the backend settings' port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig:
    name: str
    servers: tuple[ServerAddress, ...] = ()
    load_balancing: str = "round_robin"  # | "least_connections"


@dataclass(frozen=True, slots=True, kw_only=True)
class SettingsConfig:
    name: str
    protocol: str = "http"
    port: int = 80
    request_timeout: float = 30.0
    probe: str | None = None
    cookie_affinity: bool = False
    affinity_cookie_name: str = "ApplicationGatewayAffinity"
    connection_draining: float = 0.0
    host_name: str = ""
    trusted_root_certificate: str = ""  # absolute path, or "" for the system roots
    max_message_size: int = 0
    max_frame_size: int = 0
    ping_interval: float = 0.0  # dead-peer detection: Ping a leg silent this long; 0 = off
    ping_timeout: float = 10.0  # no Pong by then: the session ends (1001 to the live leg)
    # Handshakes whose Origin is not listed get 403; () = any. Each entry is (scheme, host, port)
    # as RFC 6454 section 6.1 serialises an origin (lower-case, the scheme's default port
    # filled in); a host starting with "." is a wildcard's suffix (one or more labels before it).
    websocket_allowed_origins: tuple[tuple[str, str, int], ...] = ()
    websocket_allowed_subprotocols: tuple[str, ...] = ()  # () = any; offers outside it are removed
    max_sessions: int = 0  # open WebSocket sessions on these settings per process; 0 = no limit


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeConfig:
    name: str
    type: str = "http"  # | "websocket"
    protocol: str = "http"
    host: str = ""
    port: int = 0  # fastgw: 0 = the backend settings' port
    path: str = "/"
    interval: float = 30.0
    timeout: float = 30.0
    unhealthy_threshold: int = 3
    match_status: tuple[tuple[int, int], ...] = ((200, 399),)
    match_body: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathRuleConfig:
    paths: tuple[str, ...]
    backend_pool: str
    backend_settings: str
    rewrite_rule_set: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleConfig:
    name: str
    type: str  # "basic" | "path_based" | "redirect"
    listener: str
    priority: int = 20000
    order: int = 0  # position in the file: breaks priority ties
    backend_pool: str | None = None
    backend_settings: str | None = None
    paths: tuple[PathRuleConfig, ...] = ()
    target_listener: str | None = None
    target_url: str | None = None
    status: int = 301
    include_path: bool = True
    include_query: bool = True
    rewrite_rule_set: str | None = None  # for the rule's own target (basic, path_based default)


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteConditionConfig:
    variable: str
    pattern: str
    ignore_case: bool = True
    negate: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteUrlConfig:
    path: str | None = None  # None: unchanged
    query: str | None = None  # None: unchanged; "": dropped
    reroute: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteRuleConfig:
    name: str
    sequence: int = 100
    conditions: tuple[RewriteConditionConfig, ...] = ()
    request_headers: tuple[tuple[str, str], ...] = ()  # (name, value); "" deletes
    response_headers: tuple[tuple[str, str], ...] = ()
    url: RewriteUrlConfig | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RewriteRuleSetConfig:
    name: str
    rules: tuple[RewriteRuleConfig, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: str  # the file it came from
    gateway: GatewayConfig
    listeners: tuple[ListenerConfig, ...]
    backend_pools: tuple[PoolConfig, ...]
    backend_settings: tuple[SettingsConfig, ...]
    probes: tuple[ProbeConfig, ...]
    rules: tuple[RuleConfig, ...]
    waf: WafConfig = field(default_factory=WafConfig)
    rewrite_rule_sets: tuple[RewriteRuleSetConfig, ...] = ()
    warnings: tuple[str, ...] = ()  # printed by `fastgw check` and at startup; not fatal

    def listener(self, name: str) -> ListenerConfig:
        return next(x for x in self.listeners if x.name == name)

    def pool(self, name: str) -> PoolConfig:
        return next(x for x in self.backend_pools if x.name == name)

    def settings(self, name: str) -> SettingsConfig:
        return next(x for x in self.backend_settings if x.name == name)


# --------------------------------------------------------------------------------------------
# Limits and vocabularies.

MAX_DURATION = 86400.0  # one day: longer timeouts or intervals are surely a typo
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_COOKIE_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}$")  # RFC 6265 token
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 section 5.6.2
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)
_REDIRECT_KEYS = ("target_listener", "target_url", "status", "include_path", "include_query")
_SECTIONS = ("listeners", "backend_pools", "backend_settings", "probes", "rules",
             "rewrite_rule_sets")
_TOP_KEYS = ("gateway", "waf") + _SECTIONS


def item_key(section: str, index: int, name: str | None = None) -> str:
    """The key path of an item of an array of tables: `listeners[0]`, and once the item has a
    valid name `listeners[0] "public"` (names never contain quotes or spaces)."""
    return f'{section}[{index}] "{name}"' if name else f"{section}[{index}]"


def did_you_mean(word: str, candidates) -> str:
    """"; did you mean 'x'?" for the closest candidate, or "" when none is close."""
    close = difflib.get_close_matches(word, [c for c in candidates if c != word], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _keys(cls, *internal: str) -> tuple[str, ...]:
    """The TOML keys of a table: the fields of the dataclass it becomes."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in internal)


class _Problems:
    """Collects (key, reason) problems for one file; `raise_if_any` turns them into ConfigError."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple[str, str, str]] = []
        self.warnings: list[str] = []

    def warn(self, key: str, reason: str) -> None:
        self.warnings.append(f"{self.source}:{key}: warning: {reason}")

    def add(self, key: str, reason: str) -> None:
        self.items.append((self.source, key, reason))

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean", int: "an integer", float: "a number", str: "a string",
        list: "an array", dict: "a table",
    }.get(type(value), type(value).__name__)


class _Table:
    """Typed reads from one TOML table; every failure becomes a problem naming `prefix.key`.

    Reads return the default when the key is missing (or None when required, after recording the
    problem), so one pass collects every problem in the file.

    The methods `str`, `bool`, `int` and `list` shadow the builtins in this class body: its
    annotations spell those types `builtins.str` etc.
    """

    def __init__(self, problems: _Problems, prefix: str, table: Any, keys: tuple[str, ...] = ()):
        self.problems = problems
        self.prefix = prefix
        self.keys = keys  # every key this kind of table may have (for "did you mean")
        self.ok = isinstance(table, dict)
        if not self.ok:
            problems.add(prefix, f"must be a table, got {_type_name(table)}")
        self.table: dict = table if self.ok else {}
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _get(self, name: str, required: bool) -> tuple[bool, Any]:
        self.seen.add(name)
        if name not in self.table:
            if required and self.ok:
                self.problems.add(self.key(name), "is required")
            return False, None
        return True, self.table[name]

    def bad(self, name: str, reason: str) -> None:
        self.problems.add(self.key(name), reason)

    @overload
    def str(self, name: builtins.str, default: builtins.str, *, required: builtins.bool = False,
            choices: tuple[builtins.str, ...] | None = None) -> builtins.str: ...

    @overload
    def str(self, name: builtins.str, default: None = None, *, required: builtins.bool = False,
            choices: tuple[builtins.str, ...] | None = None) -> builtins.str | None: ...

    def str(self, name: builtins.str, default: builtins.str | None = None, *,
            required: builtins.bool = False,
            choices: tuple[builtins.str, ...] | None = None) -> builtins.str | None:
        present, value = self._get(name, required)
        if not present:
            return default
        if not isinstance(value, str):
            self.bad(name, f"must be a string, got {_type_name(value)}")
            return default
        if choices is not None and value not in choices:
            self.bad(name, f"must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
            return default
        return value

    def name(self, name: builtins.str = "name") -> builtins.str | None:
        """The item's name; from here on the item's key paths carry it (`item_key`)."""
        value = self.str(name, required=True)
        if value is not None and not _NAME_RE.match(value):
            self.bad(name, f"{value!r} is not a valid name (letters, digits, '_', '-', '.'; "
                           "at most 80 characters, starting with a letter or digit)")
            return None
        if value is not None:
            self.prefix = f'{self.prefix} "{value}"'
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        present, value = self._get(name, False)
        if not present:
            return default
        if not isinstance(value, bool):
            self.bad(name, f"must be true or false, got {_type_name(value)}")
            return default
        return value

    @overload
    def int(self, name: builtins.str, default: builtins.int, lo: builtins.int, hi: builtins.int, *,
            required: builtins.bool = False) -> builtins.int: ...

    @overload
    def int(self, name: builtins.str, default: None, lo: builtins.int, hi: builtins.int, *,
            required: builtins.bool = False) -> builtins.int | None: ...

    def int(self, name: builtins.str, default: builtins.int | None, lo: builtins.int, hi: builtins.int, *,
            required: builtins.bool = False) -> builtins.int | None:
        present, value = self._get(name, required)
        if not present:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad(name, f"must be an integer, got {_type_name(value)}")
            return default
        if not lo <= value <= hi:
            self.bad(name, f"{value} is out of range ({lo}-{hi})")
            return default
        return value

    def duration(self, name: builtins.str, default: float, lo: float, hi: float = MAX_DURATION) -> float:
        present, value = self._get(name, False)
        if not present:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.bad(name, f"must be a number of seconds, got {_type_name(value)}")
            return default
        if value != value or not lo <= value <= hi:  # NaN fails too
            self.bad(name, f"{value} seconds is out of range ({lo:g}-{hi:g})")
            return default
        return float(value)

    def list(self, name: builtins.str, item_type: type, default: tuple = ()) -> tuple | None:
        present, value = self._get(name, False)
        if not present:
            return default
        if not isinstance(value, list):
            self.bad(name, f"must be an array, got {_type_name(value)}")
            return None
        items = []
        for i, item in enumerate(value):
            if item_type is int and (isinstance(item, bool) or not isinstance(item, int)):
                self.problems.add(f"{self.key(name)}[{i}]", f"must be an integer, got {_type_name(item)}")
            elif item_type is not int and not isinstance(item, item_type):
                self.problems.add(f"{self.key(name)}[{i}]",
                                  f"must be {_type_name(item_type())}, got {_type_name(item)}")
            else:
                items.append(item)
        return tuple(items) if len(items) == len(value) else None

    def tables(self, name: builtins.str) -> builtins.list[tuple[builtins.str, Any]]:
        """An array of tables: [(key prefix, table), ...]."""
        present, value = self._get(name, False)
        if not present:
            return []
        if not isinstance(value, list):
            self.bad(name, f"must be an array of tables ([[{self.key(name)}]]), got {_type_name(value)}")
            return []
        return [(f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]

    def finish(self) -> None:
        """Unknown keys are errors that name the key, and the known key closest to it."""
        for extra in sorted(self.table.keys() - self.seen):
            if extra in self.keys:  # a key of this kind of table that this item's type ignores
                self.problems.add(self.key(extra), "does not apply here")
            else:
                self.problems.add(self.key(extra), "unknown key" + did_you_mean(
                    extra, set(self.keys) | self.seen))


# --------------------------------------------------------------------------------------------
# Loading.


def load(path: str) -> Config:
    """Read and validate the configuration file at `path`; raise ConfigError with every problem."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError([(source, "(file)", f"cannot read: {exc.strerror or exc}")]) from None
    return loads(raw, source=source)


def loads(raw: bytes | str, *, source: str = "<string>") -> Config:
    """Validate TOML text; relative paths inside are resolved against `source`'s directory."""
    problems = _Problems(source)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([(source, "(file)", f"not UTF-8: {exc}")]) from None
    try:
        doc = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(source, "(syntax)", str(exc))]) from None
    base_dir = os.path.dirname(os.path.abspath(source)) if source != "<string>" else os.getcwd()
    config = _Parser(problems, base_dir).parse(doc, source)
    problems.raise_if_any()
    assert config is not None
    return config


_T = TypeVar("_T")


def _all_read(items: list[_T | None]) -> tuple[_T, ...]:
    """A section's items once the file has no problems: then every table was read (one that could
    not be read recorded a problem), so none of them is None."""
    return cast("tuple[_T, ...]", tuple(items))


class _Parser:
    def __init__(self, problems: _Problems, base_dir: str):
        self.problems = problems
        self.base_dir = base_dir

    def path(self, value: str) -> str:
        return value if os.path.isabs(value) else os.path.normpath(os.path.join(self.base_dir, value))

    # -- top level -----------------------------------------------------------------------

    def parse(self, doc: dict, source: str) -> Config | None:
        top = _Table(self.problems, "", doc, _TOP_KEYS)
        gateway = self.gateway(_Table(self.problems, "gateway", top._get("gateway", False)[1] or {},
                                      _keys(GatewayConfig)))
        waf_raw = top._get("waf", False)[1]
        waf = WafConfig() if waf_raw is None else \
            self.waf(_Table(self.problems, "waf", waf_raw, _keys(WafConfig)))
        raw = {section: top.tables(section) for section in _SECTIONS}
        listeners = [self.listener(_Table(self.problems, k, t, _keys(ListenerConfig)))
                     for k, t in raw["listeners"]]
        pools = [self.pool(_Table(self.problems, k, t, _keys(PoolConfig)))
                 for k, t in raw["backend_pools"]]
        settings = [self.settings(_Table(self.problems, k, t, _keys(SettingsConfig)))
                    for k, t in raw["backend_settings"]]
        probes = [self.probe(_Table(self.problems, k, t, _keys(ProbeConfig)))
                  for k, t in raw["probes"]]
        rules = [self.rule(_Table(self.problems, k, t, _keys(RuleConfig, "order")), i)
                 for i, (k, t) in enumerate(raw["rules"])]
        rewrite_sets = [self.rewrite_set(_Table(self.problems, k, t, _keys(RewriteRuleSetConfig)))
                        for k, t in raw["rewrite_rule_sets"]]
        top.finish()
        # The names the file gives, also of items that could not be read: a reference to one of
        # them is not a problem of its own (the item's problems are reported where it is).
        self.declared = {section: {t["name"] for _, t in tables
                                   if isinstance(t, dict) and isinstance(t.get("name"), str)}
                         for section, tables in raw.items()}
        if not doc.get("listeners"):
            self.problems.add("listeners", "at least one [[listeners]] table is required")
        if not doc.get("rules"):
            self.problems.add("rules", "at least one [[rules]] table is required")

        self.unique("listeners", listeners)
        self.unique("backend_pools", pools)
        self.unique("backend_settings", settings)
        self.unique("probes", probes)
        self.unique("rules", rules)
        self.unique("rewrite_rule_sets", rewrite_sets)
        # Cross-references are checked even when some tables had problems (skipping the tables
        # that could not be read), so that one run reports everything.
        self.cross_check(listeners, pools, settings, probes, rules, rewrite_sets)
        if self.problems.items:
            return None
        return Config(
            source=source, gateway=gateway, waf=waf, listeners=_all_read(listeners),
            backend_pools=_all_read(pools), backend_settings=_all_read(settings),
            probes=_all_read(probes), rules=_all_read(rules),
            rewrite_rule_sets=_all_read(rewrite_sets), warnings=tuple(self.problems.warnings),
        )

    def unique(self, section: str, items: list) -> None:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            name = getattr(item, "name", None)
            if name is None:
                continue
            if name in seen:
                self.problems.add(f"{item_key(section, i, name)}.name",
                                  f"duplicate name {name!r} (also {section}[{seen[name]}])")
            else:
                seen[name] = i

    # -- sections ------------------------------------------------------------------------

    def gateway(self, t: _Table) -> GatewayConfig:
        workers_raw = t.table.get("workers", 1)
        t.seen.add("workers")
        workers = 1
        if workers_raw == "auto":
            workers = os.cpu_count() or 1
        elif isinstance(workers_raw, bool) or not isinstance(workers_raw, int):
            t.bad("workers", f'must be an integer or "auto", got {_type_name(workers_raw)}')
        elif not 1 <= workers_raw <= 256:
            t.bad("workers", f"{workers_raw} is out of range (1-256)")
        else:
            workers = workers_raw
        admin = None
        admin_raw = t.str("admin", "")
        if admin_raw:
            admin = self.host_port(t, "admin", admin_raw)
        access_log = t.str("access_log", "-")
        if access_log not in ("-", "off"):
            access_log = self.path(access_log)
        firewall_log = t.str("firewall_log", "-")
        if firewall_log not in ("-", "off"):
            firewall_log = self.path(firewall_log)
        result = GatewayConfig(
            workers=workers,
            admin=admin,
            access_log=access_log,
            firewall_log=firewall_log,
            header_timeout=t.duration("header_timeout", 10.0, 0.1),
            keepalive_timeout=t.duration("keepalive_timeout", 75.0, 0.1),
            max_header_size=t.int("max_header_size", 32768, 1024, 1 << 20),
            shutdown_timeout=t.duration("shutdown_timeout", 10.0, 0.0),
            close_timeout=t.duration("close_timeout", 5.0, 0.1, 600.0),
            upstream_keepalive=t.int("upstream_keepalive", 32, 0, 100000),
            max_connections=t.int("max_connections", 0, 0, 10_000_000),
            upgrade_drain_timeout=t.duration("upgrade_drain_timeout", 300.0, 0.0),
            error_pages=self.error_pages(t),
        )
        t.finish()
        return result

    def host_port(self, t: _Table, key: str, value: str) -> tuple[str, int] | None:
        host, port = _split_host_port(value)
        if host is None or port is None:
            t.bad(key, f"{value!r} must be HOST:PORT")
            return None
        if not 1 <= port <= 65535:
            t.bad(key, f"port {port} is out of range (1-65535)")
            return None
        return host, port

    def waf(self, t: _Table) -> WafConfig:
        d = WafConfig()
        result = WafConfig(
            mode=t.str("mode", d.mode, choices=("off", "detection", "prevention")),
            crs_path=self.path(t.str("crs_path", d.crs_path)),
            crs_setup=self.path(t.str("crs_setup", d.crs_setup)),
            paranoia_level=t.int("paranoia_level", d.paranoia_level, 1, 4),
            anomaly_threshold=t.int("anomaly_threshold", d.anomaly_threshold, 1, 10000),
            request_body_check=t.bool("request_body_check", d.request_body_check),
            max_request_body_size=t.int("max_request_body_size", d.max_request_body_size, 1, 1 << 31),
            disabled_rules=t.list("disabled_rules", int) or (),
            exclusions=self.exclusions(t),
            custom_rules=tuple(self.path(p) for p in (t.list("custom_rules", str) or ())),
        )
        t.finish()
        return result

    def exclusions(self, t: _Table) -> tuple[str, ...]:
        items = t.list("exclusions", str) or ()
        for i, item in enumerate(items):
            why = exclusion_problem(item)
            if why:
                t.problems.add(f"{t.key('exclusions')}[{i}]", why)
        return items

    def listener(self, t: _Table) -> ListenerConfig | None:
        name = t.name()
        port = t.int("port", None, 1, 65535, required=True)
        bind = t.str("bind", "0.0.0.0")
        if bind is not None:
            try:
                ipaddress.ip_address(bind)
            except ValueError:
                t.bad("bind", f"{bind!r} is not an IP address (use 0.0.0.0, :: or a local address)")
        protocol = t.str("protocol", "http", choices=("http", "https"))
        host_names = []
        for i, host in enumerate(t.list("host_names", str) or ()):
            normalized = _normalize_host_pattern(host)
            if normalized is None:
                t.problems.add(f"{t.key('host_names')}[{i}]",
                               f"{host!r} is not a host name (a wildcard is allowed only as the "
                               "first label: *.example.org)")
            elif normalized in host_names:
                t.problems.add(f"{t.key('host_names')}[{i}]", f"duplicate host name {host!r}")
            else:
                host_names.append(normalized)
        certificate = t.str("certificate")
        private_key = t.str("private_key")
        if protocol == "https":
            if not certificate:
                t.bad("certificate", "is required for an https listener")
            if not private_key:
                t.bad("private_key", "is required for an https listener")
        else:
            if certificate is not None:
                t.bad("certificate", 'only applies to listeners with protocol = "https"')
            if private_key is not None:
                t.bad("private_key", 'only applies to listeners with protocol = "https"')
        client_ca = t.str("client_ca", "")
        client_verify = t.str("client_verify", "off", choices=("required", "optional", "off"))
        if protocol != "https":
            if client_ca:
                t.bad("client_ca", 'only applies to listeners with protocol = "https"')
            if client_verify != "off":
                t.bad("client_verify", 'only applies to listeners with protocol = "https"')
        elif client_verify != "off" and not client_ca:
            t.bad("client_verify", f"{client_verify!r} needs client_ca (the CA bundle that "
                                   "signs client certificates)")
        waf_raw = t._get("waf", False)[1]
        waf = self.waf(_Table(self.problems, t.key("waf"), waf_raw, _keys(WafConfig))) \
            if waf_raw is not None else None
        proxy_protocol = t.bool("proxy_protocol", False)
        proxy_from = []
        for i, cidr in enumerate(t.list("proxy_protocol_from", str) or ()):
            try:
                proxy_from.append(str(ipaddress.ip_network(cidr, strict=False)))
            except ValueError:
                t.problems.add(f"{t.key('proxy_protocol_from')}[{i}]",
                               f"{cidr!r} is not an address range (e.g. 10.0.0.0/8, ::1/128)")
        if proxy_from and not proxy_protocol:
            t.bad("proxy_protocol_from", "only applies with proxy_protocol = true")
        per_ip = t.int("max_connections_per_ip", 0, 0, 10_000_000)
        rate = t.int("requests_per_ip", 0, 0, 1_000_000_000)
        window = t.duration("rate_window", 60.0, 0.001)
        error_pages = self.error_pages(t)
        t.finish()
        if name is None or port is None or bind is None or protocol is None:
            return None
        return ListenerConfig(
            name=name, port=port, bind=bind, protocol=protocol, host_names=tuple(host_names),
            certificate=self.path(certificate) if certificate else None,
            private_key=self.path(private_key) if private_key else None,
            waf=waf, client_ca=self.path(client_ca) if client_ca else None,
            client_verify=client_verify or "off", error_pages=error_pages,
            proxy_protocol=proxy_protocol, proxy_protocol_from=tuple(proxy_from),
            max_connections_per_ip=per_ip or 0, requests_per_ip=rate or 0, rate_window=window,
        )

    def error_pages(self, t: _Table) -> tuple[tuple[int, str], ...]:
        """`error_pages = { 403 = "pages/403.html" }`: TOML keys are strings; each must be a 4xx
        or 5xx status (only errors get a page), each value a file (read by preflight.py)."""
        present, table = t._get("error_pages", False)
        if not present:
            return ()
        if not isinstance(table, dict):
            t.bad("error_pages", f"must be a table of status = \"file\", got {_type_name(table)}")
            return ()
        pages = []
        for key, value in table.items():
            where = f"{t.key('error_pages')}.{key}"
            if not (key.isascii() and key.isdigit() and 400 <= int(key) <= 599):
                t.problems.add(where, f"{key!r} is not a 4xx or 5xx status (pages are for the "
                                      "gateway's own error answers)")
            elif not isinstance(value, str) or not value:
                t.problems.add(where, f"must be a file name, got {_type_name(value)}")
            else:
                pages.append((int(key), self.path(value)))
        return tuple(sorted(pages))

    def pool(self, t: _Table) -> PoolConfig | None:
        name = t.name()
        servers = []
        for i, raw in enumerate(t.list("servers", str) or ()):
            address = _parse_server(raw)
            if isinstance(address, str):
                t.problems.add(f"{t.key('servers')}[{i}]", address)
            else:
                servers.append(address)
        lb = t.str("load_balancing", "round_robin", choices=("round_robin", "least_connections"))
        t.finish()
        if name is None or lb is None:
            return None
        return PoolConfig(name=name, servers=tuple(servers), load_balancing=lb)

    def settings(self, t: _Table) -> SettingsConfig | None:
        d = SettingsConfig(name="-")
        name = t.name()
        cookie_name = t.str("affinity_cookie_name", d.affinity_cookie_name)
        if cookie_name is not None and not _COOKIE_NAME_RE.match(cookie_name):
            t.bad("affinity_cookie_name", f"{cookie_name!r} is not a valid cookie name (RFC 6265 token)")
        host_name = t.str("host_name", "")
        if host_name and not _is_host(host_name):
            t.bad("host_name", f"{host_name!r} is not a host name (optionally with :PORT)")
        trusted = t.str("trusted_root_certificate", "")
        probe = t.str("probe")
        result = SettingsConfig(
            name=name or "-",
            protocol=t.str("protocol", "http", choices=("http", "https")) or "http",
            port=t.int("port", 80, 1, 65535),
            request_timeout=t.duration("request_timeout", d.request_timeout, 1.0),
            probe=probe or None,
            cookie_affinity=t.bool("cookie_affinity", False),
            affinity_cookie_name=cookie_name or d.affinity_cookie_name,
            connection_draining=t.duration("connection_draining", 0.0, 0.0, 3600.0),
            host_name=host_name or "",
            trusted_root_certificate=self.path(trusted) if trusted else "",
            max_message_size=t.int("max_message_size", 0, 0, 1 << 62),
            max_frame_size=t.int("max_frame_size", 0, 0, 1 << 62),
            ping_interval=t.duration("ping_interval", 0.0, 0.0),
            ping_timeout=t.duration("ping_timeout", 10.0, 0.1),
            websocket_allowed_origins=self.origins(t),
            websocket_allowed_subprotocols=self.subprotocols(t),
            max_sessions=t.int("max_sessions", 0, 0, 10_000_000),
        )
        t.finish()
        return result if name else None

    def origins(self, t: _Table) -> tuple[tuple[str, str, int], ...]:
        origins = []
        for i, raw in enumerate(t.list("websocket_allowed_origins", str) or ()):
            origin = parse_origin(raw, wildcard=True)
            if origin is None:
                t.problems.add(f"{t.key('websocket_allowed_origins')}[{i}]",
                               f"{raw!r} is not an origin: SCHEME://HOST[:PORT], without a path "
                               "(a wildcard only as the first label: https://*.example.com)")
            elif origin not in origins:
                origins.append(origin)
        return tuple(origins)

    def subprotocols(self, t: _Table) -> tuple[str, ...]:
        items = t.list("websocket_allowed_subprotocols", str) or ()
        for i, item in enumerate(items):
            if not _TOKEN_RE.match(item):  # RFC 6455 section 4.1: a subprotocol is a token
                t.problems.add(f"{t.key('websocket_allowed_subprotocols')}[{i}]",
                               f"{item!r} is not a subprotocol name (an RFC 9110 token)")
        return items

    def probe(self, t: _Table) -> ProbeConfig | None:
        d = ProbeConfig(name="-")
        name = t.name()
        path = t.str("path", "/")
        if path is not None and (not path.startswith("/") or any(c in path for c in " \r\n\t")):
            t.bad("path", f"{path!r} must start with '/' and contain no spaces")
        host = t.str("host", "")
        if host and not _is_host(host):
            t.bad("host", f"{host!r} is not a host name (optionally with :PORT)")
        interval = t.duration("interval", d.interval, 0.1)
        timeout = t.duration("timeout", d.timeout, 0.1)
        statuses = []
        raw_statuses = t._get("match_status", False)[1]
        if raw_statuses is None:
            statuses = list(d.match_status)
        elif not isinstance(raw_statuses, list) or not raw_statuses:
            t.bad("match_status", 'must be a non-empty array like ["200-399"] or [200, 204]')
        else:
            for i, item in enumerate(raw_statuses):
                parsed = _parse_status_range(item)
                if parsed is None:
                    t.problems.add(f"{t.key('match_status')}[{i}]",
                                   f"{item!r} must be a status code (100-599) or a range like \"200-399\"")
                else:
                    statuses.append(parsed)
        result = ProbeConfig(
            name=name or "-",
            type=t.str("type", "http", choices=("http", "websocket")) or "http",
            protocol=t.str("protocol", "http", choices=("http", "https")) or "http",
            host=host or "",
            port=t.int("port", 0, 0, 65535),
            path=path or "/",
            interval=interval,
            timeout=timeout,
            unhealthy_threshold=t.int("unhealthy_threshold", 3, 1, 20),
            match_status=tuple(statuses),
            match_body=t.str("match_body", "") or "",
        )
        t.finish()
        return result if name else None

    def rule(self, t: _Table, order: int) -> RuleConfig | None:
        name = t.name()
        rtype = t.str("type", "basic", choices=("basic", "path_based", "redirect"))
        listener = t.str("listener", required=True)
        priority = t.int("priority", 20000, 1, 20000)
        pool = t.str("backend_pool")
        settings = t.str("backend_settings")
        rewrite_set = t.str("rewrite_rule_set", "") or None
        paths: list[PathRuleConfig] = []
        target_listener = target_url = None
        status, include_path, include_query = 301, True, True
        if rtype == "redirect":
            target_listener = t.str("target_listener")
            target_url = t.str("target_url")
            if (target_listener is None) == (target_url is None):
                t.bad("target_listener", "a redirect rule needs exactly one of target_listener or target_url")
            if target_url is not None and not re.match(r"^https?://[^/\s]+", target_url):
                t.bad("target_url", f"{target_url!r} must be an absolute http:// or https:// URL")
            status = t.int("status", 301, 100, 599)
            if status not in _REDIRECT_STATUSES:
                t.bad("status", f"{status} is not a redirect status (301, 302, 303, 307 or 308)")
            include_path = t.bool("include_path", True)
            include_query = t.bool("include_query", True)
            for key in ("backend_pool", "backend_settings", "rewrite_rule_set"):
                if t.table.get(key) is not None:
                    t.bad(key, "does not apply to a redirect rule")
        elif rtype in ("basic", "path_based"):
            if rtype == "basic":
                if pool is None:
                    t.bad("backend_pool", "is required for a basic rule")
                if settings is None:
                    t.bad("backend_settings", "is required for a basic rule")
            if pool is not None and settings is None:
                t.bad("backend_settings", "is required when backend_pool is set")
            for key, sub in t.tables("paths"):
                st = _Table(self.problems, key, sub, _keys(PathRuleConfig))
                path_list = st.list("paths", str)
                if path_list is not None and not path_list:
                    st.bad("paths", "must list at least one path")
                for j, p in enumerate(path_list or ()):
                    why = _check_path_pattern(p)
                    if why:
                        self.problems.add(f"{st.key('paths')}[{j}]", why)
                if "paths" not in st.table and st.ok:
                    st.bad("paths", "is required")
                sub_pool = st.str("backend_pool", pool)
                sub_settings = st.str("backend_settings", settings)
                sub_rewrite = st.str("rewrite_rule_set", "") or None
                if sub_pool is None:
                    st.bad("backend_pool", "is required (the rule has no default backend_pool)")
                if sub_settings is None:
                    st.bad("backend_settings", "is required (the rule has no default backend_settings)")
                st.finish()
                if path_list and sub_pool and sub_settings:
                    paths.append(PathRuleConfig(paths=path_list, backend_pool=sub_pool,
                                                backend_settings=sub_settings,
                                                rewrite_rule_set=sub_rewrite))
            if rtype == "path_based" and "paths" not in t.table and t.ok:
                t.bad("paths", "a path_based rule needs at least one [[rules.paths]] table")
            if rtype == "basic" and "paths" in t.table:
                t.bad("paths", 'only applies to rules with type = "path_based"')
            for key in _REDIRECT_KEYS:
                if key in t.table:
                    t.seen.add(key)
                    t.bad(key, 'only applies to rules with type = "redirect"')
        if rtype == "redirect" and "paths" in t.table:
            t.seen.add("paths")
            t.bad("paths", 'only applies to rules with type = "path_based"')
        t.finish()
        if name is None or rtype is None or listener is None:
            return None
        return RuleConfig(
            name=name, type=rtype, listener=listener, priority=priority or 20000, order=order,
            backend_pool=pool, backend_settings=settings, paths=tuple(paths),
            target_listener=target_listener, target_url=target_url, status=status,
            include_path=include_path, include_query=include_query,
            rewrite_rule_set=rewrite_set if rtype != "redirect" else None,
        )

    def rewrite_set(self, t: _Table) -> RewriteRuleSetConfig | None:
        name = t.name()
        rules = [self.rewrite_rule(_Table(self.problems, k, sub, _keys(RewriteRuleConfig)))
                 for k, sub in t.tables("rules")]
        if "rules" not in t.table and t.ok:
            t.bad("rules", "a rewrite rule set needs at least one [[rewrite_rule_sets.rules]] table")
        t.finish()
        if name is None or any(r is None for r in rules):
            return None
        return RewriteRuleSetConfig(name=name, rules=_all_read(rules))

    def rewrite_rule(self, t: _Table) -> RewriteRuleConfig | None:
        # Imported here: rewrite.py is compiled (native.py), and the command line reports
        # missing extensions itself, after it has imported this module.
        from fastgw import rewrite
        name = t.name()
        sequence = t.int("sequence", 100, 1, 1000)
        ok = True
        conditions = []
        groups: dict[str, int] = {}
        response_condition = False
        raw_conditions = t._get("conditions", False)[1]
        if raw_conditions is not None and not isinstance(raw_conditions, list):
            t.bad("conditions", f"must be an array of tables, got {_type_name(raw_conditions)}")
            raw_conditions, ok = None, False
        for i, raw in enumerate(raw_conditions or ()):
            ct = _Table(self.problems, f"{t.key('conditions')}[{i}]", raw,
                        _keys(RewriteConditionConfig))
            variable = ct.str("variable", required=True)
            pattern = ct.str("pattern", required=True)
            ignore_case = ct.bool("ignore_case", True)
            negate = ct.bool("negate", False)
            ct.finish()
            if variable is not None:
                why = rewrite.variable_problem(variable)
                if why:
                    ct.bad("variable", why)
                    variable = None
            if pattern is not None:
                try:
                    compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
                except re.error as exc:
                    ct.bad("pattern", f"{pattern!r} is not a regular expression: {exc}")
                    pattern = None
            if variable is None or pattern is None:
                ok = False
                continue
            groups.setdefault(variable, compiled.groups)
            response_condition = response_condition or variable.startswith("http_resp_")
            conditions.append(RewriteConditionConfig(variable=variable, pattern=pattern,
                                                     ignore_case=ignore_case, negate=negate))

        def value(key: str, text: str) -> None:
            nonlocal ok
            if any(ord(c) < 32 or ord(c) == 127 for c in text):
                self.problems.add(key, "must not contain control characters")
                ok = False
                return
            parsed = rewrite.parse_template(text, groups)
            if isinstance(parsed, str):
                self.problems.add(key, parsed)
                ok = False

        def headers(side: str) -> tuple[tuple[str, str], ...]:
            nonlocal ok
            raw = t._get(side, False)[1]
            if raw is None:
                return ()
            if not isinstance(raw, dict):
                t.bad(side, f"must be a table of header = value, got {_type_name(raw)}")
                ok = False
                return ()
            seen: set[str] = set()
            for header, text in raw.items():
                key = f"{t.key(side)}.{header}"
                why = rewrite.header_problem(header, side == "response_headers")
                if why is None and header.lower() in seen:
                    why = "set twice (header names ignore case)"
                seen.add(header.lower())
                if why is None and not isinstance(text, str):
                    why = f"must be a string (\"\" deletes the header), got {_type_name(text)}"
                if why is not None:
                    self.problems.add(key, why)
                    ok = False
                elif text:
                    value(key, text)
            return tuple(raw.items()) if ok else ()

        request_headers = headers("request_headers")
        response_headers = headers("response_headers")
        url = None
        raw_url = t._get("url", False)[1]
        if raw_url is not None:
            ut = _Table(self.problems, t.key("url"), raw_url, _keys(RewriteUrlConfig))
            path = ut.str("path")
            query = ut.str("query")
            reroute = ut.bool("reroute", False)
            ut.finish()
            if path is not None:
                if not path.startswith(("/", "{")):
                    ut.bad("path", f"{path!r} must start with '/' (or a placeholder)")
                    ok = False
                else:
                    value(ut.key("path"), path)
            if query is not None:
                value(ut.key("query"), query)
            if path is None and query is None and ut.ok:
                ut.bad("path", "url needs path, query or both")
                ok = False
            if reroute and path is None:
                ut.bad("reroute", "rerouting needs a new path")
                ok = False
            url = RewriteUrlConfig(path=path, query=query, reroute=reroute)
        if response_condition and (request_headers or url is not None):
            t.bad("conditions", "a rule with an http_resp_ condition can only set "
                                "response_headers: the request has left by then")
            ok = False
        if not request_headers and not response_headers and url is None and t.ok:
            t.bad("request_headers", "the rule has no action (request_headers, "
                                     "response_headers or url)")
            ok = False
        t.finish()
        if name is None or not ok:
            return None
        return RewriteRuleConfig(name=name, sequence=sequence, conditions=tuple(conditions),
                                 request_headers=request_headers,
                                 response_headers=response_headers, url=url)

    # -- references between sections -----------------------------------------------------

    def cross_check(self, listener_list: list, pool_list: list, settings_list: list,
                    probe_list: list, rule_list: list, rewrite_list: list) -> None:
        # Tables that could not be read are None here; their index still names them.
        listeners = {x.name: (i, x) for i, x in enumerate(listener_list) if x is not None}
        pools = {x.name for x in pool_list if x is not None}
        settings = {x.name for x in settings_list if x is not None}
        probes = {x.name for x in probe_list if x is not None}
        rewrite_sets = {x.name for x in rewrite_list if x is not None}
        add = self.problems.add

        def missing(key: str, kind: str, section: str, name: str, known) -> None:
            """A reference to `name`: reported unless it exists, even with problems."""
            if name not in known and name not in self.declared[section]:
                add(key, f"no {kind} named {name!r}" + did_you_mean(name, self.declared[section]))

        for i, s in enumerate(settings_list):
            if s is not None and s.probe is not None:
                missing(f"{item_key('backend_settings', i, s.name)}.probe", "probe", "probes",
                        s.probe, probes)

        for i, r in enumerate(rule_list):
            if r is None:
                continue
            key = item_key("rules", i, r.name)
            missing(f"{key}.listener", "listener", "listeners", r.listener, listeners)
            if r.backend_pool is not None:
                missing(f"{key}.backend_pool", "backend pool", "backend_pools", r.backend_pool,
                        pools)
            if r.backend_settings is not None:
                missing(f"{key}.backend_settings", "backend settings", "backend_settings",
                        r.backend_settings, settings)
            for j, p in enumerate(r.paths):
                if p.backend_pool != r.backend_pool:
                    missing(f"{key}.paths[{j}].backend_pool", "backend pool", "backend_pools",
                            p.backend_pool, pools)
                if p.backend_settings != r.backend_settings:
                    missing(f"{key}.paths[{j}].backend_settings", "backend settings",
                            "backend_settings", p.backend_settings, settings)
            if r.target_listener is not None:
                missing(f"{key}.target_listener", "listener", "listeners", r.target_listener,
                        listeners)
            if r.rewrite_rule_set is not None:
                missing(f"{key}.rewrite_rule_set", "rewrite rule set", "rewrite_rule_sets",
                        r.rewrite_rule_set, rewrite_sets)
            for j, p in enumerate(r.paths):
                if p.rewrite_rule_set is not None:
                    missing(f"{key}.paths[{j}].rewrite_rule_set", "rewrite rule set",
                            "rewrite_rule_sets", p.rewrite_rule_set, rewrite_sets)

        # Priorities: two rules on one listener with the same explicit priority are ambiguous.
        by_listener: dict[tuple[str, int], int] = {}
        for i, r in enumerate(rule_list):
            if r is None or r.priority == 20000:
                continue
            k = (r.listener, r.priority)
            if k in by_listener:
                other_rule = item_key("rules", by_listener[k], rule_list[by_listener[k]].name)
                add(f"{item_key('rules', i, r.name)}.priority",
                    f"priority {r.priority} is also used by {other_rule} on listener {r.listener!r}")
            else:
                by_listener[k] = i

        # Ports: listeners that share a port and bind address share one socket, so they must share
        # the protocol, their host names must not overlap, and at most one may be "basic" (no host
        # names: it takes every host the others do not). A wildcard bind excludes other binds.
        wildcard = ("0.0.0.0", "::")
        by_port: dict[int, list[tuple[int, ListenerConfig]]] = {}
        for i, lst in enumerate(listener_list):
            if lst is not None:
                by_port.setdefault(lst.port, []).append((i, lst))
        for port, members in by_port.items():
            first_at: dict[str, int] = {}
            basic_at: dict[str, int] = {}
            hosts: dict[tuple[str, str], int] = {}
            for i, lst in members:
                other = next((j for b, j in first_at.items()
                              if b != lst.bind and (b in wildcard or lst.bind in wildcard)), None)
                key = item_key("listeners", i, lst.name)
                if other is not None:
                    add(f"{key}.bind", f"port {port} is already bound on "
                        f"{listener_list[other].bind} by listener {listener_list[other].name!r}")
                    continue
                j = first_at.setdefault(lst.bind, i)
                if lst.protocol != listener_list[j].protocol:
                    add(f"{key}.protocol",
                        f"port {port} is {listener_list[j].protocol} for listener "
                        f"{listener_list[j].name!r}; listeners sharing a port share its protocol")
                elif lst.client_verify != listener_list[j].client_verify:
                    # Whether a certificate is asked for is fixed when the connection is
                    # accepted, before SNI picks the listener (RFC 8446 section 4.3.2).
                    add(f"{key}.client_verify",
                        f"port {port} has client_verify = {listener_list[j].client_verify!r} for "
                        f"listener {listener_list[j].name!r}; listeners sharing a port share it")
                for socket_key in SOCKET_KEYS:
                    # They act before the Host header says which listener a request is for.
                    if getattr(lst, socket_key) != getattr(listener_list[j], socket_key):
                        add(f"{key}.{socket_key}",
                            f"differs from listener {listener_list[j].name!r} on port {port}; "
                            "listeners sharing a port share it")
                if not lst.host_names:
                    if lst.bind in basic_at:
                        add(f"{key}.host_names",
                            f"listener {listener_list[basic_at[lst.bind]].name!r} already takes every "
                            f"host on port {port}; give one of them host_names")
                    basic_at.setdefault(lst.bind, i)
                for host in lst.host_names:
                    if (lst.bind, host) in hosts:
                        add(f"{key}.host_names", f"{host!r} on port {port} is also claimed by "
                            f"listener {listener_list[hosts[(lst.bind, host)]].name!r}")
                    hosts.setdefault((lst.bind, host), i)

        # Every listener should be reachable by some rule; a listener no rule names answers 404
        # to everything, which is nearly always a mistake.
        named = {r.listener for r in rule_list if r is not None}
        for name, (i, _) in listeners.items():
            if name not in named and rule_list:
                self.problems.warn(f"{item_key('listeners', i, name)}.name",
                                   f"no rule uses listener {name!r}: it will answer 404 to everything")


# --------------------------------------------------------------------------------------------
# WAF exclusions: checked here and, before loading them, by the WAF (waf.py) with this function.

# What an exclusion may leave out of the CRS rules, as the cloud gateway's exclusion model does:
# request header, cookie and argument values (the collection) or names (its *_NAMES twin: the
# cloud gateway's "...Keys" match variables). Each becomes `SecRuleUpdateTargetByTag "OWASP_CRS"
# "!COLLECTION:name"`, which libmodsecurity accepts for all of them; a whole collection is not
# accepted (that would switch inspection of every header or argument off).
EXCLUSION_COLLECTIONS = ("REQUEST_HEADERS", "REQUEST_COOKIES", "ARGS", "ARGS_GET", "ARGS_POST")
_EXCLUSION_RE = re.compile(
    # The name is a literal or a /regex/; in a target list "|" and "," separate targets and "!"
    # negates, and quotes or spaces would end the directive's argument.
    r"^(?:%s)(?:_NAMES)?:[^\s\"'\\|,!]+$" % "|".join(EXCLUSION_COLLECTIONS))


def exclusion_problem(target: Any) -> str | None:
    """Why `target` is not a valid WAF exclusion ("ARGS:token", "REQUEST_HEADERS_NAMES:/^x-/"),
    or None when it is."""
    if isinstance(target, str) and _EXCLUSION_RE.match(target):
        return None
    return (f"{target!r} must be COLLECTION:name with COLLECTION one of "
            f"{', '.join(EXCLUSION_COLLECTIONS)} (values) or the same with _NAMES (names), and "
            "name a literal or a /regex/ without spaces, quotes, '\\', '|', ',' or '!'")


# --------------------------------------------------------------------------------------------
# Small parsers shared with routing and the CLI.


def _split_host_port(value: str) -> tuple[str | None, int | None]:
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None, None
        host, rest = value[1:end], value[end + 1:]
        if not rest:
            return host, None
        if not rest.startswith(":") or not rest[1:].isdigit():
            return None, None
        return host, int(rest[1:])
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        if not port.isdigit():
            return None, None
        return host, int(port)
    if value.count(":") > 1:  # a bare IPv6 address
        return value, None
    return value, None


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*$")  # RFC 3986 section 3.1


def parse_origin(text: str, *, wildcard: bool = False) -> tuple[str, str, int] | None:
    """An origin as (scheme, host, port), compared as RFC 6454 section 6.1 serialises it: scheme
    and host lower-case, the port number always present (the scheme's default when omitted);
    None if `text` is not SCHEME://HOST[:PORT] (a path, user info or "null" are not origins).
    With `wildcard`, "https://*.example.com" gives the host ".example.com": a suffix."""
    scheme, sep, rest = text.strip().partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME_RE.match(scheme) or not rest or any(c in rest for c in "/?#@ "):
        return None
    host, port = _split_host_port(rest)
    if not host:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
        if port is None:
            return None
    if not 1 <= port <= 65535:
        return None
    if rest.startswith("["):  # an IPv6 literal, kept in brackets as serialised
        try:
            return scheme, f"[{ipaddress.IPv6Address(host).compressed}]", port
        except ValueError:
            return None
    normalized = _normalize_host_pattern(host)
    if normalized is None:
        return None
    if normalized.startswith("*."):
        return (scheme, normalized[1:], port) if wildcard else None
    return scheme, normalized, port


def _parse_server(raw: str) -> ServerAddress | str:
    host, port = _split_host_port(raw.strip())
    if not host:
        return f"{raw!r} must be HOST or HOST:PORT"
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} in {raw!r} is out of range (1-65535)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if _normalize_host_pattern(host) is None or host.startswith("*"):
            return f"{raw!r}: {host!r} is neither an IP address nor a host name"
    return ServerAddress(host=host, port=port)


def _normalize_host_pattern(host: str) -> str | None:
    """Lower-case a host name or `*.suffix` wildcard; None if it is not one."""
    host = host.strip().lower().rstrip(".")
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if labels[0] == "*":
        if len(labels) < 2:
            return None
        labels = labels[1:]
    return host if all(_LABEL_RE.match(label) for label in labels) else None


def _is_host(value: str) -> bool:
    """A plain host name or IP literal, optionally with :PORT (for Host header overrides)."""
    host, port = _split_host_port(value)
    if not host or (port is not None and not 1 <= port <= 65535):
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return "*" not in host and _normalize_host_pattern(host) is not None


def _parse_status_range(item: Any) -> tuple[int, int] | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return (item, item) if 100 <= item <= 599 else None
    if isinstance(item, str):
        lo, sep, hi = item.strip().partition("-")
        if lo.isdigit() and (not sep or hi.isdigit()):
            a, b = int(lo), int(hi) if sep else int(lo)
            if 100 <= a <= b <= 599:
                return a, b
    return None


def _check_path_pattern(p: str) -> str | None:
    if not p.startswith("/"):
        return f"{p!r} must start with '/'"
    if "*" in p[:-1]:
        return f"{p!r}: '*' is allowed only at the end of a path"
    if "?" in p or "#" in p:
        return f"{p!r} must not contain a query or fragment"
    if any(c.isspace() for c in p):
        return f"{p!r} must not contain spaces"
    return None
