"""Printing and storing results: one table of absolute figures, one of ratios per CPU-second."""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict
from pathlib import Path

from .harness import SCENARIO_BY_NAME, Bench, machine_info


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if abs(v) >= 100000:
        s = f"{v:,.0f}"
    elif abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".rstrip()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def format_results(bench: Bench) -> str:
    rows = [("scenario", "proxy", "throughput", "proxy CPU", "per proxy CPU-s", "load core",
             "gen", "backend", "p50/p99 us", "verdict")]
    for (scn, pname), r in bench.results.items():
        unit = r.unit
        per_unit = unit.split("/")[0]
        lat = f"{r.latency_us['p50']:.1f}/{r.latency_us['p99']:.1f}" if r.latency_us else ""
        rows.append((scn, pname, _num(r.throughput, unit),
                     f"{r.proxy_cpu_util:.0%}" if r.proxy_cpu_util is not None else "-",
                     _num(r.per_cpu_s, per_unit), _pct(r.load_core_busy), _pct(r.loadgen_cpu_util),
                     _pct(r.backend_cpu_util), lat, r.verdict))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {scn}/{p}: {n}" for (scn, p), r in bench.results.items() for n in r.notes]
    if notes:
        lines += ["notes:"] + notes
    return "\n".join(lines)


def format_ratios(bench: Bench) -> str:
    ratios = bench.ratios()
    if not ratios:
        return (f"(no ratios: the reference {bench.settings.reference!r} and another proxy must both "
                f"have run a scenario)")
    rows = [("scenario", f"proxy / {bench.settings.reference}", "per CPU-s", "throughput",
             "target", "latency p50/p99")]
    for r in ratios:
        t = r.get("target")
        mark = "" if t is None or r.get("per_cpu_ratio") is None else (" ok" if r["meets_target"] else " MISS")
        lat = f"{r['p50_ratio']:.2f}/{r['p99_ratio']:.2f}" if "p50_ratio" in r else ""
        rows.append((r["scenario"], r["proxy"],
                     f"{r['per_cpu_ratio']:.2f}" if r["per_cpu_ratio"] is not None else "-",
                     f"{r['throughput_ratio']:.2f}" if r["throughput_ratio"] is not None else "-",
                     (f">= {t}" + mark) if t is not None else "", lat))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_report(bench: Bench) -> str:
    st = bench.settings
    head = (f"fastgw end-to-end benchmarks: window {st.seconds:g} s after {st.warmup:g} s warm-up, "
            f"proxy on cpu {st.proxy_cpus or 'any'}, generator+backend on cpu {st.load_cpus or 'any'}")
    return "\n".join([head, "", format_results(bench), "", "ratios (per proxy CPU-second):",
                      format_ratios(bench)])


def default_json_path() -> Path:
    env = os.environ.get("FASTGW_BENCH_OUT")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    return repo / ".benchmarks" / "e2e" / "last.json"


def to_json(bench: Bench) -> dict:
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": asdict(bench.settings),
        "scenarios": {name: asdict(sc) for name, sc in (bench.scenarios or SCENARIO_BY_NAME).items()},
        "results": [r.extra_info() for r in bench.results.values()],
        "ratios": bench.ratios(),
    }


def save_json(bench: Bench, path: Path | None = None) -> Path:
    path = path or default_json_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(bench), indent=2))
    return path
