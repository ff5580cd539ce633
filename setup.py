"""Build the native extensions: the `.pyx` engines (fastgw._frames, the frame engine,
fastgw._logline, the access log's line writer, and fastgw._heads, the head scanner), and the gateway's hot
path (the modules fastgw/native.py lists), compiled from their own .py sources with the .pxd
declarations beside them (Cython's pure Python mode: each .py stays its own pure-Python twin).

Everything else is declared in pyproject.toml. Build knobs are environment variables, because
pip and cibuildwheel drop setup.py command-line flags:

  FASTGW_REQUIRE_EXTENSIONS=1  a module that does not compile fails the build (wheels and CI);
                               without it the build falls back to the pure-Python twins, with a
                               warning, so that a machine without a C compiler can still install
  FASTGW_CYTHON_ANNOTATE=1     write the Cython annotation HTML next to the sources
  FASTGW_DEBUG_BUILD=1         -O0 -g and Cython bounds checks, for gdb/valgrind sessions

The C compiler runs on every core (one module per job, largest first); `pip install -v` shows
one line per module as it is compiled.
"""
import os
import runpy
import subprocess
import sys
import threading
import time

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

DEBUG = os.environ.get("FASTGW_DEBUG_BUILD") == "1"
REQUIRE = os.environ.get("FASTGW_REQUIRE_EXTENSIONS") == "1"
JOBS = os.cpu_count() or 1

directives = {
    "language_level": 3,
    "embedsignature": True,
    # The frame engine indexes raw byte pointers itself; every bound is checked in the code.
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}

# -g0 overrides the -g that Python's own CFLAGS carry: debug information for Cython's large C
# files costs a third of the compile time and makes each object eight times larger, and nothing
# outside a debugging session reads it (profilers use the symbol table, which stays).
extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]

# The hot-path modules are ordinary Python: negative indexes and Python's annotation semantics
# stay (types come from the .pxd files only, never from the annotations).
python_directives = dict(directives, boundscheck=True, wraparound=True, annotation_typing=False)

_NATIVE = runpy.run_path(os.path.join("fastgw", "native.py"))
COMPILED = _NATIVE["COMPILED"]
ENGINES = _NATIVE["ENGINES"]

# What a failed compiler run raises: setuptools wraps a missing compiler (ExecError from spawn)
# into CompileError on Unix; PlatformError is a missing toolchain on Windows.
_BUILD_ERRORS = (CCompilerError, CompileError, LinkError, ExecError, PlatformError)

_FALLBACK_WARNING = """\
WARNING: fastgw is installed WITHOUT its compiled modules: {reason}
  It runs on their pure-Python twins, which behave the same but cost about ten times the CPU per
  relayed WebSocket message and about 1.5-2 times per HTTP request or WebSocket handshake
  (`fastgw --version` says "hot path: py").
  For the compiled build, install a C compiler and the Python headers (Debian/Ubuntu:
  apt-get install gcc python3-dev; Fedora: dnf install gcc python3-devel; macOS:
  xcode-select --install), then reinstall without pip's wheel cache:
  pip install --force-reinstall --no-deps --no-cache-dir <the same source>
  Set FASTGW_REQUIRE_EXTENSIONS=1 to make this an error instead.
"""


class RequiredExtensionError(CompileError):
    """A module did not compile and FASTGW_REQUIRE_EXTENSIONS=1 forbids the fallback."""


class BuildExt(build_ext):
    """build_ext that compiles on every core and falls back to the pure-Python twins.

    Every compiled module has a twin (its own .py, or <engine>_py.py), so a machine without a
    working C compiler can still install fastgw: then no extension is installed at all (the
    hot-path modules cimport each other's types, so a partial set would not import) and one
    warning says what that costs and how to get the compiled build. FASTGW_REQUIRE_EXTENSIONS=1
    turns the fallback into an error.
    """

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = JOBS
        self._lock = threading.Lock()
        self._failure = None  # why the first module did not compile
        self._done = 0

    def run(self):
        # setuptools builds with inplace off, then copies what was built into the source tree.
        self._in_source = bool(self.inplace or getattr(self, "editable_mode", False))
        try:
            super().run()
        except RequiredExtensionError:
            raise
        except _BUILD_ERRORS as exc:  # no usable compiler before any module was tried
            self._fail(None, exc)
            self._fall_back()

    def build_extensions(self):
        # Largest first: with one job per core the build ends when the last big module does.
        self.extensions = sorted(self.extensions, key=_c_size, reverse=True)
        super().build_extensions()
        if self._failure is not None:
            self._fall_back()  # before setuptools copies the extensions into the source tree

    def build_extension(self, ext):
        if self._failure is not None:
            return  # all or nothing: the rest would be thrown away
        started = time.monotonic()
        try:
            super().build_extension(ext)
        except _BUILD_ERRORS as exc:
            self._fail(ext.name, exc)
            return
        with self._lock:
            self._done += 1
            print(f"fastgw: compiled {ext.name} ({self._done}/{len(self.extensions)}) in "
                  f"{time.monotonic() - started:.1f} s", flush=True)

    def _fail(self, module, exc):
        error = _describe(exc)
        reason = (f"compiling {module} failed: {error}" if module else
                  f"the C compiler cannot be used: {error}")
        if REQUIRE:
            raise RequiredExtensionError(f"FASTGW_REQUIRE_EXTENSIONS=1 and {reason}") from exc
        with self._lock:
            if self._failure is None:
                self._failure = reason

    def _fall_back(self):
        """Leave no extension in the build, nor one of an earlier in-place or editable build in
        the source tree (it would be imported instead of its twin), and say so."""
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            for path in (regular_file, inplace_file) if self._in_source else (regular_file,):
                if os.path.exists(path):
                    os.remove(path)
        self.extensions = []
        text = _FALLBACK_WARNING.format(reason=self._failure)
        sys.stderr.write(text)
        sys.stderr.flush()
        # pip shows a build's output only with -v or when the build fails: the terminal, when
        # there is one, gets the warning directly.
        try:
            with open("/dev/tty", "w") as tty:
                tty.write("\n" + text)
        except OSError:
            pass


def _describe(exc):
    """One line for a compiler failure: the compiler's own messages are already in the log."""
    cause = exc
    while cause is not None:
        if isinstance(cause, FileNotFoundError):
            return f"no C compiler ({cause.filename!r} not found)"
        if isinstance(cause, subprocess.CalledProcessError):
            program = cause.cmd[0] if isinstance(cause.cmd, (list, tuple)) else cause.cmd
            return f"{program} exited with status {cause.returncode}"
        cause = cause.__cause__ or cause.__context__
    return " ".join(str(exc).split()) or type(exc).__name__


def _c_size(ext):
    try:
        return os.path.getsize(ext.sources[0])
    except (OSError, IndexError):
        return 0


extensions = [
    Extension(f"fastgw.{name}", [f"fastgw/{name}.pyx"], extra_compile_args=extra_compile_args)
    for name in ENGINES
]
python_extensions = [
    Extension(f"fastgw.{name}", [f"fastgw/{name}.py"], extra_compile_args=extra_compile_args)
    for name in COMPILED
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("FASTGW_CYTHON_ANNOTATE") == "1",
    ) + cythonize(
        python_extensions,
        compiler_directives=python_directives,
        annotate=os.environ.get("FASTGW_CYTHON_ANNOTATE") == "1",
        nthreads=JOBS,
    ),
    cmdclass={"build_ext": BuildExt},
)
