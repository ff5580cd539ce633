"""Runs of the unbatched comparison: what is measured, in which order, and the paired ratios.

Everything that the end-to-end suite already does well is reused from ``benchmarks.e2e``:
deployment (echo backend and proxy pinned with taskset, readiness, process tree, stop by pid),
the foreign-load check and retries, the CPU accounting and the verdicts.  Two things are new:

- HTTP load comes from ``wrk`` (64 connections, one thread, one request in flight each), which
  has no batching pause.  wrk cannot sample /proc at its window's edges as ``wsload`` does, so
  this module brackets it: a warm-up run first, then a /proc sample, the measured run, a sample.
  wrk's own CPU time is its rusage (it is a fresh child, so all of it falls in the window).
- The handshake scenario is ``wsload hs`` with ``-B 0`` and a backend started without ``-B``:
  every connection's packets go out as soon as they are ready, as real clients send them.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..e2e.harness import PROXY_CORE_SATURATED, Bench, Deployment, Result, Scenario, read_proc_stat
from ..e2e.procs import CLK_TCK, pin_prefix
from ..e2e.proxies import ACCESS_LOG, REGISTRY, ProxySpec

REPO = Path(__file__).resolve().parents[2]
HTTP = Scenario("http", "HTTP/1.1 keep-alive GETs (wrk): 64 connections x 1 in flight, no pause",
                mode="wrk", conns=64, unit="req/s", count_key="responses")
HANDSHAKE = Scenario("handshake", "WebSocket handshakes (open, Close 1000, wait for the close, "
                     "TCP close): 32 concurrent, no pause",
                     mode="hs", conns=32, unit="hs/s", count_key="handshakes")
SCENARIOS = {sc.name: sc for sc in (HTTP, HANDSHAKE)}
PROXIES = ("nginx", "fastgw")
LOGS = ("on", "off")
LOG_SUFFIX = "-accesslog"   # registry entry with the access log to a file (benchmarks/e2e/proxies)

# wrk prints these after its run (done() runs once, outside the request path, so the script does
# not slow wrk down: without request()/response() functions wrk keeps its static fast path).
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("result responses %d\\n", summary.requests))
  io.write(string.format("result duration_us %d\\n", summary.duration))
  io.write(string.format("result errors %d\\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("result status_errors %d\\n", e.status))
end
"""

# The paired ratios (per proxy CPU-second, same round): (name, numerator, denominator, kind).
# "cost" is 1 - numerator/denominator: the share of the log-off rate that logging takes away.
RATIOS = (
    ("fastgw / nginx, access log on", "fastgw" + LOG_SUFFIX, "nginx" + LOG_SUFFIX, "ratio"),
    ("fastgw / nginx, access log off", "fastgw", "nginx", "ratio"),
    ("fastgw access-log cost (1 - on/off)", "fastgw" + LOG_SUFFIX, "fastgw", "cost"),
    ("nginx access-log cost (1 - on/off)", "nginx" + LOG_SUFFIX, "nginx", "cost"),
)


def wrk_binary() -> str:
    return os.environ.get("FASTGW_BENCH_WRK") or shutil.which("wrk") or "/usr/bin/wrk"


def default_fastgw() -> str:
    """$FASTGW_BENCH_FASTGW, else the repository's .venv/bin/fastgw (not the fastgw of whatever
    Python runs the benchmark: this suite is run with the system python3 as often as not)."""
    return os.environ.get("FASTGW_BENCH_FASTGW") or str(REPO / ".venv" / "bin" / "fastgw")


def _comma(value: str | None, default: tuple[str, ...], known: tuple[str, ...] | dict,
           what: str) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()] if value else list(default)
    unknown = [v for v in out if v not in known]
    if unknown:
        raise KeyError(f"unknown {what} {unknown}; known: {list(known)}")
    return out


@dataclass(frozen=True)
class Selection:
    """What to run: scenarios, proxies ("nginx", "fastgw") and access-log states ("on", "off")."""

    scenarios: list[Scenario]
    specs: list[ProxySpec]          # the registry entries, log-on entries first

    @classmethod
    def parse(cls, scenarios: str | None = None, proxies: str | None = None,
              logs: str | None = None) -> Selection:
        """Comma lists; None takes $FASTGW_BENCH_UNBATCHED_{SCENARIOS,PROXIES,LOGS}, then all."""
        e = os.environ.get
        scs = _comma(scenarios or e("FASTGW_BENCH_UNBATCHED_SCENARIOS"), tuple(SCENARIOS),
                     SCENARIOS, "scenarios")
        pxs = _comma(proxies or e("FASTGW_BENCH_UNBATCHED_PROXIES"), PROXIES, PROXIES, "proxies")
        lgs = _comma(logs or e("FASTGW_BENCH_UNBATCHED_LOGS"), LOGS, LOGS, "access-log states")
        specs = [REGISTRY[p + (LOG_SUFFIX if lg == "on" else "")]
                 for lg in LOGS if lg in lgs for p in PROXIES if p in pxs]
        return cls([SCENARIOS[s] for s in scs], specs)

    def plan(self, rounds: int) -> list[tuple[int, Scenario, ProxySpec]]:
        """(round, scenario, proxy) in run order.  Every round runs every variant once per
        scenario; odd rounds run them in reverse, so that neither side of a pair always goes
        first (the VM's speed drifts within a round as well as between rounds)."""
        out = []
        for r in range(max(1, rounds)):
            order = self.specs if r % 2 == 0 else self.specs[::-1]
            out += [(r, sc, spec) for sc in self.scenarios for spec in order]
        return out


def _pid_times(pid: int) -> tuple[int, int, int]:
    """(utime, stime) in clock ticks from /proc/PID/stat (every thread), and the run time in ns
    from /proc/PID/schedstat; zeros if the process is gone (as wsload's sampler reports it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/schedstat") as f:
            run_ns = int(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return 0, 0, 0
    return int(fields[11]), int(fields[12]), run_ns          # fields 14 and 15


def _sample(pids: list[int]) -> dict:
    """The same shape as a parsed wsload sample (harness.parse_wsload)."""
    return {"t": time.monotonic_ns(), "stat": read_proc_stat(),
            "pid": {pid: ("watched", *_pid_times(pid)) for pid in pids}}


class UnbatchedBench(Bench):
    """The e2e Bench with wrk as the HTTP load generator; results also kept by round."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wrk_script = self.root / "report.lua"
        self.wrk_script.write_text(WRK_SCRIPT)
        self.by_round: dict[tuple[str, str], dict[int, Result]] = {}

    def run(self, rnd: int, sc: Scenario, spec: ProxySpec) -> Result:
        """Deploy `spec` in front of the echo backend, measure `sc` once (retried on foreign
        load), check that a logging variant did log, and record the result under `rnd`."""
        with self.deploy(spec, sc) as dep:
            result = self.measure(dep, sc)
        if spec.name.endswith(LOG_SUFFIX):
            # Counted after the proxy stopped, when its log is complete (fastgw's writer thread).
            log = dep.workdir / ACCESS_LOG
            data = log.read_bytes() if log.exists() else b""
            lines = data.count(b"\n")
            if not lines:
                raise RuntimeError(f"{spec.name} wrote no access log to {log}")
            result.notes.append(f"access log: {lines} lines of {len(data) / lines:.0f} B on "
                                "average (every warm-up, window and retry of this run)")
        self.by_round.setdefault((sc.name, spec.name), {})[rnd] = result
        return result

    def run_load(self, dep: Deployment, sc: Scenario, verify: int = 1) -> tuple[dict, dict, str]:
        if sc.mode != "wrk":
            return super().run_load(dep, sc, verify)
        st = self.settings
        argv = pin_prefix(st.load_cpus) + [
            wrk_binary(), "-t", "1", "-c", str(sc.conns), "--timeout", "10s",
            "-s", str(self.wrk_script)]
        url = f"http://127.0.0.1:{dep.target_port}/bench"
        # wrk takes whole seconds only.
        warm, _, _ = self._wrk(dep, argv + ["-d", f"{max(1, round(st.warmup))}s", url])
        if not int(warm.get("responses", 0)):
            raise RuntimeError(f"no response through {dep.proxy.name} during the warm-up")
        watched = list(dep.proxy_pids) + [dep.backend.pid]
        s0 = _sample(watched)
        window = ["-d", f"{max(1, round(st.seconds))}s", url]
        res, pid, (utime, stime) = self._wrk(dep, argv + window)
        s1 = _sample(watched)
        # wrk was started after s0 and reaped before s1: all its CPU time falls in the window.
        s0["pid"][pid] = ("self", 0, 0, 0)
        s1["pid"][pid] = ("self", utime * CLK_TCK, stime * CLK_TCK, int((utime + stime) * 1e9))
        return res, {0: s0, 1: s1}, ""

    def _wrk(self, dep: Deployment, argv: list[str]) -> tuple[dict, int, tuple[float, float]]:
        """Run wrk to completion; -> (its result lines, its pid, its user and system CPU
        seconds).  Fails on any response that is not 2xx or 3xx, and on a missing report."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
        try:
            out, err = proc.communicate(timeout=self.settings.seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)   # wrk is the only child reaped
        cpu = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
        res = {p[1]: p[2] for p in (ln.split() for ln in out.splitlines())
               if len(p) == 3 and p[0] == "result"}
        if proc.returncode != 0 or "responses" not in res or int(res.get("status_errors", 1)):
            raise RuntimeError(
                f"wrk failed through {dep.proxy.name}, exit {proc.returncode}:\n{out}\n{err}\n"
                f"--- proxy log ---\n{dep.proxy_proc.log_tail() if dep.proxy_proc else ''}\n"
                f"{self._proxy_error_log(dep)}")
        return res, proc.pid, cpu

    # -- ratios -----------------------------------------------------------------------------
    def paired_ratios(self) -> list[dict]:
        """The paired ratios of RATIOS per scenario, round by round (both sides measured in the
        same round, seconds apart), with their median and range."""
        out = []
        for sc in self.scenarios:
            for name, num, den, kind in RATIOS:
                a = self.by_round.get((sc, num), {})
                b = self.by_round.get((sc, den), {})
                rounds = sorted(r for r in a if r in b and a[r].per_cpu_s and b[r].per_cpu_s)
                if not rounds:
                    continue
                vals = [a[r].per_cpu_s / b[r].per_cpu_s for r in rounds]
                if kind == "cost":
                    vals = [1 - v for v in vals]
                out.append({
                    "scenario": sc, "ratio": name, "kind": kind, "numerator": num,
                    "denominator": den, "rounds": [r + 1 for r in rounds], "per_round": vals,
                    "median": statistics.median(vals), "min": min(vals), "max": max(vals),
                    "caveats": [f"r{r + 1} {x[r].proxy}: {c}" for r in rounds for x in (a, b)
                                for c in caveats(x[r])],
                })
        return out


def saturated(r: Result) -> bool:
    """The proxy's core was (nearly) fully busy over the window."""
    return (r.proxy_core_busy or 0.0) >= PROXY_CORE_SATURATED


def caveats(r: Result) -> list[str]:
    """Why a run's figure may be off: other programs on our cores, or a proxy core below
    saturation (the per-CPU figure is then taken at that utilisation, not at full load)."""
    out = ["noisy"] if r.verdict.startswith("NOISY") else []
    if not saturated(r):
        out.append(f"proxy core {r.proxy_core_busy or 0.0:.0%}")
    return out
