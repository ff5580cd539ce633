"""Unbatched comparison of fastgw with nginx (1 worker): requests and handshakes per proxy
CPU-second, with and without an access log to a file.

The end-to-end suite (benchmarks/e2e) lets its load side pause between event-loop rounds on the
HTTP scenario, so that requests reach the proxy in batches.  Real clients do not batch: each
sends its next request when its response arrives.  Here the HTTP load is wrk in a plain closed
loop (64 connections, one request in flight each) and the handshakes come from wsload with no
pause, and both proxies run once with their access log written to a file and once with it off.
Rounds interleave, and the ratios are paired within a round.

Entry points: ``python -m benchmarks.unbatched`` and ``pytest benchmarks/bench_unbatched.py``.
See benchmarks/README.md, first section.
"""

from .report import format_report, save_json
from .runner import RATIOS, SCENARIOS, Selection, UnbatchedBench

__all__ = ["RATIOS", "SCENARIOS", "Selection", "UnbatchedBench", "format_report", "save_json"]
