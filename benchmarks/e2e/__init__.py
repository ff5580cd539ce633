"""End-to-end benchmarks of fastgw against nginx (1 worker) and a direct connection.

A C echo backend (csrc/wsecho.c) and a C load generator (csrc/wsload.c), compiled with gcc into a
cache directory at run time, drive each proxy of the registry (proxies.py) through the scenarios
of harness.py; CPU time comes from /proc; report.py prints the ratios per proxy CPU-second.

Entry points: ``pytest benchmarks/bench_e2e.py`` (pytest-benchmark) and
``python -m benchmarks.e2e`` (plain command line).  See benchmarks/README.md.
"""

from .harness import SCENARIOS, Bench, Result, Scenario, Settings, Skip, cases, selected_scenarios
from .proxies import REGISTRY, ProxyContext, ProxySpec, ProxyUnavailable, register
from .proxies import selected as selected_proxies

__all__ = ["SCENARIOS", "Bench", "cases", "Result", "Scenario", "Settings", "Skip", "selected_scenarios",
           "REGISTRY", "ProxyContext", "ProxySpec", "ProxyUnavailable", "register", "selected_proxies"]
