"""The gateway's hot path, compiled: which modules setup.py builds with Cython, and their twins.

The HTTP and handshake path (client connection, exchange, backend connection, head processing,
routing, balancing, the relay session) is ordinary Python, and CPython spends most of a request
interpreting it. setup.py compiles these modules with Cython in "pure Python mode": the same
`.py` file is the source of the extension, and a `.pxd` beside it declares the hot classes as
extension types with typed fields (attribute access becomes a struct field, calls between them C
calls). So each compiled module's pure-Python twin is its own source: nothing to keep in step.

FASTGW_NO_EXTENSIONS=1 makes every module here (and the frame engine, see frames.py) load from
its `.py` source, as on a machine without a compiler; `implementation()` says what is in use.
FASTGW_REQUIRE_EXTENSIONS=1 makes a module that is not compiled an `ExtensionsRequired` import
error with a one-line reason (`require_compiled()`, installed by fastgw/__init__.py).

`notes()` says, in lines a user can act on, why what runs is not the compiled build: a source
tree without built modules (which shadows the installed build under `python -m fastgw`), an
install built without a C compiler, or, in a source tree, extensions older than their sources
(an editable install keeps running the old `.so` until it is rebuilt).
This file must import only the standard library: setup.py executes it to read COMPILED.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys

# fastgw.<name> for each name: the modules a request or a handshake runs through.
COMPILED = (
    "contracts", "http1", "downstream", "upstream", "proxy", "wsproxy", "handshake", "relay",
    "local", "routing", "balancer", "backends", "affinity", "stats", "timeouts", "services",
    "recorder", "dispatch", "accesslog", "logfile", "acceptor", "rewrite",
)

# The `.pyx` engines, each with a separate twin fastgw/<name>_py.py and a selector module that
# picks one (select()): the frame engine (frames.py), the access log's line writer
# (logline.py) and the head scanner (heads.py).
ENGINES = ("_frames", "_logline", "_heads")

# Every extension setup.py builds.
EXTENSIONS = ENGINES + COMPILED

_HERE = os.path.dirname(os.path.abspath(__file__))
_NO_EXTENSIONS = os.environ.get("FASTGW_NO_EXTENSIONS") == "1"
_REQUIRE = os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1"
REBUILD = "pip install -e . (or python setup.py build_ext --inplace)"


class ExtensionsRequired(ImportError):
    """FASTGW_REQUIRE_EXTENSIONS=1 and a compiled module is missing: the message is one line."""


def _source_spec(name: str, module_name: str):
    """An import spec that loads fastgw/<name>.py as `module_name`, whatever is compiled."""
    return importlib.util.spec_from_file_location(module_name, os.path.join(_HERE, name + ".py"))


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the compiled modules from their .py source even where the extension is built."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "fastgw" or name not in COMPILED:
            return None
        return _source_spec(name, fullname)


def use_twins() -> None:
    """Import the pure-Python twins from now on (call before the modules are first imported)."""
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def is_compiled(module) -> bool:
    return not (getattr(module, "__file__", "") or "").endswith(".py")


def implementation() -> str:
    """ "c" when every module of COMPILED is its extension, "py" when none is, else "mixed"."""
    kinds = {is_compiled(importlib.import_module(f"fastgw.{name}")) for name in COMPILED}
    return "mixed" if len(kinds) > 1 else ("c" if kinds == {True} else "py")


def engine(name: str):
    """(module, "c" or "py"): the `.pyx` engine fastgw.<name> (ENGINES), or its twin
    fastgw.<name>_py under FASTGW_NO_EXTENSIONS=1 or where the engine is not built.
    FASTGW_REQUIRE_EXTENSIONS=1 makes a missing or broken engine an ExtensionsRequired error (one
    line saying why), so that a wheel or CI build that failed to compile cannot pass quietly
    on the twin."""
    if _NO_EXTENSIONS:
        if _REQUIRE:
            raise ExtensionsRequired(required_problem())
        return importlib.import_module(f"fastgw.{name}_py"), "py"
    try:
        return importlib.import_module(f"fastgw.{name}"), "c"
    except ImportError as exc:
        if _REQUIRE:
            raise ExtensionsRequired(
                required_problem() or f"fastgw.{name} does not import: {exc}") from None
        return importlib.import_module(f"fastgw.{name}_py"), "py"


def select(name: str, namespace: dict) -> str:
    """Fill a selector module's `namespace` (frames.py, logline.py) with the public names of
    engine(name), and `__all__`; returns "c" or "py"."""
    module, kind = engine(name)
    namespace["__all__"] = module.__all__
    namespace.update({attr: getattr(module, attr) for attr in module.__all__})
    return kind


def load_twin(name: str):
    """A fresh copy of fastgw.<name> from its .py source, beside the compiled one (for tests
    that compare the two in one process). It is not registered in sys.modules."""
    spec = _source_spec(name, f"fastgw._twin_{name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- why the compiled build is not what runs -------------------------------------------------


def extension_file(name: str) -> str | None:
    """The built extension of fastgw.<name> in the package directory, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(_HERE, name + suffix)
        if os.path.isfile(path):
            return path
    return None


def source_tree() -> str | None:
    """The checkout this package is imported from (setup.py beside it), or None when it is an
    installed copy. Editable installs import from their checkout too."""
    root = os.path.dirname(_HERE)
    if os.path.isfile(os.path.join(root, "setup.py")) and \
            os.path.isfile(os.path.join(_HERE, "_frames.pyx")):
        return root
    return None


_CIMPORT = re.compile(r"^\s*from\s+fastgw\.(\w+)\s+cimport\b", re.M)


def sources(name: str) -> list[str]:
    """The files Cython compiles fastgw.<name> from: its .pyx or .py, its .pxd, and the .pxd
    files that one cimports (their declarations are compiled into it)."""
    main = os.path.join(_HERE, name + (".pyx" if name in ENGINES else ".py"))
    found, todo = [main], [name]
    while todo:
        pxd = os.path.join(_HERE, todo.pop() + ".pxd")
        if pxd in found or not os.path.isfile(pxd):
            continue
        found.append(pxd)
        with open(pxd, encoding="utf-8") as f:
            todo += _CIMPORT.findall(f.read())
    return found


def stale() -> list[tuple[str, str]]:
    """(module, newer source) for each extension of a source tree that was built before one of
    its sources last changed: Python imports the extension, so the change does not run. Not
    checked in an installed copy, whose files all date from the install."""
    if source_tree() is None:
        return []
    found = []
    for name in EXTENSIONS:
        ext = extension_file(name)
        if ext is None:
            continue
        built = os.stat(ext).st_mtime
        newer = [src for src in sources(name) if os.stat(src).st_mtime > built]
        if newer:
            found.append((f"fastgw.{name}", os.path.relpath(newer[0], os.path.dirname(_HERE))))
    return found


def _missing() -> list[str]:
    return [name for name in EXTENSIONS if extension_file(name) is None]


def _why_missing(missing: list[str]) -> str:
    """Where the package comes from, why its extensions are missing and what to do, one line."""
    root = source_tree()
    if len(missing) < len(EXTENSIONS):
        what = "some modules are not compiled (" + ", ".join(f"fastgw.{m}" for m in missing) + ")"
        fix = f"rebuild with {REBUILD}" if root else "reinstall fastgw with a C compiler"
        return f"{what}: {fix}"
    if root is not None:
        installed = _installed_copy()
        run = (f"it shadows the installed fastgw in {installed}: run `fastgw`, or `python -m "
               "fastgw` from another directory" if installed else
               "pip install . and run the installed `fastgw`")
        return (f"running from the source tree {_HERE} without compiled modules; {run}; or "
                f"build them in place with {REBUILD}")
    return (f"this installation ({_HERE}) has no compiled modules: it was built without a C "
            "compiler; install gcc and the Python headers (Debian: apt-get install gcc "
            "python3-dev) and reinstall with pip install --force-reinstall --no-deps "
            "--no-cache-dir fastgw")


def _installed_copy() -> str | None:
    """Another fastgw package directory that pip installed (not this one), if any."""
    try:
        from importlib import metadata
        places = [str(d.locate_file("fastgw")) for d in metadata.distributions(name="fastgw")]
    except Exception:  # broken metadata: nothing to point at
        return None
    here = os.path.realpath(_HERE)
    return next((p for p in places if os.path.isdir(p) and os.path.realpath(p) != here), None)


def notes() -> list[str]:
    """Why the compiled build is not what runs, one actionable line each; [] when it is (or
    when FASTGW_NO_EXTENSIONS=1 asked for the twins)."""
    if _NO_EXTENSIONS:
        return []
    missing = _missing()
    lines = []
    if missing:
        lines.append(_why_missing(missing))
        # Measured on the 2-core CI machine: instructions per request and per handshake
        # (benchmarks/instructions.py), gateway CPU time per relayed 64-byte message.
        lines.append("the pure-Python twins cost about ten times the CPU of the compiled modules "
                     "per relayed WebSocket message, 1.5-2 times per HTTP request or handshake")
    for module, source in stale():
        lines.append(f"{module} was compiled before {source} last changed, so the change does not "
                     f"run: rebuild with {REBUILD}")
    return lines


def required_problem() -> str | None:
    """With FASTGW_REQUIRE_EXTENSIONS=1: why the compiled build cannot be used, in one line."""
    if not _REQUIRE:
        return None
    if _NO_EXTENSIONS:
        return "FASTGW_NO_EXTENSIONS=1 and FASTGW_REQUIRE_EXTENSIONS=1 contradict each other"
    missing = _missing()
    if missing:
        return f"FASTGW_REQUIRE_EXTENSIONS=1 but fastgw.{missing[0]} is not compiled: " + \
            _why_missing(missing)
    return None


class _CompiledOnly(importlib.abc.MetaPathFinder):
    """FASTGW_REQUIRE_EXTENSIONS=1: importing a module of EXTENSIONS that has no built extension
    is an error, not a quiet fallback to its .py (the frame engine's selector checks itself)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package == "fastgw" and name in COMPILED and extension_file(name) is None:
            raise ExtensionsRequired(required_problem() or f"fastgw.{name} is not compiled")
        return None


def require_compiled() -> None:
    """Make a missing extension an import error from now on (FASTGW_REQUIRE_EXTENSIONS=1)."""
    if not any(isinstance(f, _CompiledOnly) for f in sys.meta_path):
        sys.meta_path.insert(0, _CompiledOnly())
