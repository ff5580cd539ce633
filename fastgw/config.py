"""Configuration: TOML (tomllib) -> frozen dataclasses, with every check. (Work in progress.)"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class WafConfig:
    """The `[waf]` table, or a listener's own `waf` table (which replaces it for that listener)."""

    mode: str = "off"  # "off" | "detection" | "prevention"
    crs_path: str = "/usr/share/modsecurity-crs"
    crs_setup: str = "/etc/modsecurity/crs/crs-setup.conf"
    paranoia_level: int = 1
    anomaly_threshold: int = 5
    request_body_check: bool = True
    max_request_body_size: int = 131072
    disabled_rules: tuple[int, ...] = ()
    exclusions: tuple[str, ...] = ()
    custom_rules: tuple[str, ...] = ()  # absolute paths: relative ones are resolved against the config file
