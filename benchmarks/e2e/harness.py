"""Scenario runner: deploy (echo backend + proxy, pinned), run the C load generator, account CPU.

One measurement = one run of ``wsload``: a warm-up, then a window of exactly ``seconds``.  At both
edges of the window the generator itself samples /proc/stat and /proc/PID/stat of the proxy's
processes, of the backend and of itself, so CPU times and counts cover the same interval.

Derived figures (see Result):
  throughput       count / window, in the scenario's unit (msg/s, MB/s = 10^6 payload bytes/s
                   echoed back to the client, handshakes/s, requests/s)
  proxy_cpu_s      user+sys of all the proxy's processes over the window (/proc/PID/stat)
  per_cpu_s        count (in the unit) per proxy CPU-second = throughput * window / proxy_cpu_s
  load_core_busy   busy share of the core(s) running generator + backend (/proc/stat)
  verdict          "proxy-bound" when the load core had headroom (< 85 % busy) or the proxy core
                   was saturated (>= 95 %); "co-limited" otherwise (both cores nearly full: the
                   proxy's per-CPU figure is then taken below saturation); "NOISY" when other
                   processes took more than max_foreign of one of our cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from . import build as _build
from .procs import CLK_TCK, Proc, ProcessExited, free_port, pin_prefix
from .proxies import ProxyContext, ProxySpec, ProxyUnavailable

LOAD_CORE_LIMIT = 0.85      # load core busier than this: the generator may be the bottleneck ...
PROXY_CORE_SATURATED = 0.95  # ... unless the proxy core is saturated anyway


# ------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str                  # wsload mode: ws | hs | http
    conns: int
    window: int = 1            # messages in flight per connection (ws)
    size: int = 64             # payload bytes per message (ws)
    unit: str = "msg/s"
    count_key: str = "messages"
    scale: float = 1.0         # count -> unit (payload bytes -> MB)
    latency: bool = False
    target: float | None = None  # fastgw / nginx per proxy CPU-second, at least
    pause_us: int = 0          # generator/backend batching pause (-B), throughput scenarios only
    zerocopy: bool = False     # zero mask key + sendfile/MSG_TRUNC/splice on the load side (-Z)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("ws_64B", "WebSocket echo, 64 B messages, 64 conns x 256 in flight",
             "ws", conns=64, window=256, size=64, unit="msg/s", count_key="messages",
             target=1.0, pause_us=200),
    Scenario("ws_64KiB", "WebSocket echo, 64 KiB messages, 16 conns x 4 in flight",
             "ws", conns=16, window=4, size=64 * 1024, unit="MB/s", count_key="payload_bytes",
             scale=1e-6, target=1.0, pause_us=200, zerocopy=True),
    Scenario("ws_1MiB", "WebSocket echo, 1 MiB messages, 8 conns x 2 in flight",
             "ws", conns=8, window=2, size=1024 * 1024, unit="MB/s", count_key="payload_bytes",
             scale=1e-6, target=1.0, pause_us=200, zerocopy=True),
    Scenario("ws_handshake", "WebSocket handshakes (open, Close 1000, disconnect), 32 concurrent",
             "hs", conns=32, unit="hs/s", count_key="handshakes", target=0.6),
    Scenario("http_keepalive", "HTTP/1.1 keep-alive GETs, 64 conns, 1 in flight each",
             "http", conns=64, unit="req/s", count_key="responses", target=0.5, pause_us=100),
    Scenario("ws_latency", "WebSocket round trip, 64 B, 1 conn, 1 message in flight",
             "ws", conns=1, window=1, size=64, unit="msg/s", count_key="messages", latency=True),
)
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


def selected_scenarios() -> list[Scenario]:
    """The scenarios of $FASTGW_BENCH_SCENARIOS (default all); $FASTGW_BENCH_PAUSE_US overrides
    the batching pause of the scenarios that have one (0 = plain closed loop);
    FASTGW_BENCH_ZEROCOPY=0 turns the zero-copy load side off."""
    names = os.environ.get("FASTGW_BENCH_SCENARIOS")
    wanted = [n.strip() for n in names.split(",") if n.strip()] if names else list(SCENARIO_BY_NAME)
    unknown = [n for n in wanted if n not in SCENARIO_BY_NAME]
    if unknown:
        raise KeyError(f"unknown scenarios {unknown}; known: {list(SCENARIO_BY_NAME)}")
    out = [SCENARIO_BY_NAME[n] for n in wanted]
    pause = os.environ.get("FASTGW_BENCH_PAUSE_US")
    if pause is not None:
        out = [dataclasses.replace(sc, pause_us=int(pause)) if sc.pause_us else sc for sc in out]
    if os.environ.get("FASTGW_BENCH_ZEROCOPY", "1") in ("0", ""):
        out = [dataclasses.replace(sc, zerocopy=False) for sc in out]
    return out


def cases(rounds: int = 1) -> list[tuple[int, Scenario, "ProxySpec"]]:
    """(round, scenario, proxy) in run order: round by round, scenario by scenario, so that the
    proxies compared on a scenario are measured seconds apart and rounds interleave."""
    from .proxies import selected
    proxies = selected()
    return [(r, sc, px) for r in range(max(1, rounds)) for sc in selected_scenarios() for px in proxies]


# -------------------------------------------------------------------------------- settings
def _cpu_list(cpus: str) -> list[int]:
    out: list[int] = []
    for part in cpus.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


@dataclass(frozen=True)
class Settings:
    seconds: float = 3.0          # measurement window per run
    warmup: float = 1.0           # before the window (connections, handshakes, verification)
    rounds: int = 1               # the whole scenario x proxy list is run this many times,
                                  # interleaved; medians (and median paired ratios) are reported
    proxy_cpus: str = "0"         # taskset list for the proxy ("" = unpinned)
    load_cpus: str = "1"          # taskset list for generator + backend ("" = unpinned)
    reference: str = "nginx"      # ratios are other proxies / this one
    keep: bool = False            # keep the scratch directory (configs, logs)
    max_foreign: float = 0.10     # a run with more foreign CPU load than this on a core is noisy ...
    retries: int = 2              # ... and is retried up to this many times (the quietest is kept)
    quiet_wait: float = 10.0      # before a run, wait up to this long for our cores to be idle

    @classmethod
    def from_env(cls) -> "Settings":
        e = os.environ.get
        return cls(
            seconds=float(e("FASTGW_BENCH_SECONDS", "3")),
            warmup=float(e("FASTGW_BENCH_WARMUP", "1")),
            rounds=int(e("FASTGW_BENCH_ROUNDS", "1")),
            proxy_cpus=e("FASTGW_BENCH_PROXY_CPUS", "0"),
            load_cpus=e("FASTGW_BENCH_LOAD_CPUS", "1"),
            reference=e("FASTGW_BENCH_REFERENCE", "nginx"),
            keep=e("FASTGW_BENCH_KEEP", "") not in ("", "0"),
            max_foreign=float(e("FASTGW_BENCH_MAX_FOREIGN", "0.10")),
            retries=int(e("FASTGW_BENCH_RETRIES", "2")),
            quiet_wait=float(e("FASTGW_BENCH_QUIET_WAIT", "10")),
        )


# ---------------------------------------------------------------------------------- results
@dataclass
class Result:
    scenario: str
    proxy: str
    unit: str
    window_s: float
    count: float                     # in the unit's numerator (messages, MB, handshakes, requests)
    throughput: float                # count / window_s
    proxy_cpu_s: float | None        # None for "direct"
    proxy_cpu_util: float | None     # proxy_cpu_s / window_s (1.0 = one core)
    per_cpu_s: float | None          # count per proxy CPU-second
    proxy_sched_cpu_s: float | None  # the same from /proc/PID/schedstat (ns resolution)
    loadgen_cpu_util: float
    backend_cpu_util: float
    core_busy: dict[str, float]      # "cpu0" -> busy share over the window (/proc/stat)
    core_steal: dict[str, float]
    load_core_busy: float
    proxy_core_busy: float | None
    foreign: dict[str, float]        # per core: busy share not accounted to our pinned processes
    verdict: str
    errors: int = 0
    reconnects: int = 0
    verified_messages: int = 0
    latency_us: dict[str, float] | None = None
    proxy_pids: list[int] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def extra_info(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None}


def parse_wsload(out: str) -> tuple[dict, dict]:
    """-> (results {key: str}, samples {idx: {"t": ns, "stat": {cpuN: [..]}, "pid": {pid: (kind, ut, st, rt)}}})"""
    results: dict[str, str] = {}
    samples: dict[int, dict] = {}
    for line in out.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "result" and len(parts) >= 3:
            results[parts[1]] = " ".join(parts[2:])
        elif parts[0] == "sample":
            s = samples.setdefault(int(parts[1]), {"stat": {}, "pid": {}})
            if parts[2] == "t":
                s["t"] = int(parts[3])
            elif parts[2] == "stat":
                s["stat"][parts[3]] = [int(x) for x in parts[4:]]
            elif parts[2] == "pid":
                s["pid"][int(parts[3])] = (parts[4], int(parts[5]), int(parts[6]), int(parts[7]))
    return results, samples


def read_proc_stat() -> dict[str, list[int]]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            out[parts[0]] = [int(x) for x in parts[1:]]
    return out


def wait_quiet(cores: list[str], threshold: float, max_wait: float, probe: float = 0.3) -> float:
    """Wait (at most max_wait seconds) until every core in `cores` was less than `threshold` busy
    over a `probe`-second interval.  Returns the busiest share seen in the last probe."""
    deadline = time.monotonic() + max_wait
    while True:
        a = {"stat": read_proc_stat()}
        time.sleep(probe)
        busy, _ = _core_shares(a, {"stat": read_proc_stat()})
        worst = max((busy.get(c, 0.0) for c in cores), default=0.0)
        if worst < threshold or time.monotonic() >= deadline:
            return worst
        time.sleep(0.2)


def _core_shares(s0: dict, s1: dict) -> tuple[dict[str, float], dict[str, float]]:
    busy, steal = {}, {}
    for name, a in s0["stat"].items():
        b = s1["stat"].get(name)
        if not b or name == "cpu":
            continue
        d = [y - x for x, y in zip(a, b)]
        d += [0] * (8 - len(d))
        user, nice, system, idle, iowait, irq, softirq, st = d[:8]
        total = sum(d[:8]) or 1
        busy[name] = (user + nice + system + irq + softirq) / total
        steal[name] = st / total
    return busy, steal


# ------------------------------------------------------------------------------- deployment
@dataclass
class Deployment:
    proxy: ProxySpec
    target_port: int                 # where the load generator connects
    backend: Proc
    backend_port: int
    proxy_proc: Proc | None
    proxy_pids: list[int]
    workdir: Path


class Skip(Exception):
    """The proxy cannot run here; the message says why (pytest turns it into a skip)."""


class Bench:
    """A benchmark session: builds the tools once, deploys proxies, measures, keeps results."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self.tools = _build.build()
        self.root = Path(tempfile.mkdtemp(prefix="fastgw-e2e-"))
        self.results: dict[tuple[str, str], Result] = {}      # the median run of each pair
        self.runs: dict[tuple[str, str], list[Result]] = {}    # every round, in order
        self.scenarios: dict[str, Scenario] = {}      # as run (after environment overrides)
        self._n = 0

    def close(self) -> None:
        if not self.settings.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- deployment -------------------------------------------------------------------------
    @contextlib.contextmanager
    def deploy(self, proxy: ProxySpec, scenario: Scenario | None = None) -> Iterator[Deployment]:
        reason = proxy.unavailable()
        if reason:
            raise Skip(f"{proxy.name}: {reason}")
        self._n += 1
        workdir = self.root / f"{self._n:02d}-{proxy.name}"
        workdir.mkdir()
        st = self.settings
        pause = ["-B", str(scenario.pause_us)] if scenario and scenario.pause_us else []
        backend = Proc("wsecho", pin_prefix(st.load_cpus) + [str(self.tools["wsecho"]), "-p", "0", *pause],
                       workdir / "wsecho.log").start()
        proxy_proc: Proc | None = None
        try:
            backend_port = self._wait_ready_line(backend)
            listen_port = free_port()
            ctx = ProxyContext(workdir, listen_port, "127.0.0.1", backend_port)
            try:
                argv = proxy.prepare(ctx)
            except ProxyUnavailable as e:
                if proxy.required:
                    raise
                raise Skip(f"{proxy.name}: {e}") from None
            pids: list[int] = []
            if argv is None:
                target = backend_port
            else:
                target = listen_port
                proxy_proc = Proc(proxy.name, pin_prefix(st.proxy_cpus) + list(argv),
                                  workdir / f"{proxy.name}.log", cwd=workdir).start()
                try:
                    proxy_proc.wait_port(listen_port, proxy.ready_timeout)
                    pids = proxy_proc.settle_tree(proxy.min_processes)
                except (ProcessExited, TimeoutError) as e:
                    if proxy.required:
                        raise
                    raise Skip(f"{proxy.name} did not start listening (not implemented yet?): {e}") from None
            yield Deployment(proxy, target, backend, backend_port, proxy_proc, pids, workdir)
        finally:
            if proxy_proc is not None:
                proxy_proc.stop(proxy.stop_signal)
            backend.stop()

    @staticmethod
    def _wait_ready_line(proc: Proc, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in proc.log_tail(4096).splitlines():
                if line.startswith("READY "):
                    return int(line.split()[1])
            if not proc.alive():
                raise ProcessExited(proc.name, proc.popen.returncode, proc.log_tail())
            time.sleep(0.01)
        raise TimeoutError(f"{proc.name} not ready: {proc.log_tail()}")

    # -- measurement ------------------------------------------------------------------------
    def run_load(self, dep: Deployment, sc: Scenario, verify: int = 1) -> tuple[dict, dict, str]:
        st = self.settings
        watched = list(dep.proxy_pids) + [dep.backend.pid]
        argv = pin_prefix(st.load_cpus) + [
            str(self.tools["wsload"]), sc.mode, "-p", str(dep.target_port), "-c", str(sc.conns),
            "-w", str(sc.window), "-s", str(sc.size), "-d", str(st.seconds), "-W", str(st.warmup),
            "-V", str(verify), "-B", str(sc.pause_us), "-Z", "1" if sc.zerocopy else "0",
            "-S", ",".join(map(str, watched))]
        proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=st.warmup + st.seconds + 60)
        results, samples = parse_wsload(proc.stdout)
        if (proc.returncode != 0 and not dep.proxy.required
                and "status line: HTTP/1.1 501" in proc.stderr):
            raise Skip(f"{dep.proxy.name} answered 501 Not Implemented in scenario {sc.name}: "
                       f"not supported yet ({proc.stderr.strip().splitlines()[0]})")
        if proc.returncode != 0 or 0 not in samples or 1 not in samples:
            raise RuntimeError(
                f"load generator failed through {dep.proxy.name} ({sc.name}), exit {proc.returncode}:\n"
                f"{proc.stderr.strip()}\n{results.get('error', '')}\n--- proxy log ---\n"
                f"{dep.proxy_proc.log_tail() if dep.proxy_proc else ''}\n{self._proxy_error_log(dep)}")
        return results, samples, proc.stderr

    @staticmethod
    def _proxy_error_log(dep: Deployment) -> str:
        log = dep.workdir / "error.log"      # nginx
        try:
            lines = [ln for ln in log.read_text().splitlines()
                     if any(t in ln for t in ("[error]", "[crit]", "[alert]", "[emerg]"))]
        except OSError:
            return ""
        return "\n".join(lines[-10:])

    def measure(self, dep: Deployment, sc: Scenario) -> Result:
        """One round of `sc` through `dep` (retried if other processes disturbed it); recorded."""
        st = self.settings
        self.scenarios[sc.name] = sc
        run = self._measure_once(dep, sc)
        tries = 0
        while max(run.foreign.values(), default=0) > st.max_foreign and tries < st.retries:
            tries += 1           # other processes on our cores: measure again, keep the quietest
            again = self._measure_once(dep, sc)
            if max(again.foreign.values(), default=0) < max(run.foreign.values(), default=0):
                run = again
        if tries:
            run.notes.append(f"measured {tries + 1} times because of foreign load; kept the quietest")
        self.record(run)
        return run

    @staticmethod
    def _key(r: Result) -> float:
        return r.per_cpu_s if r.per_cpu_s is not None else r.throughput

    def record(self, run: Result) -> None:
        key = (run.scenario, run.proxy)
        runs = self.runs.setdefault(key, [])
        runs.append(run)
        ranked = sorted(runs, key=self._key)
        chosen = ranked[(len(ranked) - 1) // 2]          # the median run (lower median)
        for r in runs:
            r.runs = []
        if len(runs) > 1:
            chosen.runs = [{"throughput": r.throughput, "per_cpu_s": r.per_cpu_s,
                            "proxy_cpu_util": r.proxy_cpu_util, "load_core_busy": r.load_core_busy,
                            "verdict": r.verdict} for r in runs]
        self.results[key] = chosen

    def _measure_once(self, dep: Deployment, sc: Scenario) -> Result:
        st = self.settings
        cores = [f"cpu{c}" for c in _cpu_list(st.load_cpus + "," + st.proxy_cpus)] if (
            st.load_cpus and st.proxy_cpus) else ["cpu"]
        if st.quiet_wait > 0:
            wait_quiet(cores, st.max_foreign, st.quiet_wait)
        res, samples, stderr = self.run_load(dep, sc)
        s0, s1 = samples[0], samples[1]
        win = (s1["t"] - s0["t"]) / 1e9
        count = float(res.get(sc.count_key, 0)) * sc.scale

        def cpu(pids: list[int]) -> tuple[float, float]:
            ticks = ns = 0
            for pid in pids:
                a, b = s0["pid"].get(pid), s1["pid"].get(pid)
                if a and b:
                    ticks += (b[1] + b[2]) - (a[1] + a[2])
                    ns += b[3] - a[3]
            return ticks / CLK_TCK, ns / 1e9

        proxy_cpu = proxy_sched = None
        if dep.proxy_pids:
            proxy_cpu, proxy_sched = cpu(dep.proxy_pids)
        backend_cpu, _ = cpu([dep.backend.pid])
        self_pid = next(p for p, v in s1["pid"].items() if v[0] == "self")
        gen_cpu, _ = cpu([self_pid])
        busy, steal = _core_shares(s0, s1)
        load_cores = [f"cpu{c}" for c in _cpu_list(st.load_cpus)] if st.load_cpus else list(busy)
        proxy_cores = [f"cpu{c}" for c in _cpu_list(st.proxy_cpus)] if st.proxy_cpus else list(busy)
        load_busy = statistics.fmean(busy.get(c, 0.0) for c in load_cores)
        proxy_busy = statistics.fmean(busy.get(c, 0.0) for c in proxy_cores) if dep.proxy_pids else None
        per_cpu = count / proxy_cpu if proxy_cpu else None

        # Foreign load: busy time of a core not accounted to the processes pinned there (other
        # programs on the machine; interrupts not run in our processes' context).  Needs pinning.
        foreign: dict[str, float] = {}
        if st.load_cpus:
            foreign.update({c: 0.0 for c in load_cores})
            own = (gen_cpu + backend_cpu) / win
            for c in load_cores:
                foreign[c] = max(0.0, busy.get(c, 0.0) - own / len(load_cores))
        if st.proxy_cpus and dep.proxy_pids:
            own = (proxy_cpu or 0.0) / win
            for c in proxy_cores:
                if c not in foreign:
                    foreign[c] = max(0.0, busy.get(c, 0.0) - own / len(proxy_cores))

        notes = []
        noisy = {c: v for c, v in foreign.items() if v > st.max_foreign}
        if not dep.proxy_pids:
            verdict = "reference (no proxy)"
        elif noisy:
            verdict = "NOISY: foreign load " + ", ".join(f"{c} {v:.0%}" for c, v in noisy.items())
        elif sc.latency:
            verdict = "latency (1 in flight: nothing saturated by design)"
        elif load_busy < LOAD_CORE_LIMIT:
            verdict = "proxy-bound (load core has headroom)"
        elif proxy_busy is not None and proxy_busy >= PROXY_CORE_SATURATED:
            verdict = "proxy-bound (proxy core saturated)"
        else:
            verdict = (f"co-limited: load core {load_busy:.0%} busy, proxy core {(proxy_busy or 0):.0%}: "
                       f"per-CPU figure taken at {(proxy_cpu or 0) / win:.0%} proxy CPU")
        if any(v > 0.02 for v in steal.values()):
            notes.append("hypervisor steal time: " + ", ".join(f"{k} {v:.1%}" for k, v in steal.items()))
        if int(res.get("errors", 0)):
            notes.append(f"{res['errors']} connection errors")
        if noisy and dep.proxy_pids:
            notes.append("other processes shared the cores (" + ", ".join(
                f"{c} {v:.0%}" for c, v in noisy.items()) + "): absolute figures are low, "
                "per-CPU-second figures less affected")
        lat = None
        if sc.latency:
            lat = {k[4:-3]: float(v) for k, v in res.items() if k.startswith("lat_") and k.endswith("_us")}
        return Result(
            scenario=sc.name, proxy=dep.proxy.name, unit=sc.unit, window_s=win, count=count,
            throughput=count / win, proxy_cpu_s=proxy_cpu,
            proxy_cpu_util=proxy_cpu / win if proxy_cpu is not None else None,
            per_cpu_s=per_cpu, proxy_sched_cpu_s=proxy_sched,
            loadgen_cpu_util=gen_cpu / win, backend_cpu_util=backend_cpu / win,
            core_busy=busy, core_steal=steal, load_core_busy=load_busy, proxy_core_busy=proxy_busy,
            foreign=foreign, verdict=verdict, errors=int(res.get("errors", 0)),
            reconnects=int(res.get("reconnects", 0)), verified_messages=int(res.get("verified_messages", 0)),
            latency_us=lat,
            proxy_pids=list(dep.proxy_pids), notes=notes)

    # -- ratios -----------------------------------------------------------------------------
    def ratios(self) -> list[dict]:
        """Every proxy but the reference and "direct" against the reference, per scenario.
        With several rounds, each ratio is the median of the per-round ratios (round i of the
        proxy against round i of the reference, measured seconds apart)."""
        ref = self.settings.reference
        out = []
        for (scn, pname), r in self.results.items():
            base = self.results.get((scn, ref))
            if pname in (ref, "direct") or base is None:
                continue
            sc = SCENARIO_BY_NAME[scn]
            pairs = list(zip(self.runs[(scn, pname)], self.runs[(scn, ref)]))

            def med(f, pairs=pairs) -> float | None:
                vals = [v for v in (f(a, b) for a, b in pairs) if v is not None]
                return statistics.median(vals) if vals else None

            row = {"scenario": scn, "proxy": pname, "reference": ref, "unit": sc.unit,
                   "rounds": len(pairs),
                   "per_cpu_ratio": med(lambda a, b: a.per_cpu_s / b.per_cpu_s
                                        if a.per_cpu_s and b.per_cpu_s else None),
                   "throughput_ratio": med(lambda a, b: a.throughput / b.throughput
                                           if b.throughput else None),
                   "target": sc.target}
            if sc.latency and r.latency_us and base.latency_us:
                row["p50_ratio"] = med(lambda a, b: a.latency_us["p50"] / b.latency_us["p50"])
                row["p99_ratio"] = med(lambda a, b: a.latency_us["p99"] / b.latency_us["p99"])
            if sc.target is not None and row["per_cpu_ratio"] is not None:
                row["meets_target"] = row["per_cpu_ratio"] >= sc.target
            if r.verdict.startswith(("co-limited", "NOISY")) or base.verdict.startswith(("co-limited", "NOISY")):
                row["caveat"] = f"{pname}: {r.verdict}; {ref}: {base.verdict}"
            out.append(row)
        return out

    def ratio_for(self, scenario: str, proxy: str) -> dict | None:
        return next((r for r in self.ratios() if r["scenario"] == scenario and r["proxy"] == proxy), None)


def machine_info() -> dict:
    info = {"kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "clk_tck": CLK_TCK}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    from .proxies import fastgw_binary, nginx_binary
    ng = nginx_binary()
    if ng:
        r = subprocess.run([ng, "-v"], capture_output=True, text=True)
        info["nginx"] = (r.stderr or r.stdout).strip().replace("nginx version: ", "")
    fg = fastgw_binary()
    if fg:
        try:
            r = subprocess.run([fg, "--version"], capture_output=True, text=True, timeout=30)
            info["fastgw"] = r.stdout.strip() if r.returncode == 0 else f"unavailable (exit {r.returncode})"
        except (OSError, subprocess.TimeoutExpired):
            info["fastgw"] = "unavailable"
    return info
