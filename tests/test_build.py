"""What fastgw says about its own build, in real processes on copies of the source tree:

* a source tree without compiled modules (what `python -m fastgw` imports in a clone, shadowing
  the installed build) says so in `--version` and once at the start of `serve` and `check`;
  FASTGW_REQUIRE_EXTENSIONS=1 there is one line and exit status 1, never a traceback;
* a compiled module older than one of its sources (an editable install after an edit) is named,
  with the command that rebuilds it;
* `pip install .` without a working C compiler installs the pure-Python twins with a warning,
  and fails with FASTGW_REQUIRE_EXTENSIONS=1 (slow: a real build in a fresh virtualenv).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent

if not (ROOT / "setup.py").is_file():
    pytest.skip(f"no source tree at {ROOT} (tests copied to run against an installed wheel)",
                allow_module_level=True)

CONFIG = """\
[[listeners]]
name = "l"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "p"
servers = ["127.0.0.1:9"]

[[backend_settings]]
name = "s"
port = 9

[[rules]]
name = "r"
listener = "l"
backend_pool = "p"
backend_settings = "s"
"""


def source_tree(dest: Path, *, extensions: bool) -> Path:
    """A copy of what a build needs (a clone), with or without this tree's built extensions."""
    dest.mkdir(parents=True)
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dest / name)
    generated = ["__pycache__", "*.c", "*.html"] + ([] if extensions else ["*.so", "*.pyd"])
    shutil.copytree(ROOT / "fastgw", dest / "fastgw", ignore=shutil.ignore_patterns(*generated))
    return dest


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if k not in ("FASTGW_NO_EXTENSIONS", "FASTGW_REQUIRE_EXTENSIONS", "PYTHONPATH")}
    out.update(extra)
    return out


# `python -m fastgw` in a clone of its own. The suite's virtualenv has this tree installed
# editable, and setuptools' editable finder would serve the copy's missing submodules (its
# extensions) from this tree: it is taken out first, as in a clone next to a regular install.
_CLONE = ("import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if not "
          "getattr(f, '__module__', '').startswith('__editable__')]; ")


def python(cwd: Path, code: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CLONE + code, *args], cwd=cwd,
                          env=env(**extra), capture_output=True, text=True, timeout=60)


def fastgw(cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    """`python -m fastgw ARGS` run in `cwd`: the package there shadows the installed one."""
    return python(cwd, "runpy.run_module('fastgw', run_name='__main__', alter_sys=True)",
                  *args, **extra)


def test_source_tree_without_compiled_modules_says_so(tmp_path):
    tree = source_tree(tmp_path / "clone", extensions=False)
    here = f"running from the source tree {tree / 'fastgw'} without compiled modules"
    result = fastgw(tree, "--version")
    assert result.returncode == 0
    first, *notes = result.stdout.splitlines()
    assert "frame engine: py, hot path: py" in first
    assert any(here in line and "pip install -e ." in line for line in notes), notes
    assert any("about ten times the CPU" in line for line in notes), notes
    (tree / "gw.toml").write_text(CONFIG.format(port=free_port()))
    result = fastgw(tree, "check", "gw.toml")
    assert result.returncode == 0 and "gw.toml: OK" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if here in line]
    assert len(warnings) == 1 and warnings[0].startswith("fastgw: warning: ")


def test_serve_warns_once_at_start(tmp_path):
    tree = source_tree(tmp_path / "clone", extensions=False)
    port = free_port()
    (tree / "gw.toml").write_text(CONFIG.format(port=port))
    err = tmp_path / "err"
    with open(err, "w") as stderr:
        code = _CLONE + "runpy.run_module('fastgw', run_name='__main__', alter_sys=True)"
        proc = subprocess.Popen([sys.executable, "-c", code, "serve", "gw.toml"], cwd=tree,
                                env=env(), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_port(port, proc=proc)
            deadline = time.monotonic() + 10  # SIGTERM is handled once "started" is logged
            while '"started"' not in err.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    lines = err.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is a record in the envelope
    assert all({"time", "level", "log"} <= set(r) for r in records), lines
    warnings = [r for r in records if r.get("event") == "build_warning"]
    assert len([w for w in warnings if "running from the source tree" in w["note"]]) == 1, lines
    assert records.index(warnings[0]) < 2, lines  # at start, before the gateway logs anything
    assert warnings[0]["level"] == "warning" and warnings[0]["log"] == "event"
    assert "Traceback" not in err.read_text()


@pytest.mark.parametrize("args", [["--version"], ["check", "gw.toml"], ["serve", "gw.toml"]])
def test_require_extensions_is_one_line_not_a_traceback(tmp_path, args):
    tree = source_tree(tmp_path / "clone", extensions=False)
    (tree / "gw.toml").write_text(CONFIG.format(port=free_port()))
    result = fastgw(tree, *args, FASTGW_REQUIRE_EXTENSIONS="1")
    assert result.returncode == 1 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("fastgw: FASTGW_REQUIRE_EXTENSIONS=1 but fastgw._frames is not "
                           f"compiled: running from the source tree {tree / 'fastgw'}"), line


def test_require_extensions_on_import(tmp_path):
    tree = source_tree(tmp_path / "clone", extensions=False)
    for module in ("fastgw.frames", "fastgw.routing"):
        result = python(tree, f"import {module}", FASTGW_REQUIRE_EXTENSIONS="1")
        assert result.returncode == 1
        last = result.stderr.splitlines()[-1]
        assert last.startswith("fastgw.native.ExtensionsRequired: FASTGW_REQUIRE_EXTENSIONS=1 "
                               "but fastgw._frames is not compiled"), result.stderr
        assert "During handling of the above exception" not in result.stderr


def test_compiled_modules_older_than_their_sources_are_named(tmp_path):
    if not list((ROOT / "fastgw").glob("routing.*.so")):
        pytest.skip("!!! the extensions are not built in this tree (pip install -e .)")
    tree = source_tree(tmp_path / "clone", extensions=True)
    package = tree / "fastgw"
    # Every extension built after every source, as right after a build...
    now = time.time()
    for path in package.iterdir():
        stamp = now if path.suffix == ".so" else now - 3600
        os.utime(path, (stamp, stamp))
    result = fastgw(tree, "--version")
    assert result.returncode == 0 and result.stdout.splitlines()[1:] == [], result.stdout
    assert "frame engine: c, hot path: c" in result.stdout
    # ... then an edit of routing.py, and of backends.pxd (which other modules cimport, directly
    # or through another .pxd).
    os.utime(package / "routing.py", (now + 10, now + 10))
    os.utime(package / "backends.pxd", (now + 10, now + 10))
    notes = fastgw(tree, "--version").stdout.splitlines()[1:]
    rebuild = "rebuild with pip install -e . (or python setup.py build_ext --inplace)"
    assert (f"  fastgw.routing was compiled before fastgw/routing.py last changed, so the change "
            f"does not run: {rebuild}") in notes
    stale = {line.split()[0] for line in notes}
    assert stale >= {"fastgw.routing", "fastgw.backends", "fastgw.contracts", "fastgw.proxy",
                     "fastgw.relay", "fastgw.upstream", "fastgw.downstream"}, notes
    # Modules whose declarations do not reach backends.pxd are not named.
    assert not stale & {"fastgw.http1", "fastgw.handshake", "fastgw.affinity", "fastgw._frames",
                        "fastgw.timeouts"}, notes
    (tree / "gw.toml").write_text(CONFIG.format(port=free_port()))
    result = fastgw(tree, "check", "gw.toml")
    assert result.returncode == 0
    assert "fastgw: warning: fastgw.routing was compiled before fastgw/routing.py" in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_install_without_a_c_compiler(tmp_path):
    tree = source_tree(tmp_path / "clone", extensions=False)
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True, timeout=300)
    pip = [str(tmp_path / "venv" / "bin" / "python"), "-m", "pip", "install", "-v", "."]

    def install(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(pip, cwd=tree, env=env(CC="/bin/false", **extra), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)

    # Wheels and CI: a module that does not compile fails the build, with the reason.
    result = install(FASTGW_REQUIRE_EXTENSIONS="1")
    assert result.returncode != 0
    assert "error: FASTGW_REQUIRE_EXTENSIONS=1 and compiling fastgw." in result.stdout
    assert "/bin/false exited with status 1" in result.stdout
    # Elsewhere the twins are installed, with one warning that says what to do.
    result = install()
    assert result.returncode == 0, result.stdout[-4000:]
    warning = [line.strip() for line in result.stdout.splitlines() if "WARNING: fastgw" in line]
    # The first module that failed (two compile at once on two cores): one warning.
    assert len(warning) == 1, warning
    assert warning[0].startswith("WARNING: fastgw is installed WITHOUT its compiled modules: "
                                 "compiling fastgw.")
    assert warning[0].endswith("failed: /bin/false exited with status 1"), warning
    assert "apt-get install gcc python3-dev" in result.stdout
    version = subprocess.run([tmp_path / "venv" / "bin" / "fastgw", "--version"], cwd=tmp_path,
                             env=env(), capture_output=True, text=True, timeout=60)
    first, *notes = version.stdout.splitlines()
    assert "frame engine: py, hot path: py" in first
    assert any("has no compiled modules: it was built without a C compiler" in line
               for line in notes), notes
