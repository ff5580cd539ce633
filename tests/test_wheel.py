"""The release artifacts: `python -m build` makes an sdist and a platform wheel, and the wheel works
when installed into a fresh virtualenv (the compiled frame engine, not the pure-Python twin).

    pytest -m slow tests/test_wheel.py                      # this interpreter: ~1 minute

With FASTGW_WHEEL_PYTHONS set (versions or interpreter paths, space-separated), the test suite
also runs against the wheel installed on each of those interpreters, from a copy of tests/ in a
temporary directory (so that the source tree cannot be imported by accident), with
FASTGW_REQUIRE_EXTENSIONS=1:

    FASTGW_WHEEL_PYTHONS="3.10 3.12 3.13" pytest -m slow tests/test_wheel.py -rA -s

A version is looked up as pythonX.Y on PATH, then in pyenv ($PYENV_ROOT or ~/.pyenv). Each one
takes a few minutes (build, install, the suite); FASTGW_WHEEL_SUITE_ARGS overrides the pytest
arguments of that run (default: -q -m "not slow").
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

# Building compiles seventeen extensions (two builds: sdist, then the wheel from it).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parent.parent

if not (ROOT / "setup.py").is_file() or not (ROOT / "fastgw" / "_frames.pyx").is_file():
    pytest.skip(f"no source tree at {ROOT} (tests copied to run against an installed wheel)",
                allow_module_level=True)

# What a release is built from; everything else in a working copy (.venv, build/, generated C, a
# compiled module for this Python) is left behind, as in a clean clone.
_IGNORE = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.so", "*.pyd", "*.c", "_frames.html",
                                 "*.egg-info", ".pytest_cache", ".hypothesis", ".benchmarks")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FASTGW_NO_EXTENSIONS",
                        "PYTHONSAFEPATH", "__PYVENV_LAUNCHER__")}
    env.update(extra)
    return env


def run(cmd: list, *, timeout: float, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    """Run to completion within `timeout`; past it the process group is killed and the test fails
    with what the command had printed so far."""
    argv = [str(c) for c in cmd]
    proc = subprocess.Popen(argv, cwd=cwd, env=env or clean_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"{shlex.join(argv)} did not finish within {timeout:.0f} s:\n{out[-8000:]}")
    result = subprocess.CompletedProcess(argv, proc.returncode, out, None)
    if check and result.returncode != 0:
        pytest.fail(f"{shlex.join(str(c) for c in cmd)} exited {result.returncode}:\n"
                    f"{result.stdout[-6000:]}")
    return result


def source_copy(dest: Path) -> Path:
    """The files a release is built from, as in a clean clone: those git knows (tracked, or new
    and not ignored), else the package directories without generated files."""
    dest.mkdir(parents=True)
    files = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, timeout=60)
        if listed.returncode == 0:
            files = [f for f in listed.stdout.decode().split("\0") if f]
    if files is None:  # e.g. an unpacked sdist
        for name in ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "MANIFEST.in", "LICENSE"):
            if (ROOT / name).is_file():
                shutil.copy2(ROOT / name, dest / name)
        for name in ("fastgw", "tests", "examples"):
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, dest / name, ignore=_IGNORE)
        return dest
    for rel in files:
        src = ROOT / rel
        if not src.is_file():  # deleted in the working copy
            continue
        if rel.endswith((".c", ".so", ".pyd")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def native_modules() -> tuple[str, ...]:
    """The modules setup.py compiles from their .py (fastgw/native.py, read without importing)."""
    import runpy
    return runpy.run_path(str(ROOT / "fastgw" / "native.py"))["COMPILED"]


def package_files() -> list[str]:
    """What the package is made of: every file git tracks under fastgw/ (no generated C)."""
    if not ((ROOT / ".git").exists() and shutil.which("git")):
        return []
    listed = subprocess.run(["git", "ls-files", "-z", "fastgw"], cwd=ROOT, capture_output=True,
                            timeout=60)
    return [f for f in listed.stdout.decode().split("\0")
            if f and not f.endswith((".c", ".so")) and (ROOT / f).is_file()]


def have_build(python) -> bool:
    return subprocess.run([str(python), "-c", "import build"], capture_output=True).returncode == 0


def make_venv(python, where: Path) -> Path:
    run([python, "-m", "venv", where], timeout=300)
    return where / "bin" / "python"


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path | None]:
    """sdist and wheel of the working copy, built by this interpreter."""
    base = tmp_path_factory.mktemp("release")
    src = source_copy(base / "src")
    dist = base / "dist"
    if have_build(sys.executable):
        # sdist first, then the wheel from the unpacked sdist: what a release does.
        run([sys.executable, "-m", "build", "--outdir", dist, src], timeout=600)
        [sdist] = dist.glob("fastgw-*.tar.gz")
    else:
        # Without `build` (it belongs in the test extra) only the wheel is made, by pip.
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, src], timeout=600)
        sdist = None
    [wheel] = dist.glob("fastgw-*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_has_the_cython_sources_and_no_generated_c(artifacts):
    sdist = artifacts["sdist"]
    if sdist is None:
        pytest.skip("!!! the `build` package is not installed: the sdist was not built or checked "
                    "(pip install build; it belongs in the test extra)")
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    for required in ("pyproject.toml", "setup.py", "fastgw/_frames.pyx", "fastgw/_frames.pxd",
                     "fastgw/_frames.pyi", "fastgw/_frames_py.py", "fastgw/py.typed"):
        assert required in names, f"{required} missing from {sdist.name}"
    generated = [n for n in names if n.endswith((".c", ".so", ".pyd", ".pyc")) or
                 n.endswith("_frames.html")]
    assert not generated, f"generated files in the sdist: {generated}"
    missing = [f for f in package_files() if f not in names]
    assert not missing, f"files of the package missing from the sdist (MANIFEST.in?): {missing}"
    # Tests in the sdist must be runnable: not test files without their conftest and support.
    if any(n.startswith("tests/") for n in names):
        assert "tests/conftest.py" in names and "tests/support.py" in names, \
            "the sdist has tests/ without conftest.py/support.py (add `graft tests` to MANIFEST.in)"


def test_wheel_is_a_platform_wheel_with_the_compiled_extension(artifacts):
    wheel = artifacts["wheel"]
    # name-version-pythontag-abitag-platformtag.whl
    _, _, py_tag, abi_tag, platform_tag = wheel.name[:-4].split("-")
    expected = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert py_tag == expected and abi_tag == expected, wheel.name
    assert platform_tag != "any", f"{wheel.name} is not a platform wheel"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    extensions = [n for n in names if re.fullmatch(r"fastgw/_frames\.[^/]*(\.so|\.pyd)", n)]
    assert len(extensions) == 1, f"compiled fastgw._frames not in {wheel.name}: {names}"
    # The hot path compiled from its .py (fastgw/native.py), each .py kept beside as its twin.
    for name in native_modules():
        assert any(re.fullmatch(rf"fastgw/{name}\.[^/]*(\.so|\.pyd)", n) for n in names), \
            f"compiled fastgw.{name} not in {wheel.name}"
        assert f"fastgw/{name}.py" in names
    assert not [n for n in names if n.endswith(".c")], "generated C in the wheel"
    for required in ("fastgw/_frames_py.py", "fastgw/_frames.pyi", "fastgw/py.typed", "fastgw/cli.py"):
        assert required in names
    # Everything the package is made of (modules, type stubs, the demo page), built from the sdist.
    missing = [f for f in package_files() if f not in names]
    assert not missing, f"files of the package missing from the wheel: {missing}"
    assert re.search(r"^fastgw\s*=\s*fastgw\.cli:main$", entry_points, re.M)


def test_wheel_installs_into_a_fresh_venv_with_the_c_frame_engine(artifacts, tmp_path):
    python = make_venv(sys.executable, tmp_path / "venv")
    run([python, "-m", "pip", "install", "-q", artifacts["wheel"]], timeout=600)
    bindir = python.parent
    env = clean_env(FASTGW_REQUIRE_EXTENSIONS="1")
    out = run([bindir / "fastgw", "--version"], timeout=60, env=env, cwd=tmp_path).stdout
    assert out.startswith("fastgw ") and "frame engine: c" in out and "hot path: c" in out, out
    code = ("import fastgw, fastgw.frames as f, fastgw._frames as c; "
            "assert f.IMPLEMENTATION == 'c', f.IMPLEMENTATION; print(fastgw.__file__); print(c.__file__)")
    out = run([python, "-c", code], timeout=60, env=env, cwd=tmp_path).stdout
    installed = Path(out.splitlines()[0]).resolve()
    assert (tmp_path / "venv").resolve() in installed.parents, f"imported from {installed}"
    # `fastgw check` works from the installed package (a config with nothing outside it).
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[[listeners]]\nname = "l"\nport = 8080\n\n[[backend_pools]]\nname = "p"\n'
                   'servers = ["127.0.0.1:9001"]\n\n[[backend_settings]]\nname = "s"\nport = 9001\n\n'
                   '[[rules]]\nname = "r"\nlistener = "l"\nbackend_pool = "p"\nbackend_settings = "s"\n')
    out = run([bindir / "fastgw", "check", cfg], timeout=60, env=env, cwd=tmp_path).stdout
    assert "OK" in out


# ---------------------------------------------------------------------------------------------
# The suite against the wheel on other interpreters (FASTGW_WHEEL_PYTHONS)


def _python_version(python: str) -> str | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, timeout=30, env=clean_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(spec: str) -> str | None:
    """An interpreter for "3.12" (or "3.12.1", or a path) that runs and is that version: pyenv's
    versions first (its shims on PATH may not be usable), then pythonX.Y on PATH."""
    if os.sep in spec:
        return spec if _python_version(spec) else None
    candidates = []
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]

    def version_key(path: str) -> list[int]:
        return [int(x) if x.isdigit() else -1 for x in re.split(r"[.\-]", Path(path).parent.parent.name)]

    for root in dict.fromkeys(filter(None, roots)):
        found = []
        for path in glob.glob(os.path.join(root, "versions", f"{spec}*", "bin", "python")):
            version = Path(path).parent.parent.name
            if version == spec or version.startswith(spec + "."):
                found.append(path)
        candidates += sorted(found, key=version_key, reverse=True)
    on_path = shutil.which(f"python{spec}")
    if on_path:
        candidates.append(on_path)
    for python in candidates:
        version = _python_version(python)
        if version and (version == spec or version.startswith(spec + ".")):
            return python
    return None


WHEEL_PYTHONS = os.environ.get("FASTGW_WHEEL_PYTHONS", "").split()


def summary_counts(output: str) -> dict[str, int]:
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    counts = {}
    if lines:
        for number, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)",
                                       lines[-1]):
            counts[what.rstrip("s") if what.startswith("error") else what] = int(number)
    return counts


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("spec", WHEEL_PYTHONS or [pytest.param(
    "-", marks=pytest.mark.skip(reason="set FASTGW_WHEEL_PYTHONS (e.g. \"3.10 3.12 3.13\") to run the "
                                       "suite against the wheel on other interpreters"))])
def test_suite_passes_against_the_installed_wheel(spec, tmp_path):
    python = find_python(spec)
    if python is None:
        pytest.fail(f"FASTGW_WHEEL_PYTHONS names {spec!r}, but no such interpreter was found")
    # Build the wheel with that interpreter, install it and the test extras into a fresh venv.
    src = source_copy(tmp_path / "src")
    venv_python = make_venv(python, tmp_path / "venv")
    dist = tmp_path / "dist"
    run([venv_python, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", dist, src], timeout=900)
    [wheel] = dist.glob("fastgw-*.whl")
    run([venv_python, "-m", "pip", "install", "-q", f"{wheel}[test,waf]"], timeout=900)
    # The suite from a copy: tests/, what they read (examples/) and the pytest settings.
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copytree(ROOT / "tests", suite / "tests", ignore=_IGNORE)
    if (ROOT / "examples").is_dir():
        shutil.copytree(ROOT / "examples", suite / "examples", ignore=_IGNORE)
    shutil.copy2(ROOT / "pyproject.toml", suite / "pyproject.toml")
    env = clean_env(FASTGW_REQUIRE_EXTENSIONS="1")
    where = run([venv_python, "-c", "import fastgw, fastgw.frames as f, sys; "
                 "print(fastgw.__file__, f.IMPLEMENTATION, sys.version.split()[0])"],
                timeout=60, env=env, cwd=suite).stdout.split()
    assert Path(where[0]).resolve().is_relative_to((tmp_path / "venv").resolve()), where
    assert where[1] == "c"
    args = shlex.split(os.environ.get("FASTGW_WHEEL_SUITE_ARGS", '-q -m "not slow"'))
    result = run([venv_python, "-m", "pytest", "-p", "no:cacheprovider", "-ra", *args],
                 timeout=float(os.environ.get("FASTGW_WHEEL_SUITE_TIMEOUT", "2400")), env=env,
                 cwd=suite, check=False)
    counts = summary_counts(result.stdout)
    report = f"Python {where[2]} ({wheel.name}): {counts or 'no summary'}"
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    print("\n".join([report, *skipped]))
    failures = [line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert result.returncode == 0, f"{report}\n" + "\n".join(failures) + "\n" + result.stdout[-4000:]
