"""python -m benchmarks.unbatched [--rounds N] [--seconds S] [--warmup S] [--scenarios x,y]
[--proxies a,b] [--logs on,off] [--fastgw PATH] [--json PATH]

Runs fastgw and nginx (1 worker), each with its access log to a file and without, on unbatched
HTTP keep-alive requests (wrk) and WebSocket handshakes (wsload), in interleaved rounds; prints
the figures per proxy CPU-second and the paired ratios, and writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ..e2e.harness import Settings, Skip
from .report import format_report, save_json
from .runner import Selection, UnbatchedBench, default_fastgw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.unbatched",
                                 description=__doc__.split("\n\n")[1])
    ap.add_argument("--rounds", type=int,
                    help="interleaved rounds (default $FASTGW_BENCH_ROUNDS, else 3)")
    ap.add_argument("--seconds", type=float, help="measurement window per run (default 3)")
    ap.add_argument("--warmup", type=float, help="warm-up before each window (default 1)")
    ap.add_argument("--scenarios", help="comma list of http,handshake (default both)")
    ap.add_argument("--proxies", help="comma list of nginx,fastgw (default both)")
    ap.add_argument("--logs", help="access-log states, comma list of on,off (default both)")
    ap.add_argument("--fastgw", default=default_fastgw(),
                    help="fastgw executable (default $FASTGW_BENCH_FASTGW, else "
                         "the repository's .venv/bin/fastgw)")
    ap.add_argument("--json", type=Path,
                    help="where to write the results (default .benchmarks/unbatched/last.json)")
    args = ap.parse_args(argv)
    os.environ["FASTGW_BENCH_FASTGW"] = args.fastgw      # read by benchmarks.e2e.proxies
    st = Settings.from_env()
    rounds = args.rounds or int(os.environ.get("FASTGW_BENCH_ROUNDS", "3"))
    overrides = {k: v for k, v in (("seconds", args.seconds), ("warmup", args.warmup))
                 if v is not None}
    st = dataclasses.replace(st, rounds=rounds, **overrides)
    selection = Selection.parse(args.scenarios, args.proxies, args.logs)
    bench = UnbatchedBench(st)
    failed = False
    try:
        for rnd, sc, spec in selection.plan(st.rounds):
            tag = f"r{rnd + 1} {sc.name:9} {spec.name:16}"
            try:
                r = bench.run(rnd, sc, spec)
                print(f"{tag} {r.throughput:10,.0f} {r.unit:5} per proxy CPU-s "
                      f"{r.per_cpu_s or 0:10,.0f}  proxy core {r.proxy_core_busy or 0:.0%}  "
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
