"""Shared fixtures. `impl` runs a test on both frame engines, `line_engine` on both access-log
line writers: the Cython module ("c") and its pure-Python twin ("py") -- DESIGN.md section 3.1."""

import importlib
import os

import pytest

_NO_EXT = os.environ.get("FASTGW_NO_EXTENSIONS") == "1"
_REQUIRE_EXT = os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1"


def _c_module(name: str = "_frames"):
    try:
        return importlib.import_module(f"fastgw.{name}")
    except ImportError as exc:
        if _REQUIRE_EXT:
            pytest.fail(f"FASTGW_REQUIRE_EXTENSIONS=1 but fastgw.{name} cannot be imported: {exc}")
        pytest.skip(
            f"!!! fastgw.{name} (a C extension) is NOT BUILT -- only the twin was tested: {exc}. "
            "Build it with `pip install -e .`."
        )


def pytest_sessionstart(session):
    """FASTGW_REQUIRE_EXTENSIONS=1: every test of the gateway runs on the compiled hot path
    (fastgw/native.py), not quietly on its pure-Python twin; FASTGW_NO_EXTENSIONS=1: on the twin."""
    from fastgw import native
    problem = native.required_problem()
    if problem:
        pytest.exit(problem, 3)
    kind = native.implementation()
    if _REQUIRE_EXT and kind != "c":
        pytest.exit(f"FASTGW_REQUIRE_EXTENSIONS=1 but the hot path is {kind!r}: build it with "
                    "`pip install -e .` (setup.py compiles fastgw/native.py's modules)", 3)
    if _NO_EXT and kind != "py":
        pytest.exit(f"FASTGW_NO_EXTENSIONS=1 but the hot path is {kind!r}", 3)


@pytest.fixture(params=["py"] if _NO_EXT else ["c", "py"])
def impl(request):
    """The module fastgw._frames (id "c") or fastgw._frames_py (id "py")."""
    if request.param == "py":
        return importlib.import_module("fastgw._frames_py")
    return _c_module()


@pytest.fixture
def c_module():
    """fastgw._frames alone, for what only the C module promises (or compares twins)."""
    if _NO_EXT:
        pytest.skip("FASTGW_NO_EXTENSIONS=1: the C module is not in use")
    return _c_module()


@pytest.fixture(params=["py"] if _NO_EXT else ["c", "py"])
def line_engine(request):
    """The module fastgw._logline (id "c") or fastgw._logline_py (id "py")."""
    if request.param == "py":
        return importlib.import_module("fastgw._logline_py")
    return _c_module("_logline")


@pytest.fixture
def gateway_for():
    """make(servers, **gateway_toml options) -> a GatewayThread (with .port) on a free port in
    front of those servers; all of them stopped after the test."""
    from support import GatewayThread, free_port, gateway_toml

    started = []

    def make(servers, **kw):
        port = free_port()
        gw = GatewayThread(gateway_toml(port, servers, **kw))
        gw.port = port
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
