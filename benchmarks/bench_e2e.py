"""End-to-end benchmarks: fastgw vs nginx (1 worker) vs a direct connection.

    pytest benchmarks/bench_e2e.py                 # all scenarios, proxies direct,nginx,fastgw
    FASTGW_BENCH_PROXIES=nginx,fastgw FASTGW_BENCH_SCENARIOS=ws_64B pytest benchmarks/bench_e2e.py

Each test deploys the C echo backend and one proxy (pinned: proxy on cpu 0, generator+backend on
cpu 1), runs one scenario with the C load generator and stores its figures in pytest-benchmark's
extra_info: throughput, proxy CPU time over the window, throughput per proxy CPU-second, the load
side's CPU share, and, for every proxy other than the reference, the ratios against nginx measured
in the same run.  The timing pytest-benchmark shows is the generator's run (warm-up + window);
the figures that matter are in extra_info (--benchmark-json) and in the table printed at the end.
The harness and its settings (FASTGW_BENCH_* environment variables) are described in
benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from e2e import Bench, Settings, Skip, cases  # noqa: E402
from e2e.report import format_report, save_json  # noqa: E402

ROUNDS = Settings.from_env().rounds
# Round by round, scenario by scenario: the proxies compared on a scenario run seconds apart.
CASES = cases(ROUNDS)
IDS = [f"{sc.name}-{px.name}" + (f"-r{r + 1}" if ROUNDS > 1 else "") for r, sc, px in CASES]


class _Summary:
    """pytest plugin registered at run time: prints the tables after pytest-benchmark's."""

    def __init__(self, bench: Bench):
        self.bench = bench

    def pytest_terminal_summary(self, terminalreporter):
        if not self.bench.results:
            return
        terminalreporter.section("fastgw end-to-end benchmarks")
        terminalreporter.write_line(format_report(self.bench))
        try:
            terminalreporter.write_line(f"\nresults written to {save_json(self.bench)}")
        except OSError as e:
            terminalreporter.write_line(f"\ncould not write the results: {e}")


@pytest.fixture(scope="module")
def e2e(request):
    bench = Bench()
    request.config.pluginmanager.register(_Summary(bench), "fastgw-e2e-summary")
    yield bench
    bench.close()


@pytest.mark.parametrize("round_,scenario,proxy", CASES, ids=IDS)
def test_e2e(benchmark, e2e, round_, scenario, proxy):
    try:
        with e2e.deploy(proxy, scenario) as dep:
            holder = {}
            benchmark.pedantic(lambda: holder.setdefault("r", e2e.measure(dep, scenario)),
                               rounds=1, iterations=1, warmup_rounds=0)
    except Skip as e:
        if os.environ.get("FASTGW_BENCH_STRICT", "") not in ("", "0"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    result = holder["r"]                      # this round's figures
    benchmark.extra_info.update(result.extra_info())
    benchmark.extra_info["round"] = round_ + 1
    ratio = e2e.ratio_for(scenario.name, proxy.name)   # median over the rounds so far
    if ratio:
        benchmark.extra_info["ratio_vs_" + ratio["reference"]] = ratio
    assert result.errors == 0, f"{result.errors} connection errors through {proxy.name}"


def test_e2e_ratios(benchmark, e2e):
    """Store every ratio of the run in one place; FASTGW_BENCH_ENFORCE=1 turns targets into asserts."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1, warmup_rounds=0)
    ratios = e2e.ratios()
    benchmark.extra_info["ratios"] = ratios
    benchmark.extra_info["reference"] = e2e.settings.reference
    if not ratios:
        pytest.skip(f"no ratios: {e2e.settings.reference} and another proxy must both have run")
    if os.environ.get("FASTGW_BENCH_ENFORCE", "") not in ("", "0"):
        missed = [f"{r['scenario']}: {r['proxy']} {r['per_cpu_ratio']:.2f} < {r['target']}"
                  for r in ratios if r.get("meets_target") is False]
        assert not missed, "targets missed (per proxy CPU-second vs nginx):\n" + "\n".join(missed)
