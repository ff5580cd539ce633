"""Structured logging: one JSON object per line on stderr.

`event(level, name, **fields)` is the only way fastgw modules log. Each line carries a timestamp,
the level, the event name and its fields, so operators can grep and parse them (jq) alike. The
access log and firewall log (accesslog.py, waf.py) are separate streams with their own formats.
"""

from __future__ import annotations

import json
import logging
import sys
import time

logger = logging.getLogger("fastgw")

DEBUG = logging.DEBUG
INFO = logging.INFO
WARNING = logging.WARNING
ERROR = logging.ERROR


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))


def setup(level: int = INFO, stream=None) -> None:
    """Send fastgw's log lines to `stream` (stderr) as JSON; idempotent."""
    for handler in list(logger.handlers):
        if getattr(handler, "_fastgw", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    handler._fastgw = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def event(level: int, name: str, **fields) -> None:
    """Log one structured event, e.g. event(WARNING, "upstream_error", pool="chat", status=502)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def enabled(level: int) -> bool:
    return logger.isEnabledFor(level)
