"""Structured logging: one record per line, in one envelope for every log fastgw writes.

Every line is a JSON object that starts with the same three fields, so that one stream (stderr
often carries all of them) can be filtered and sorted with one field:

    {"time": "2026-12-05T09:00:00.123Z", "level": "info", "log": "event", ...}

`log` says which log the record belongs to: `event` (what the gateway does: `event` names it,
then its fields), `access` (one record per request, handshake and WebSocket session, with the
cloud application gateway's field names: accesslog.py) or `firewall` (one per WAF rule match,
waf.py). `time` is UTC with milliseconds. With the text format (`--log-format text`, the default
when stderr is a terminal) each record is one human-readable line instead.

`event(level, name, **fields)` is the only way fastgw modules log events. Event records go
through a queue to a writer thread (logging's QueueHandler/QueueListener): they are rare, and a
stderr that a supervisor reads slowly must never stall the event loop. The access and firewall
logs are written in batches from the loop itself (logfile.py); both writers share one lock on
stderr (`write_stderr`), so that their lines never interleave mid-line.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
from typing import Any

logger = logging.getLogger("fastgw")

DEBUG = logging.DEBUG
INFO = logging.INFO
WARNING = logging.WARNING
ERROR = logging.ERROR

LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}

FORMATS = ("json", "text")
_text = False  # the text format is in use (setup)
_stderr_lock = threading.Lock()

def timestamp(t: float | None = None) -> str:
    """The `time` of a record (accesslog.timestamp, compiled; imported when first needed, so
    that importing this module never needs the compiled modules: the CLI reports their absence
    itself)."""
    from fastgw.accesslog import timestamp as compiled
    return compiled(t)


def text_format() -> bool:
    """Records for stderr are written as text lines (setup(fmt="text"))."""
    return _text


def json_record(log: str, level: str, record: dict[str, Any], when: str | None = None) -> str:
    """One record as a JSON line (without the newline): the envelope, then the record's fields
    (a `time` in the record is the envelope's)."""
    line = {"time": when or record.get("time") or timestamp(), "level": level, "log": log}
    line.update(record)
    return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


def text_record(log: str, level: str, record: dict[str, Any], when: str | None = None) -> str:
    """One record as a human-readable line: time, level, log, then `key=value` pairs (values
    with spaces or quotes quoted as JSON strings)."""
    parts = [when or str(record.get("time") or timestamp()), f"{level:<7}", f"{log:<8}"]
    for key, value in record.items():
        if key == "time":
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if not text or text.find(" ") >= 0 or text.find('"') >= 0 or not text.isprintable():
            text = json.dumps(text, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def json_to_text(line: str) -> str:
    """A JSON record line (json_record, accesslog) as a text line."""
    record = json.loads(line)
    when = record.pop("time", "")
    level = record.pop("level", "info")
    name = record.pop("log", "")
    return text_record(name, level, record, when)


def write_stderr(text: str) -> None:
    """Write whole lines to stderr under the lock every stderr writer of fastgw takes."""
    with _stderr_lock:
        stream = sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr: nothing to tell it to
            pass


class _EventFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {"event": record.getMessage()}
        extra = getattr(record, "fields", None)
        if extra:
            fields.update(extra)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        level = LEVEL_NAMES.get(record.levelno, record.levelname.lower())
        when = timestamp(record.created)
        return (text_record if _text else json_record)("event", level, fields, when)


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_stderr(self.format(record) + "\n")
        except Exception:  # pragma: no cover - logging must never raise into the gateway
            self.handleError(record)


_listener: logging.handlers.QueueListener | None = None


def setup(level: int = INFO, fmt: str | None = None) -> None:
    """Send fastgw's event records to stderr, through a writer thread; idempotent. `fmt`:
    "json" or "text"; None chooses text when stderr is a terminal."""
    global _listener, _text
    _text = (fmt == "text") if fmt is not None else _is_terminal()
    for handler in list(logger.handlers):
        if getattr(handler, "_fastgw", False):
            logger.removeHandler(handler)
    if _listener is not None:
        _listener.stop()
    output = _StderrHandler()
    output.setFormatter(_EventFormatter())
    records: queue.SimpleQueue = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(records)
    handler._fastgw = True  # type: ignore[attr-defined]
    _listener = logging.handlers.QueueListener(records, output)
    _listener.start()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def flush() -> None:
    """Write out every queued event record (at exit)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(flush)


def event(level: int, name: str, **fields: Any) -> None:
    """Log one structured event, e.g. event(WARNING, "upstream_error", pool="chat", status=502)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


def enabled(level: int) -> bool:
    return logger.isEnabledFor(level)
