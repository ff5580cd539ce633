"""Unbatched comparison of fastgw with nginx (1 worker), as pytest-benchmark tests.

    pytest benchmarks/bench_unbatched.py                  # 3 interleaved rounds, about 3 min
    FASTGW_BENCH_ROUNDS=5 pytest benchmarks/bench_unbatched.py --benchmark-json=unbatched.json

The same runs as ``python -m benchmarks.unbatched`` (see benchmarks/README.md, first section):
HTTP keep-alive requests with wrk and WebSocket handshakes with wsload, no batching pause,
nginx and fastgw each with an access log to a file and without.  One test per run stores that
run's figures in extra_info; the last test stores the paired ratios.  pytest-benchmark's own
timing column is the wall time of a run and means nothing here.  Selection and binaries come
from the environment: FASTGW_BENCH_UNBATCHED_{SCENARIOS,PROXIES,LOGS}, FASTGW_BENCH_FASTGW
(default: the repository's .venv/bin/fastgw), FASTGW_BENCH_ROUNDS (default 3) and the
e2e suite's FASTGW_BENCH_* settings.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

# importable as a package thanks to benchmarks/conftest.py
from benchmarks.e2e import Settings, Skip
from benchmarks.unbatched import Selection, UnbatchedBench, format_report, save_json
from benchmarks.unbatched.runner import default_fastgw

os.environ["FASTGW_BENCH_FASTGW"] = default_fastgw()
SETTINGS = dataclasses.replace(Settings.from_env(),
                               rounds=int(os.environ.get("FASTGW_BENCH_ROUNDS", "3")))
CASES = Selection.parse().plan(SETTINGS.rounds)
IDS = [f"{sc.name}-{spec.name}-r{r + 1}" for r, sc, spec in CASES]


class _Summary:
    """pytest plugin registered at run time: prints the tables after pytest-benchmark's."""

    def __init__(self, bench: UnbatchedBench):
        self.bench = bench

    def pytest_terminal_summary(self, terminalreporter):
        if not self.bench.by_round:
            return
        terminalreporter.section("fastgw vs nginx, unbatched")
        terminalreporter.write_line(format_report(self.bench))
        terminalreporter.write_line(f"\nresults written to {save_json(self.bench)}")


@pytest.fixture(scope="module")
def unbatched(request):
    bench = UnbatchedBench(SETTINGS)
    request.config.pluginmanager.register(_Summary(bench), "fastgw-unbatched-summary")
    yield bench
    bench.close()


@pytest.mark.parametrize("round_,scenario,proxy", CASES, ids=IDS)
def test_unbatched(benchmark, unbatched, round_, scenario, proxy):
    holder = {}
    try:
        benchmark.pedantic(lambda: holder.setdefault("r", unbatched.run(round_, scenario, proxy)),
                           rounds=1, iterations=1, warmup_rounds=0)
    except Skip as e:
        if os.environ.get("FASTGW_BENCH_STRICT", "") not in ("", "0"):
            pytest.fail(str(e))
        pytest.skip(str(e))
    result = holder["r"]
    benchmark.extra_info.update(result.extra_info())
    benchmark.extra_info["round"] = round_ + 1
    assert result.errors == 0, f"{result.errors} connection errors through {proxy.name}"


def test_unbatched_ratios(benchmark, unbatched):
    """Store the paired ratios of the run (fastgw / nginx, access-log costs) in one place."""
    benchmark.pedantic(lambda: None, rounds=1, iterations=1, warmup_rounds=0)
    ratios = unbatched.paired_ratios()
    benchmark.extra_info["ratios"] = ratios
    if not ratios:
        pytest.skip("no ratios: both sides of a pair must have run in the same round")
