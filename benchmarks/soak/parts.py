"""The three parts of the soak benchmark, each run against a freshly started proxy.

hold   N sessions opened 200 at a time, RSS per idle session, a 10 s hold, one echo on every
       session, Close 1000 on every session.
slow   50 healthy sessions measured alone (baseline), then alongside 1,000 stalled ones that a
       pushing backend (wspush, /push) keeps filling: the proxy's RSS per stalled session and
       the healthy sessions' echo latency.
storm  the proxy is restarted, then N sessions are opened at once (every connect() issued
       before the first answer is read): handshakes per second until all N have their 101.

Every step is bounded: the client enforces each command's deadline, the harness waits a little
longer as a backstop, and all waits for the proxy to settle have a timeout.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..e2e.procs import cpu_seconds, free_port
from ..e2e.proxies import ProxyContext
from .runner import (
    Backend,
    Client,
    RunningProxy,
    SoakProxy,
    listen_backlog,
    proxy_queued_bytes,
    settle_rss,
    tcp_mem_pages,
    tcp_mem_pressure_pages,
    tree_cpu_s,
    tree_fds,
    tree_rss_kib,
)

HOLD_CONCURRENCY = 200
HOLD_PATH = "/soak"
OPEN_TIMEOUT = 120.0         # s, for opening all N sessions (hold) or the storm
STEP_TIMEOUT = 60.0          # s, for echoing or closing all sessions
BACKSTOP = 30.0              # s the harness waits beyond a command's own deadline
HEALTHY = 50
LATENCY_COUNT = 10_000       # round trips per latency round
LATENCY_PERIOD_US = 10_000   # each healthy session sends every 10 ms: 5,000 messages/s in all
LATENCY_ROUNDS = 3           # per condition; the median round's percentiles are reported, since
                             # this VM's cross-core wake-ups alone have a p99 of several ms
PUSH_LIMIT = 4 << 20         # bytes wspush sends a stalled session at most
FILL_TIMEOUT = 60.0          # s to wait for the stalled sessions' pipelines to fill


@dataclass(frozen=True)
class Env:
    tools: dict[str, Path]
    sessions: int            # N
    nofile: int              # the hard RLIMIT_NOFILE, also nginx's worker_rlimit_nofile
    fastgw: str
    root: Path               # scratch directory
    hold_s: float = 10.0
    stalled: int = 1000


class Deployment:
    """Backend + proxy (+ client) of one part; `stack()` tears them down in reverse order."""

    def __init__(self, env: Env, spec: SoakProxy, part: str, backend_argv: list[str]):
        self.workdir = env.root / f"{part}-{spec.name}"
        self.workdir.mkdir()
        self.env = env
        self.backend = Backend(self.workdir, backend_argv, Path(backend_argv[0]).name)
        self.ctx = ProxyContext(self.workdir, free_port(), "127.0.0.1", self.backend.port)
        self.proxy = RunningProxy(spec, self.ctx, env.fastgw, env.nofile)
        self.client: Client | None = None

    def connect_client(self) -> Client:
        self.client = Client(self.env.tools["wssoak"], self.ctx.listen_port, self.workdir)
        need = max(self.env.sessions, self.env.stalled + HEALTHY) + 16
        if self.client.nofile < need:
            raise RuntimeError(f"the client may open only {self.client.nofile} descriptors, "
                               f"{need} are needed")
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.proxy.stop()
        self.backend.stop()


@contextlib.contextmanager
def stack(env: Env, spec: SoakProxy, part: str, backend_argv: list[str]) -> Iterator[Deployment]:
    dep = Deployment(env, spec, part, backend_argv)
    try:
        yield dep
    except Exception as e:
        raise RuntimeError(f"{e}\n--- {spec.name} log ---\n{dep.proxy.log_tail()}") from e
    finally:
        dep.close()


class CpuMeter:
    """CPU time of the proxy's tree and of the client over a step, as shares of one core: tells
    which side bounded a rate (the proxy near 100 %, or the client)."""

    def __init__(self, dep: Deployment):
        self.dep = dep
        self.t0 = time.monotonic()
        self.proxy0 = tree_cpu_s(dep.proxy.pid)
        self.client0 = cpu_seconds(dep.client.popen.pid) or 0.0

    def shares(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {"proxy": (tree_cpu_s(self.dep.proxy.pid) - self.proxy0) / dt,
                "client": ((cpu_seconds(self.dep.client.popen.pid) or 0.0) - self.client0) / dt}


def _failures(res: dict) -> dict[str, str]:
    """{reason: "count: first message"} from a client answer's fail_*/why_* keys."""
    return {k[5:]: f"{v}: {res.get('why_' + k[5:], '')}" for k, v in res.items()
            if k.startswith("fail_")}


def hold(env: Env, spec: SoakProxy) -> dict:
    n = env.sessions
    with stack(env, spec, "hold", [str(env.tools["wsecho"])]) as dep:
        dep.proxy.start()
        rss0, _ = settle_rss(dep.proxy.pid, timeout=10)
        fds0 = tree_fds(dep.proxy.pid)
        client = dep.connect_client()
        meter = CpuMeter(dep)
        opened = client.cmd(f"open 0 {n} {HOLD_CONCURRENCY} {HOLD_PATH} {OPEN_TIMEOUT}",
                            OPEN_TIMEOUT + BACKSTOP)
        open_cpu = meter.shares()
        rss1, settle_s = settle_rss(dep.proxy.pid)
        fds1 = tree_fds(dep.proxy.pid)
        cpu0 = tree_cpu_s(dep.proxy.pid)
        time.sleep(env.hold_s)
        cpu1 = tree_cpu_s(dep.proxy.pid)
        rss2 = tree_rss_kib(dep.proxy.pid)
        echo = client.cmd(f"echo 0 {STEP_TIMEOUT}", STEP_TIMEOUT + BACKSTOP)
        closed = client.cmd(f"close 0 {STEP_TIMEOUT}", STEP_TIMEOUT + BACKSTOP)
        ok = int(opened["ok"])
        return {
            "sessions": n, "concurrency": HOLD_CONCURRENCY,
            "opened": ok, "open_s": opened["elapsed_s"],
            "open_rate": ok / opened["elapsed_s"] if opened["elapsed_s"] else None,
            "handshake_ms": {k[6:]: v for k, v in opened.items() if k.startswith("hs_ms_")},
            "open_cpu": open_cpu, "open_failures": _failures(opened),
            "rss_before_kib": rss0, "rss_open_kib": rss1, "rss_settle_s": settle_s,
            "rss_after_hold_kib": rss2,
            "rss_per_session_kib": (rss1 - rss0) / ok if ok else None,
            "fds_before": fds0, "fds_open": fds1,
            "hold_s": env.hold_s, "hold_cpu": (cpu1 - cpu0) / env.hold_s,
            "echoed": echo["ok"], "dead_before_echo": echo["dead"],
            "echo_ms": {k[7:]: v for k, v in echo.items() if k.startswith("rtt_ms_")},
            "echo_failures": _failures(echo),
            "close_asked": closed["asked"], "closed_1000": closed["close_1000"],
            "closed_other": closed["close_other"], "tcp_closed_by_proxy": closed["tcp_closed"],
            "close_failures": _failures(closed),
        }


def _latency(client: Client) -> dict:
    """LATENCY_ROUNDS rounds of the healthy sessions' echoes: the median of each percentile over
    the rounds, every round's figures, and all failures."""
    timeout = LATENCY_COUNT / (HEALTHY * 1e6 / LATENCY_PERIOD_US) * 3 + 10
    rounds, failures = [], {}
    for _ in range(LATENCY_ROUNDS):
        r = client.cmd(f"latency 0 {LATENCY_COUNT} {LATENCY_PERIOD_US} {timeout:.0f}",
                       timeout + BACKSTOP)
        failures.update(_failures(r))
        rounds.append({"round_trips": r["ok"], "seconds": r["elapsed_s"],
                       **{k[7:]: v for k, v in r.items() if k.startswith("lat_us_")}})
    out = {q: statistics.median(r[q] for r in rounds) for q in ("p50", "p90", "p99", "max")
           if all(q in r for r in rounds)}
    return {**out, "round_trips": sum(r["round_trips"] for r in rounds), "rounds": rounds,
            "failures": failures}


def _wait_filled(dep: Deployment, stalled: int) -> tuple[dict, float]:
    """Wait until the backend has stopped pushing: every stalled session is either blocked
    (its socket full: the proxy stopped reading it) or at the push limit, and nothing moved for
    2 s.  Returns the backend's counters and the seconds waited."""
    t0 = time.monotonic()
    last = dep.backend.push_stats()
    still = 0
    while time.monotonic() - t0 < FILL_TIMEOUT:
        time.sleep(1.0)
        now = dep.backend.push_stats()
        still = still + 1 if now["pushed"] == last["pushed"] else 0
        last = now
        if still >= 2 and now["blocked"] + now["at_limit"] >= min(stalled, now["push_sessions"]):
            break
    return last, time.monotonic() - t0


def slow(env: Env, spec: SoakProxy) -> dict:
    k = env.stalled
    backend = [str(env.tools["wspush"]), "-l", str(PUSH_LIMIT)]
    with stack(env, spec, "slow", backend) as dep:
        dep.proxy.start()
        client = dep.connect_client()
        healthy = client.cmd(f"open 0 {HEALTHY} {HEALTHY} /healthy {STEP_TIMEOUT}",
                             STEP_TIMEOUT + BACKSTOP)
        if healthy["ok"] != HEALTHY:
            raise RuntimeError(f"only {healthy['ok']} of {HEALTHY} healthy sessions opened: "
                               f"{_failures(healthy)}")
        baseline = _latency(client)
        rss0, _ = settle_rss(dep.proxy.pid, timeout=10)
        tcp0 = tcp_mem_pages()
        stalled = client.cmd(f"open 1 {k} {HOLD_CONCURRENCY} /push {STEP_TIMEOUT} stall",
                             STEP_TIMEOUT + BACKSTOP)
        push, fill_s = _wait_filled(dep, k)
        rss1, settle_s = settle_rss(dep.proxy.pid)
        tcp1 = tcp_mem_pages()
        queued = proxy_queued_bytes(dep.ctx.listen_port, dep.backend.port)
        cpu0 = tree_cpu_s(dep.proxy.pid)
        time.sleep(2.0)
        idle_cpu = (tree_cpu_s(dep.proxy.pid) - cpu0) / 2.0
        with_stalled = _latency(client)
        push_end = dep.backend.push_stats()
        dropped = client.cmd("drop 1", BACKSTOP)
        after = _latency(client)
        closed = client.cmd(f"close 0 {STEP_TIMEOUT}", STEP_TIMEOUT + BACKSTOP)
        ok = int(stalled["ok"])
        page = os.sysconf("SC_PAGE_SIZE")
        return {
            "healthy": HEALTHY, "stalled": k, "stalled_opened": ok,
            "stalled_failures": _failures(stalled), "push_limit": PUSH_LIMIT,
            "fill_s": fill_s, "push_after_fill": push, "push_at_end": push_end,
            "stalled_still_open": dropped["established"],
            "rss_before_kib": rss0, "rss_stalled_kib": rss1, "rss_settle_s": settle_s,
            "rss_per_stalled_kib": (rss1 - rss0) / ok if ok else None,
            "kernel_queued_per_stalled_kib": queued / 1024 / ok if ok else None,
            "tcp_mem_mib_machine": {"before": tcp0 * page / 2**20, "stalled": tcp1 * page / 2**20,
                                    "pressure_at": tcp_mem_pressure_pages() * page / 2**20},
            "idle_cpu_stalled": idle_cpu,
            "latency_baseline_us": baseline, "latency_stalled_us": with_stalled,
            "latency_after_us": after,
            "p99_ratio": (with_stalled["p99"] / baseline["p99"]
                          if "p99" in with_stalled and "p99" in baseline else None),
            "healthy_closed_1000": closed["close_1000"], "close_failures": _failures(closed),
        }


def _netstat(*keys: str) -> dict[str, int]:
    """TcpExt counters of /proc/net/netstat (machine-wide)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], map(int, values.split()[1:])))
            return {k: table.get(k, 0) for k in keys}
    return {k: 0 for k in keys}


def storm(env: Env, spec: SoakProxy) -> dict:
    n = env.sessions
    with stack(env, spec, "storm", [str(env.tools["wsecho"])]) as dep:
        dep.proxy.start()
        t0 = time.monotonic()
        dep.proxy.stop()
        stop_s = time.monotonic() - t0
        start_s = dep.proxy.start()      # the restart, on the same port
        backlog = listen_backlog(dep.ctx.listen_port)
        client = dep.connect_client()
        keys = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "TCPReqQFullDoCookies")
        net0 = _netstat(*keys)
        meter = CpuMeter(dep)
        r = client.cmd(f"open 0 {n} {n} {HOLD_PATH} {OPEN_TIMEOUT}", OPEN_TIMEOUT + BACKSTOP)
        cpu = meter.shares()
        net1 = _netstat(*keys)
        closed = client.cmd(f"close 0 {STEP_TIMEOUT}", STEP_TIMEOUT + BACKSTOP)
        ok = int(r["ok"])
        return {
            "sessions": n, "concurrency": n, "stop_s": stop_s, "start_s": start_s,
            "listen_backlog": backlog, "opened": ok, "elapsed_s": r["elapsed_s"],
            "rate": ok / r["elapsed_s"] if r["elapsed_s"] else None,
            "connects_issued_s": r["connects_issued_s"], "cpu": cpu,
            "handshake_ms": {k[6:]: v for k, v in r.items() if k.startswith("hs_ms_")},
            "failures": _failures(r),
            "kernel_machine_wide": {k: net1[k] - net0[k] for k in keys},
            "closed_1000": closed["close_1000"], "close_failures": _failures(closed),
        }


PARTS = {"hold": hold, "slow": slow, "storm": storm}
