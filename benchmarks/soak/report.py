"""The soak benchmark's table (a row per measurement, a column per proxy) and its JSON."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Callable

RSS_TARGET_KIB = 128     # fastgw's targets for the slow consumers
P99_RATIO_TARGET = 2.0


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _fails(*groups: dict) -> str:
    merged = {k: v for g in groups for k, v in g.items()}
    return "; ".join(f"{k} {v}" for k, v in merged.items()) or "none"


def _lat(d: dict) -> str:
    return f"{d['p50']:.0f} / {d['p99']:.0f} us" if "p99" in d else "-"


def _target(value: float | None, limit: float, proxy: str) -> str:
    if value is None or proxy != "fastgw":
        return ""
    return " (target met)" if value <= limit else f" (target <= {limit:g} MISSED)"


def _tcp_mem(m: dict) -> str:
    """The kernel shrinks socket buffers under pressure: a figure taken there is flagged."""
    flag = " UNDER PRESSURE" if m["stalled"] >= m["pressure_at"] else ""
    return f"{m['stalled']:,.0f} MiB (pressure at {m['pressure_at']:,.0f}){flag}"


Row = tuple[str, str, Callable[[dict, str], str]]
ROWS: list[Row] = [
    ("hold", "opened (200 handshakes in flight)",
     lambda r, p: f"{r['opened']}/{r['sessions']}"),
    ("hold", "time to open them all",
     lambda r, p: f"{r['open_s']:.2f} s ({r['open_rate']:,.0f}/s)"),
    ("hold", "CPU while opening: proxy / client",
     lambda r, p: f"{r['open_cpu']['proxy']:.0%} / {r['open_cpu']['client']:.0%}"),
    ("hold", "RSS before -> with N open (tree)",
     lambda r, p: f"{_mib(r['rss_before_kib'])} -> {_mib(r['rss_open_kib'])}"),
    ("hold", "RSS per idle session",
     lambda r, p: f"{r['rss_per_session_kib']:.1f} KiB"),
    ("hold", "proxy CPU while holding",
     lambda r, p: f"{r['hold_cpu']:.1%} over {r['hold_s']:g} s"),
    ("hold", "echoed after the hold",
     lambda r, p: f"{r['echoed']}/{r['opened']}"),
    ("hold", "closed with 1000 (then TCP closed)",
     lambda r, p: f"{r['closed_1000']}/{r['close_asked']} ({r['tcp_closed_by_proxy']})"),
    ("hold", "failures",
     lambda r, p: _fails(r["open_failures"], r["echo_failures"], r["close_failures"])),
    ("slow", "stalled sessions open at the end",
     lambda r, p: f"{r['stalled_still_open']}/{r['stalled']}"),
    ("slow", "backend blocked / at its 4 MiB limit",
     lambda r, p: f"{r['push_after_fill']['blocked']} / {r['push_after_fill']['at_limit']}"),
    ("slow", "RSS before -> with stalled (tree)",
     lambda r, p: f"{_mib(r['rss_before_kib'])} -> {_mib(r['rss_stalled_kib'])}"),
    ("slow", "RSS per stalled session",
     lambda r, p: f"{r['rss_per_stalled_kib']:.1f} KiB"
     + _target(r["rss_per_stalled_kib"], RSS_TARGET_KIB, p)),
    ("slow", "kernel queues of the proxy's sockets",
     lambda r, p: f"{r['kernel_queued_per_stalled_kib']:.0f} KiB per stalled session"),
    ("slow", "machine's TCP memory with stalled",
     lambda r, p: _tcp_mem(r["tcp_mem_mib_machine"])),
    ("slow", "proxy CPU with stalled, no traffic",
     lambda r, p: f"{r['idle_cpu_stalled']:.1%}"),
    ("slow", "healthy p50 / p99 (median of 3), alone",
     lambda r, p: _lat(r["latency_baseline_us"])),
    ("slow", "healthy p50 / p99 (median of 3), stalled",
     lambda r, p: _lat(r["latency_stalled_us"])),
    ("slow", "p99 ratio stalled / alone",
     lambda r, p: "-" if r["p99_ratio"] is None else f"{r['p99_ratio']:.2f}"
     + _target(r["p99_ratio"], P99_RATIO_TARGET, p)),
    ("slow", "healthy p50 / p99 (median of 3), after",
     lambda r, p: _lat(r["latency_after_us"])),
    ("slow", "failures",
     lambda r, p: _fails(r["stalled_failures"], r["latency_baseline_us"]["failures"],
                         r["latency_stalled_us"]["failures"], r["latency_after_us"]["failures"],
                         r["close_failures"])),
    ("storm", "restart: stop, start until it relays",
     lambda r, p: f"{r['stop_s']:.2f} s + {r['start_s']:.2f} s"),
    ("storm", "listen backlog",
     lambda r, p: str(r["listen_backlog"])),
    ("storm", "101s received",
     lambda r, p: f"{r['opened']}/{r['sessions']}"),
    ("storm", "time to the last 101",
     lambda r, p: f"{r['elapsed_s']:.2f} s"),
    ("storm", "handshakes per second",
     lambda r, p: f"{r['rate']:,.0f}/s" if r["rate"] else "-"),
    ("storm", "all connect() calls issued after",
     lambda r, p: f"{r['connects_issued_s']:.2f} s"),
    ("storm", "CPU during the storm: proxy / client",
     lambda r, p: f"{r['cpu']['proxy']:.0%} / {r['cpu']['client']:.0%}"),
    ("storm", "handshake time p50 / p99 / max",
     lambda r, p: " / ".join(f"{r['handshake_ms'][q]:.0f}" for q in ("p50", "p99", "max"))
     + " ms" if r["handshake_ms"] else "-"),
    ("storm", "failures",
     lambda r, p: _fails(r["failures"], r["close_failures"])),
]


def table(results: dict[str, dict[str, dict]], proxies: list[str], parts: list[str]) -> str:
    """Markdown table: results[proxy][part] is a part's dict, or {"error": text}."""
    rows = [["measurement", *proxies]]
    for part in parts:
        errors = [results.get(p, {}).get(part, {}).get("error") for p in proxies]
        for sect, label, fmt in ROWS:
            if sect != part:
                continue
            cells = []
            for proxy, err in zip(proxies, errors):
                r = results.get(proxy, {}).get(part)
                if r is None:
                    cells.append("not run")
                elif err:
                    cells.append(f"ERROR: {err.splitlines()[0]}")
                else:
                    try:
                        cells.append(fmt(r, proxy))
                    except (KeyError, TypeError):     # a figure that could not be taken (None)
                        cells.append("-")
            rows.append([f"{part}: {label}", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def save_json(path: Path, settings: dict, machine: dict, results: dict, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "settings": settings, "results": results, "table": text,
    }, indent=2))
    return path
