"""Checks of a configuration against the outside world, for `fastgw check`, startup and reload.

config.py validates the file itself; this module looks at what the file points to: certificate
and key files (readable, PEM, matching, not encrypted without a passphrase; expired is only a
warning), CA bundles (of https backends, and listeners' client_ca), and the WAF's rule sets.
Problems are (file, key path, reason), like a ConfigError's; warnings are printed lines.
"""

from __future__ import annotations

import dataclasses
import os
import ssl

from fastgw import config as config_mod
from fastgw import tls
from fastgw.config import Config, item_key
from fastgw.errors import ConfigError


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


def check(cfg: Config) -> tuple[list[tuple[str, str, str]], list[str]]:
    problems: list[tuple[str, str, str]] = []
    warnings: list[str] = []
    src = cfg.source
    for i, lst in enumerate(cfg.listeners):
        if lst.protocol != "https":
            continue
        prefix = item_key("listeners", i, lst.name)
        unreadable = False
        for key in ("certificate", "private_key", "client_ca"):
            if getattr(lst, key) is None:
                continue
            why = _readable(getattr(lst, key))
            if why:
                problems.append((src, f"{prefix}.{key}", why))
                unreadable = True
        if unreadable:
            continue
        try:
            tls.listener_context(lst)
        except tls.TlsConfigError as exc:
            problems.append((src, f"{prefix}.{exc.key}", exc.reason))
            continue
        assert lst.certificate is not None  # listener_context() raised otherwise
        expired = tls.expiry_warning(lst.certificate)
        if expired:
            warnings.append(f"{src}:{prefix}.certificate: warning: {expired}")
    for i, s in enumerate(cfg.backend_settings):
        if not s.trusted_root_certificate:
            continue
        key = f"{item_key('backend_settings', i, s.name)}.trusted_root_certificate"
        why = _readable(s.trusted_root_certificate)
        if why:
            problems.append((src, key, why))
            continue
        try:
            ssl.create_default_context(cafile=s.trusted_root_certificate)
        except ssl.SSLError as exc:
            problems.append((src, key, f"{s.trusted_root_certificate}: not a PEM CA bundle "
                             f"({exc.reason or exc})"))
    # Imported here: a compiled module, which the CLI must be able to report missing first.
    from fastgw import local
    for key, _, _, path in local.page_files(cfg):
        _, why = local.read_page(path)
        if why:
            problems.append((src, key, why))
    problems += waf_problems(cfg)
    return problems, warnings


def waf_problems(cfg: Config) -> list[tuple[str, str, str]]:
    """The WAF's own checks (rule files parse, the binding is installed), for each policy in use."""
    policies = []
    if cfg.waf.mode != "off":
        policies.append(("waf", cfg.waf))
    for i, lst in enumerate(cfg.listeners):
        if lst.waf is not None and lst.waf.mode != "off":
            policies.append((f"{item_key('listeners', i, lst.name)}.waf", lst.waf))
    if not policies:
        return []
    from fastgw import waf
    problems = []
    for prefix, policy in policies:
        for key, reason in waf.check(policy, key=prefix):
            problems.append((cfg.source, key, reason))
    return problems


def load_checked(path: str) -> Config:
    """Load a configuration and run every check that needs the outside world (the checks of
    `fastgw check`, start-up and reload); raise ConfigError. Warnings join cfg.warnings."""
    cfg = config_mod.load(path)
    problems, warnings = check(cfg)
    if problems:
        raise ConfigError(problems)
    if warnings:
        cfg = dataclasses.replace(cfg, warnings=cfg.warnings + tuple(warnings))
    return cfg
