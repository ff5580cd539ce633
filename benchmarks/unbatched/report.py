"""The unbatched comparison's tables (medians per variant, paired ratios) and its JSON file."""

from __future__ import annotations

import datetime as _dt
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path

from ..e2e.harness import machine_info
from ..e2e.proxies import fastgw_binary
from .runner import LOG_SUFFIX, REPO, UnbatchedBench, saturated, wrk_binary


def _k(v: float) -> str:
    """45231.7 -> '45.2 k' (the per-CPU-second and throughput figures are all in thousands)."""
    return f"{v / 1000:.1f} k" if v >= 1000 else f"{v:.0f}"


def _span(vals: list[float], fmt) -> str:
    """'median (min to max)', or the one value of a single round."""
    med = fmt(statistics.median(vals))
    return med if len(vals) == 1 else f"{med} ({fmt(min(vals))} to {fmt(max(vals))})"


def _pct(v: float) -> str:
    return f"{v:.0%}"


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_variants(bench: UnbatchedBench) -> str:
    """One row per scenario and variant: medians and ranges over the rounds."""
    rows = [("scenario", "proxy", "log", "per proxy CPU-s", "by round", "throughput",
             "proxy CPU", "proxy core", "load core", "gen + backend", "proxy core saturated")]
    for (scn, name), by_round in bench.by_round.items():
        runs = [by_round[r] for r in sorted(by_round)]
        unit = runs[0].unit
        sat = sum(saturated(r) for r in runs)
        rows.append((
            scn, name.removesuffix(LOG_SUFFIX), "on" if name.endswith(LOG_SUFFIX) else "off",
            _span([r.per_cpu_s or 0.0 for r in runs], _k) + " " + unit.split("/")[0],
            " / ".join(_k(r.per_cpu_s or 0.0) for r in runs),
            _span([r.throughput for r in runs], _k) + " " + unit,
            _span([r.proxy_cpu_util or 0.0 for r in runs], _pct),
            _span([r.proxy_core_busy or 0.0 for r in runs], _pct),
            _span([r.load_core_busy for r in runs], _pct),
            " / ".join(f"{r.loadgen_cpu_util:.0%}+{r.backend_cpu_util:.0%}" for r in runs),
            f"{sat}/{len(runs)} rounds" + ("" if sat == len(runs) else "  <- see verdicts"),
        ))
    return _table(rows)


def format_ratios(bench: UnbatchedBench) -> str:
    ratios = bench.paired_ratios()
    if not ratios:
        return "(no ratios: both sides of a pair must have run in the same round)"
    rows = [("scenario", "per proxy CPU-second", "by round", "median", "range", "caveats")]
    for r in ratios:
        fmt = _pct if r["kind"] == "cost" else (lambda v: f"{v:.2f}")
        rows.append((r["scenario"], r["ratio"], " / ".join(fmt(v) for v in r["per_round"]),
                     fmt(r["median"]), f"{fmt(r['min'])} to {fmt(r['max'])}",
                     "; ".join(r["caveats"]) or "none: all proxy cores saturated, quiet"))
    return _table(rows)


def format_verdicts(bench: UnbatchedBench) -> str:
    """Every run that was not plainly proxy-bound, and every note (retries, log sizes)."""
    lines = []
    for (scn, name), by_round in bench.by_round.items():
        for rnd in sorted(by_round):
            r = by_round[rnd]
            if not r.verdict.startswith("proxy-bound"):
                lines.append(f"  {scn}/{name} r{rnd + 1}: {r.verdict}")
            lines += [f"  {scn}/{name} r{rnd + 1}: {n}" for n in r.notes]
    return "\n".join(["verdicts and notes:"] + lines) if lines else ""


def format_report(bench: UnbatchedBench) -> str:
    st = bench.settings
    head = (f"fastgw vs nginx (1 worker), unbatched: {st.rounds} interleaved rounds, window "
            f"{max(1, round(st.seconds))} s after {max(1, round(st.warmup))} s warm-up, proxy on "
            f"cpu {st.proxy_cpus}, load generator + echo backend on cpu {st.load_cpus}")
    parts = [head, "", format_variants(bench), "", "paired ratios (same round):",
             format_ratios(bench)]
    verdicts = format_verdicts(bench)
    if verdicts:
        parts += ["", verdicts]
    return "\n".join(parts)


def default_json_path() -> Path:
    env = os.environ.get("FASTGW_BENCH_UNBATCHED_OUT")
    return Path(env) if env else REPO / ".benchmarks" / "unbatched" / "last.json"


def to_json(bench: UnbatchedBench) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "binaries": {"fastgw": fastgw_binary(), "wrk": wrk_binary()},
        "settings": asdict(bench.settings),
        "scenarios": {name: asdict(sc) for name, sc in bench.scenarios.items()},
        "runs": [{"round": rnd + 1, **r.extra_info()}
                 for by_round in bench.by_round.values() for rnd, r in sorted(by_round.items())],
        "ratios": bench.paired_ratios(),
    }


def save_json(bench: UnbatchedBench, path: Path | None = None) -> Path:
    path = path or default_json_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(bench), indent=2))
    return path
