"""Build the native extensions: the frame engine fastgw._frames (Cython), and the gateway's hot
path (the modules fastgw/native.py lists), compiled from their own .py sources with the .pxd
declarations beside them (Cython's pure Python mode: each .py stays its own pure-Python twin).

Everything else is declared in pyproject.toml. Build knobs are environment variables, because
pip and cibuildwheel drop setup.py command-line flags:

  FASTGW_CYTHON_ANNOTATE=1   write the Cython annotation HTML next to the .pyx
  FASTGW_DEBUG_BUILD=1       -O0 -g and Cython bounds checks, for gdb/valgrind sessions
"""
import os
import runpy

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGW_DEBUG_BUILD") == "1"

directives = {
    "language_level": 3,
    "embedsignature": True,
    # The frame engine indexes raw byte pointers itself; every bound is checked in the code.
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}

extra_compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

# The hot-path modules are ordinary Python: negative indexes and Python's annotation semantics
# stay (types come from the .pxd files only, never from the annotations).
python_directives = dict(directives, boundscheck=True, wraparound=True, annotation_typing=False)

COMPILED = runpy.run_path(os.path.join("fastgw", "native.py"))["COMPILED"]

extensions = [
    Extension(
        "fastgw._frames",
        ["fastgw/_frames.pyx"],
        extra_compile_args=extra_compile_args,
    )
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
        nthreads=os.cpu_count() or 1,
    ),
    # Sixteen C files: compile them on every core (pip drops command-line flags, not these).
    options={"build_ext": {"parallel": os.cpu_count() or 1}},
)
