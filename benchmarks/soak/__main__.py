"""python -m benchmarks.soak [--sessions N] [--proxies fastgw,nginx] [--parts hold,slow,storm]
                           [--fastgw PATH] [--stalled K] [--hold-seconds S] [--json PATH] [--keep]

Runs every selected part for every selected proxy (part by part, so that the proxies compared
are measured minutes apart at most), prints the table and writes the JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..e2e.harness import machine_info
from . import build, parts, report, runner

REPO = Path(__file__).resolve().parents[2]


def default_fastgw() -> str:
    """The repository's .venv/bin/fastgw; in a git worktree without a venv, the main checkout's
    (the worktrees share one editable install)."""
    own = REPO / ".venv" / "bin" / "fastgw"
    if own.exists():
        return str(own)
    try:
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return str(own)
    main = (REPO / common).resolve().parent / ".venv" / "bin" / "fastgw"
    return str(main if main.exists() else own)


def _list(text: str, known: list[str], what: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in out if x not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {known}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                 description=__doc__.split("\n\n")[1])
    ap.add_argument("--sessions", type=int,
                    help="N for hold and storm (default: 10,000, or what the hard descriptor "
                         "limit allows: (hard - 256) / 2)")
    ap.add_argument("--proxies", default="fastgw,nginx")
    ap.add_argument("--parts", default="hold,slow,storm")
    ap.add_argument("--fastgw", default=default_fastgw(), help="fastgw executable")
    ap.add_argument("--stalled", type=int, default=1000, help="stalled sessions (slow part)")
    ap.add_argument("--hold-seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, default=REPO / ".benchmarks" / "soak" / "last.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)
    proxies = _list(args.proxies, list(runner.PROXIES), "proxies")
    part_names = _list(args.parts, list(parts.PARTS), "parts")

    hard = runner.raise_nofile()
    budget = runner.session_budget(hard)
    n = min(args.sessions or budget, budget)
    why = (f"hard RLIMIT_NOFILE {hard}: a proxy process needs 2 descriptors per session plus "
           f"{runner.FD_RESERVE} of its own, so at most {budget} sessions")
    if args.sessions and args.sessions > budget:
        print(f"--sessions {args.sessions} lowered to {n}: {why}", flush=True)
    os.environ["FASTGW_BENCH_FASTGW"] = args.fastgw     # for machine_info()
    env = parts.Env(tools=build.build(), sessions=n, nofile=hard, fastgw=args.fastgw,
                    root=Path(tempfile.mkdtemp(prefix="fastgw-soak-")), hold_s=args.hold_seconds,
                    stalled=args.stalled)
    print(f"soak: N = {n} sessions ({why}); proxy on cpu {runner.PROXY_CPUS}, client and backend "
          f"on cpu {runner.LOAD_CPUS}; scratch {env.root}", flush=True)

    results: dict[str, dict[str, dict]] = {p: {} for p in proxies}
    failed = False
    try:
        for part in part_names:
            for name in proxies:
                t0 = time.monotonic()
                try:
                    results[name][part] = parts.PARTS[part](env, runner.PROXIES[name])
                    print(f"{part:5} {name:6} done in {time.monotonic() - t0:.0f} s", flush=True)
                except Exception as e:  # noqa: BLE001 - report it and go on with the others
                    failed = True
                    results[name][part] = {"error": str(e)}
                    print(f"{part:5} {name:6} FAILED: {e}", file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(env.root, ignore_errors=True)
    text = report.table(results, proxies, part_names)
    print("\n" + text)
    settings = {"sessions": n, "sessions_why": why, "nofile_hard": hard, "proxies": proxies,
                "parts": part_names, "fastgw": args.fastgw, "stalled": args.stalled,
                "hold_s": args.hold_seconds, "proxy_cpus": runner.PROXY_CPUS,
                "load_cpus": runner.LOAD_CPUS, "hold_concurrency": parts.HOLD_CONCURRENCY,
                "healthy": parts.HEALTHY, "latency_round_trips": parts.LATENCY_COUNT,
                "latency_period_us": parts.LATENCY_PERIOD_US, "push_limit": parts.PUSH_LIMIT}
    path = report.save_json(args.json, settings, machine_info(), results, text)
    print(f"\nresults written to {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
