"""Compile the C load generator and echo backend (csrc/) with gcc into a cache directory.

The binaries are rebuilt when a source file, the flags or the compiler change: the cache key is a
hash of all of them.  Nothing is ever compiled into the source tree.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
PROGRAMS = ("wsecho", "wsload")
CFLAGS = ["-O2", "-Wall", "-Wextra", "-std=gnu11"]


class BuildError(RuntimeError):
    """gcc is missing or the compilation failed (the message carries gcc's output)."""


def cache_root() -> Path:
    env = os.environ.get("FASTGW_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastgw-bench"


def _cc() -> str:
    cc = os.environ.get("CC", "gcc")
    path = shutil.which(cc)
    if not path:
        raise BuildError(f"C compiler {cc!r} not found (apt-get install -y gcc)")
    return path


def build() -> dict[str, Path]:
    """Return {program name: path of the executable}, compiling if needed."""
    cc = _cc()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256()
    h.update(version.encode())
    h.update(" ".join(CFLAGS).encode())
    for src in sorted(CSRC.iterdir()):
        if src.suffix in (".c", ".h"):
            h.update(src.name.encode())
            h.update(src.read_bytes())
    outdir = cache_root() / h.hexdigest()[:16]
    outdir.mkdir(parents=True, exist_ok=True)
    result = {}
    for prog in PROGRAMS:
        exe = outdir / prog
        if not exe.exists():
            tmp = outdir / f".{prog}.{os.getpid()}.tmp"
            proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(CSRC / f"{prog}.c")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise BuildError(f"compiling {prog}.c failed:\n{proc.stderr}")
            os.replace(tmp, exe)
        result[prog] = exe
    return result
