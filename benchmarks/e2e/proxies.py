"""The proxy registry: name -> how to start it in front of the echo backend.

A proxy is described by a ProxySpec.  Its ``prepare(ctx)`` writes whatever configuration it needs
into ``ctx.workdir`` and returns the command line that runs it in the foreground, listening on
``127.0.0.1:ctx.listen_port`` and proxying every path to ``ctx.backend_host:ctx.backend_port``
(WebSocket upgrades and plain HTTP/1.1).  The harness prefixes the command with
``taskset -c <proxy cpus>``, waits for the port, then accounts the CPU time of the started process
and all its descendants (e.g. nginx master + worker, fastgw supervisor + workers), and stops it
with ``stop_signal`` at the end.  ``prepare`` returning None means "no proxy": the load generator
connects straight to the backend (the "direct" reference).

``unavailable()`` returns None when the proxy can run here, or the reason to skip it.
``required=False`` proxies are skipped (not failed) when they cannot start at all.

To add a proxy: ``register(ProxySpec(name=..., prepare=..., unavailable=...))``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ACCESS_LOG = "access.log"      # in the run's workdir, for the *-accesslog entries


@dataclass(frozen=True)
class ProxyContext:
    workdir: Path          # private scratch directory for this run (configs, logs, pid files)
    listen_port: int       # the proxy must listen on 127.0.0.1:listen_port
    backend_host: str      # the echo backend (WebSocket echo + HTTP keep-alive on one port)
    backend_port: int


@dataclass(frozen=True)
class ProxySpec:
    name: str
    prepare: Callable[[ProxyContext], list[str] | None]
    unavailable: Callable[[], str | None] = lambda: None
    required: bool = True           # False: a failure to start is a skip, not an error
    min_processes: int = 1          # wait for this many processes (nginx: master + worker)
    stop_signal: int = signal.SIGTERM
    ready_timeout: float = 15.0
    description: str = ""


REGISTRY: dict[str, ProxySpec] = {}
DEFAULT_PROXIES = ("direct", "nginx", "fastgw")


def register(spec: ProxySpec) -> ProxySpec:
    REGISTRY[spec.name] = spec
    return spec


# ------------------------------------------------------------------------------------- direct
register(ProxySpec(
    name="direct",
    prepare=lambda ctx: None,
    description="no proxy: load generator straight to the echo backend (sanity reference)",
))


# -------------------------------------------------------------------------------------- nginx
def nginx_binary() -> str | None:
    return os.environ.get("FASTGW_BENCH_NGINX") or shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def _nginx_unavailable() -> str | None:
    if not nginx_binary():
        return "nginx is not installed (apt-get install -y nginx)"
    return None


def render_nginx_conf(ctx: ProxyContext, upstream_keepalive: bool = True, extra: str = "",
                      access_log: str = "off") -> str:
    """nginx.conf.template filled in; `access_log` is the directive's argument ("off", or
    "<file> combined" for the unbatched suite's logging rows)."""
    text = (HERE / "nginx.conf.template").read_text()
    subs = {
        "@PREFIX@": str(ctx.workdir),
        "@LISTEN@": f"127.0.0.1:{ctx.listen_port}",
        "@BACKEND@": f"{ctx.backend_host}:{ctx.backend_port}",
        # upstream keep-alive needs an empty Connection header on plain requests
        "@NO_UPGRADE_CONNECTION@": "''" if upstream_keepalive else "close",
        "@UPSTREAM_KEEPALIVE@": "keepalive 64;" if upstream_keepalive else "# no upstream keepalive",
        "@EXTRA_LOCATION@": extra,
        "@ACCESS_LOG@": access_log,
    }
    for k, v in subs.items():
        text = text.replace(k, v)
    return text


def _nginx_prepare(upstream_keepalive: bool, extra: str = "",
                   access_log: bool = False) -> Callable[[ProxyContext], list[str]]:
    def prepare(ctx: ProxyContext) -> list[str]:
        conf = ctx.workdir / "nginx.conf"
        log = f"{ctx.workdir / ACCESS_LOG} combined" if access_log else "off"
        conf.write_text(render_nginx_conf(ctx, upstream_keepalive, extra, log))
        return [nginx_binary(), "-p", str(ctx.workdir), "-c", str(conf),
                "-e", str(ctx.workdir / "error.log"), "-g", "daemon off;"]
    return prepare


register(ProxySpec(
    name="nginx",
    prepare=_nginx_prepare(upstream_keepalive=True),
    unavailable=_nginx_unavailable,
    min_processes=2,
    stop_signal=signal.SIGTERM,     # fast shutdown; SIGQUIT would wait for WebSocket sessions
    description="Debian nginx, 1 worker, WebSocket reverse proxy, upstream keepalive 64",
))

register(ProxySpec(
    name="nginx-accesslog",
    prepare=_nginx_prepare(upstream_keepalive=True, access_log=True),
    unavailable=_nginx_unavailable,
    min_processes=2,
    description="as nginx, with `access_log <workdir>/access.log combined;` (unbuffered)",
))

register(ProxySpec(
    name="nginx-nokeepalive",
    prepare=_nginx_prepare(upstream_keepalive=False),
    unavailable=_nginx_unavailable,
    min_processes=2,
    description="as nginx, without upstream keep-alive (Connection: close to the backend)",
))

register(ProxySpec(
    name="nginx-buf64k",
    prepare=_nginx_prepare(upstream_keepalive=True, extra="proxy_buffer_size 64k; "
                           "proxy_buffers 8 64k; proxy_busy_buffers_size 128k;"),
    unavailable=_nginx_unavailable,
    min_processes=2,
    description="as nginx, with proxy_buffer_size 64k (the WebSocket relay buffer per direction)",
))


# ------------------------------------------------------------------------------------- fastgw
def fastgw_binary() -> str | None:
    env = os.environ.get("FASTGW_BENCH_FASTGW")
    if env:
        return env
    venv_bin = Path(sys.executable).parent / "fastgw"
    if venv_bin.exists():
        return str(venv_bin)
    return shutil.which("fastgw")


# Appended to the rule with FASTGW_BENCH_REWRITE=on (and FASTGW_INSTR_REWRITE=on in
# benchmarks/instructions.py): a rewrite rule set of three rules, a request header from a
# variable, one from a condition's capture, a response header set and one deleted.
REWRITE_SET = """rewrite_rule_set = "bench"
[[rewrite_rule_sets]]
name = "bench"
  [[rewrite_rule_sets.rules]]
  name = "port"
  sequence = 1
  request_headers = { "X-Client-Port" = "{var_client_port}" }
  [[rewrite_rule_sets.rules]]
  name = "section"
  sequence = 2
  conditions = [ { variable = "uri_path", pattern = "^/(\\\\w+)" } ]
  request_headers = { "X-Section" = "{var_uri_path_1}" }
  [[rewrite_rule_sets.rules]]
  name = "response"
  sequence = 3
  response_headers = { "X-Frame-Options" = "DENY", "Server" = "" }
"""


def fastgw_config(ctx: ProxyContext, access_log: str = "off") -> str:
    """The smallest fastgw config that proxies everything on one port to the echo backend
    (DESIGN.md section 5 keys).  `access_log` is "off" (as nginx's access_log off) or a file
    path (the unbatched suite's logging rows); FASTGW_BENCH_REWRITE=on adds REWRITE_SET."""
    return f"""\
# generated by benchmarks/e2e/proxies.py
[gateway]
workers = {int(os.environ.get("FASTGW_BENCH_WORKERS", "1"))}
access_log = {json.dumps(access_log)}
upstream_keepalive = 64       # as nginx's upstream keepalive 64

[[listeners]]
name = "bench"
port = {ctx.listen_port}
bind = "127.0.0.1"
protocol = "http"

[[backend_pools]]
name = "echo"
servers = ["{ctx.backend_host}:{ctx.backend_port}"]

[[backend_settings]]
name = "echo-settings"
protocol = "http"
port = {ctx.backend_port}
request_timeout = 60

[[rules]]
name = "bench-rule"
type = "basic"
listener = "bench"
backend_pool = "echo"
backend_settings = "echo-settings"
""" + (REWRITE_SET if os.environ.get("FASTGW_BENCH_REWRITE") == "on" else "")


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _fastgw_unavailable() -> str | None:
    exe = fastgw_binary()
    if not exe:
        return "fastgw is not installed (pip install -e . in the venv)"
    try:
        r = _run([exe, "--version"])
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`fastgw --version` failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        return f"`fastgw --version` exited {r.returncode} ({tail[0]}): the CLI is not implemented yet"
    return None


def _fastgw_prepare(ctx: ProxyContext, extra: str = "", access_log: bool = False) -> list[str]:
    exe = fastgw_binary()
    conf = ctx.workdir / "fastgw.toml"
    log = str(ctx.workdir / ACCESS_LOG) if access_log else "off"
    conf.write_text(fastgw_config(ctx, log) + extra)
    r = _run([exe, "check", str(conf)])
    if r.returncode != 0:
        raise ProxyUnavailable(f"`fastgw check` rejected the benchmark config (exit {r.returncode}):\n"
                               f"{(r.stderr or r.stdout).strip()}\n--- config ---\n{conf.read_text()}")
    return [exe, "serve", str(conf)]


class ProxyUnavailable(RuntimeError):
    """Raised by prepare() when the proxy cannot run here (a skip for required=False proxies)."""


register(ProxySpec(
    name="fastgw",
    prepare=_fastgw_prepare,
    unavailable=_fastgw_unavailable,
    required=False,
    min_processes=1,
    stop_signal=signal.SIGTERM,
    description="fastgw serve (workers = $FASTGW_BENCH_WORKERS, default 1)",
))

register(ProxySpec(
    name="fastgw-accesslog",
    prepare=lambda ctx: _fastgw_prepare(ctx, access_log=True),
    unavailable=_fastgw_unavailable,
    required=False,
    min_processes=1,
    stop_signal=signal.SIGTERM,
    description='as fastgw, with its access log to a file (access_log = "<workdir>/access.log")',
))


# The WAF's cost: the same fastgw with the OWASP CRS (Debian's modsecurity-crs) in
# detection and in prevention mode; compare with FASTGW_BENCH_REFERENCE=fastgw.
_CRS = os.environ.get("FASTGW_CRS_PATH", "/usr/share/modsecurity-crs")


def _waf_unavailable() -> str | None:
    if not os.path.isdir(os.path.join(_CRS, "rules")):
        return f"no OWASP CRS in {_CRS} (apt-get install modsecurity-crs)"
    return _fastgw_unavailable()


for _mode in ("detection", "prevention"):
    register(ProxySpec(
        name=f"fastgw-waf-{_mode}",
        prepare=lambda ctx, mode=_mode: _fastgw_prepare(
            ctx, f'\n[waf]\nmode = "{mode}"\ncrs_path = "{_CRS}"\n'),
        unavailable=_waf_unavailable,
        required=False,
        min_processes=1,
        stop_signal=signal.SIGTERM,
        description=f"fastgw with the OWASP CRS in {_mode} mode",
    ))


def selected() -> list[ProxySpec]:
    names = os.environ.get("FASTGW_BENCH_PROXIES")
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else list(DEFAULT_PROXIES)
    unknown = [n for n in wanted if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown proxies {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in wanted]
