"""Build the one native extension, fastgw._frames (Cython).

Everything else is declared in pyproject.toml. Build knobs are environment variables, because
pip and cibuildwheel drop setup.py command-line flags:

  FASTGW_CYTHON_ANNOTATE=1   write the Cython annotation HTML next to the .pyx
  FASTGW_DEBUG_BUILD=1       -O0 -g and Cython bounds checks, for gdb/valgrind sessions
"""
import os

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

extensions = [
    Extension(
        "fastgw._frames",
        ["fastgw/_frames.pyx"],
        extra_compile_args=extra_compile_args,
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("FASTGW_CYTHON_ANNOTATE") == "1",
    )
)
