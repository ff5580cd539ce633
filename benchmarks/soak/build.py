"""Compile the soak benchmark's C programs (csrc/) next to the end-to-end suite's.

``wssoak`` (the session client) and ``wspush`` (the slow-consumer backend) include the suite's
``e2e/csrc/common.h`` (SHA-1, base64, masking), so they are built with the suite's compiler,
flags and cache directory (``e2e/build.py``); the cache key also covers that header.  The echo
backend ``wsecho`` is the suite's own, built by ``e2e.build.build()``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from ..e2e import build as e2e_build

CSRC = Path(__file__).resolve().parent / "csrc"
PROGRAMS = ("wssoak", "wspush")
# common.h holds helpers each program uses only some of
CFLAGS = [*e2e_build.CFLAGS, "-Wno-unused-function", "-I", str(e2e_build.CSRC)]


def build() -> dict[str, Path]:
    """{program: executable} for wssoak, wspush and the suite's wsecho, compiling if needed."""
    cc = e2e_build._cc()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h = hashlib.sha256()
    h.update(version.encode())
    h.update(" ".join(CFLAGS).encode())
    for src in [*sorted(CSRC.glob("*.c")), e2e_build.CSRC / "common.h"]:
        h.update(src.name.encode())
        h.update(src.read_bytes())
    outdir = e2e_build.cache_root() / f"soak-{h.hexdigest()[:16]}"
    outdir.mkdir(parents=True, exist_ok=True)
    result = {"wsecho": e2e_build.build()["wsecho"]}
    for prog in PROGRAMS:
        exe = outdir / prog
        if not exe.exists():
            tmp = outdir / f".{prog}.{os.getpid()}.tmp"
            proc = subprocess.run([cc, *CFLAGS, "-o", str(tmp), str(CSRC / f"{prog}.c")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise e2e_build.BuildError(f"compiling {prog}.c failed:\n{proc.stderr}")
            os.replace(tmp, exe)
        result[prog] = exe
    return result
