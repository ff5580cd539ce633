"""The package's layers (DESIGN.md section 2), read from the sources: no upward import, no cycle.

Every import counts: at module level, inside functions, and under `TYPE_CHECKING` (a type-only
import is still a dependency a reader has to follow), and the `cimport`s of the .pxd and .pyx
files (Cython compiles those declarations into the importing module).

    entry          cli, demo, __main__: what a user runs
    orchestration  gateway, admin, supervisor: build the parts and run their lifecycle
    I/O            connections, exchanges, the relay session, listener, TLS, probes, the WAF
                   adapter, log files, metrics export, preflight checks
    state          backends (health), deadlines, counters
    core           pure: values in, values out (HTTP/1.1 heads, handshakes, routing,
                   balancing, affinity, the close policy, access-log records, the frame engine
                   and its twin, configuration); never asyncio

A module imports only from its own layer or below, and the import graph has no cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastgw"

LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("__init__", "native", "errors", "log", "config", "http1", "handshake", "routing",
             "balancer", "affinity", "closepolicy", "accesslog", "frames", "_frames",
             "_frames_py", "logline", "_logline", "_logline_py", "heads", "_heads", "_heads_py",
             "rewrite", "proxyproto"),
    "state": ("backends", "timeouts", "stats", "clientlimits"),
    "io": ("contracts", "upstream", "local", "proxy", "relay", "wsproxy", "downstream",
           "dispatch", "recorder", "services", "logfile", "acceptor", "capacity", "listener",
           "tls", "health", "waf", "metrics", "preflight", "clientgate", "handover"),
    "orchestration": ("gateway", "admin", "supervisor", "upgrade"),
    "entry": ("cli", "demo", "__main__"),
}
ORDER = list(LAYERS)
LAYER_OF = {module: layer for layer, modules in LAYERS.items() for module in modules}

_CIMPORT = re.compile(r"^\s*(?:from\s+fastgw\.(\w+)\s+c?import|from\s+fastgw\s+c?import\s+(\w+)"
                      r"|c?import\s+fastgw\.(\w+))", re.M)


def modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py")} | {p.stem for p in PACKAGE.glob("*.pyx")}


def python_imports(source: str) -> tuple[set[str], set[str]]:
    """(fastgw modules, other top-level modules) that Python source imports, anywhere in it."""
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                ours |= {a.name for a in node.names} if not module else {module.split(".")[0]}
            elif module == "fastgw":
                ours |= {a.name for a in node.names}
            elif module.startswith("fastgw."):
                ours.add(module.split(".")[1])
            else:
                others.add(module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fastgw."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours, others


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the fastgw modules it imports; module -> the other modules it imports."""
    known = modules()
    graph: dict[str, set[str]] = {}
    foreign: dict[str, set[str]] = {}
    for module in known:
        ours: set[str] = set()
        others: set[str] = set()
        py = PACKAGE / f"{module}.py"
        if py.exists():
            ours, others = python_imports(py.read_text(encoding="utf-8"))
        for suffix in (".pxd", ".pyx"):
            path = PACKAGE / f"{module}{suffix}"
            if path.exists():
                for match in _CIMPORT.finditer(path.read_text(encoding="utf-8")):
                    ours.add(next(g for g in match.groups() if g))
        graph[module] = (ours & known) - {module}
        foreign[module] = others
    return graph, foreign


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYER_OF[a]}) -> {b} ({LAYER_OF[b]})"
                  for a, deps in graph.items() for b in deps
                  if ORDER.index(LAYER_OF[b]) > ORDER.index(LAYER_OF[a]))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graphs():
    return import_graph()


def test_every_module_has_a_layer(graphs):
    graph, _ = graphs
    assert sorted(set(graph) - set(LAYER_OF)) == [], "add the new module to LAYERS"
    assert sorted(set(LAYER_OF) - set(graph)) == [], "a module in LAYERS no longer exists"


def test_no_upward_import(graphs):
    graph, _ = graphs
    assert upward_arrows(graph) == []


def test_no_import_cycle(graphs):
    graph, _ = graphs
    assert cycles(graph) == []


def test_core_never_imports_asyncio(graphs):
    _, foreign = graphs
    assert {m: sorted(foreign[m] & {"asyncio", "uvloop"}) for m in LAYERS["core"]
            if foreign[m] & {"asyncio", "uvloop"}} == {}


def test_the_checks_fail_on_one_added_arrow(graphs):
    """The checks above are not vacuous: one import added where it must not be is caught."""
    graph, _ = graphs
    upward = {m: set(deps) for m, deps in graph.items()}
    upward["http1"].add("gateway")  # core -> orchestration
    assert upward_arrows(upward) == ["http1 (core) -> gateway (orchestration)"]
    circular = {m: set(deps) for m, deps in graph.items()}
    circular["upstream"].add("proxy")  # proxy -> upstream already: a cycle within I/O
    assert upward_arrows(circular) == []
    assert cycles(circular) == [["proxy", "upstream"]]


def test_type_checking_and_function_imports_count():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastgw.gateway import G\n"
              "def f():\n    import asyncio\n    from fastgw import cli\n")
    assert python_imports(source) == ({"gateway", "cli"}, {"typing", "asyncio"})
