"""Structured logging: one JSON object per line on stderr.

`event(level, name, **fields)` is the only way fastgw modules log. Each line carries a timestamp,
the level, the event name and its fields, so operators can grep and parse them (jq) alike. The
access log and firewall log (accesslog.py, waf.py) are separate streams with their own formats.

Records go through a queue to a writer thread (logging's QueueHandler/QueueListener): a stderr
that a supervisor reads slowly, or a full pipe, must never stall the event loop.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
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


_listener: logging.handlers.QueueListener | None = None


def setup(level: int = INFO, stream=None) -> None:
    """Send fastgw's log lines to `stream` (stderr) as JSON, through a writer thread; idempotent."""
    global _listener
    for handler in list(logger.handlers):
        if getattr(handler, "_fastgw", False):
            logger.removeHandler(handler)
    if _listener is not None:
        _listener.stop()
    output = logging.StreamHandler(stream or sys.stderr)
    output.setFormatter(JsonLineFormatter())
    records: queue.SimpleQueue = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(records)
    handler._fastgw = True  # type: ignore[attr-defined]
    _listener = logging.handlers.QueueListener(records, output)
    _listener.start()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def flush() -> None:
    """Write out every queued line (at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(flush)


def event(level: int, name: str, **fields) -> None:
    """Log one structured event, e.g. event(WARNING, "upstream_error", pool="chat", status=502)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def enabled(level: int) -> bool:
    return logger.isEnabledFor(level)
