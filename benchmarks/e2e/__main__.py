"""python -m benchmarks.e2e [--seconds S] [--proxies a,b] [--scenarios x,y] [--rounds N] [--json PATH]

Runs every selected scenario through every selected proxy (scenario by scenario, so that the
proxies compared are measured minutes apart at most), prints the tables and writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from .harness import Bench, Settings, Skip, cases
from .report import format_report, save_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n\n")[1])
    ap.add_argument("--seconds", type=float, help="measurement window per run (default 3)")
    ap.add_argument("--warmup", type=float, help="warm-up before each window (default 1)")
    ap.add_argument("--rounds", type=int, help="run everything N times, interleaved; medians are reported")
    ap.add_argument("--proxies", help="comma list (default direct,nginx,fastgw)")
    ap.add_argument("--scenarios", help="comma list (default all)")
    ap.add_argument("--json", type=Path, help="where to write the results (default .benchmarks/e2e/last.json)")
    args = ap.parse_args(argv)
    if args.proxies:
        os.environ["FASTGW_BENCH_PROXIES"] = args.proxies
    if args.scenarios:
        os.environ["FASTGW_BENCH_SCENARIOS"] = args.scenarios
    st = Settings.from_env()
    overrides = {k: v for k, v in (("seconds", args.seconds), ("warmup", args.warmup),
                                   ("rounds", args.rounds)) if v is not None}
    st = dataclasses.replace(st, **overrides)
    bench = Bench(st)
    failed = False
    try:
        for rnd, sc, proxy in cases(st.rounds):
            tag = f"{sc.name:15} {proxy.name:8}" + (f" r{rnd + 1}" if st.rounds > 1 else "")
            try:
                with bench.deploy(proxy, sc) as dep:
                    r = bench.measure(dep, sc)
                per = f"{r.per_cpu_s:14,.1f}" if r.per_cpu_s is not None else f"{'-':>14}"
                print(f"{tag} {r.throughput:14,.1f} {r.unit:6} per-CPU-s {per}  "
                      f"load core {r.load_core_busy:.0%}  {r.verdict}", flush=True)
            except Skip as e:
                print(f"{tag} SKIPPED: {str(e).splitlines()[0]}", flush=True)
            except Exception as e:  # noqa: BLE001 - report and go on with the others
                failed = True
                print(f"{tag} FAILED: {e}", file=sys.stderr, flush=True)
        print()
        print(format_report(bench))
        print(f"\nresults written to {save_json(bench, args.json)}")
    finally:
        bench.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
