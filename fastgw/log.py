"""Structured logging: one record per line, in one envelope for every log fastgw writes.

Every line is a JSON object that starts with the same three fields, so that one stream (stderr
often carries all of them) can be filtered and sorted with one field:

    {"time": "2026-12-05T09:00:00.123Z", "level": "info", "log": "event", ...}

`log` says which log the record belongs to: `event` (what the gateway does: `event` names it,
then its fields), `access` (one record per request, handshake and WebSocket session, with the
cloud application gateway's field names: accesslog.py) or `firewall` (one per WAF rule match,
waf.py). `time` is UTC with milliseconds. With the text format (`--log-format text`, the default
when stderr is a terminal) each record is one human-readable line instead.

`event(level, name, **fields)` is the only way fastgw modules log events. A stderr that a
supervisor or a container runtime reads slowly must never stall the event loop, so whatever goes
to stderr (event records, and the access and firewall logs' batches when their destination is
"-", logfile.py) is handed to one writer thread (`write_stderr`): one handoff per event, or per
batch of access records, never per access record; one writer, so lines never interleave.
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
_STOP = object()
_stderr_queue: queue.SimpleQueue | None = None  # the writer thread's, once setup() started it
_stderr_thread: threading.Thread | None = None

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
    """Write whole lines to stderr: through the writer thread once setup() started it (the
    caller never waits for the pipe), in place before that (the CLI's own messages, tests)."""
    q = _stderr_queue
    if q is None:
        _write_now(text)
    else:
        q.put(text)


def _write_now(text: str) -> None:
    stream = sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stderr: nothing to tell it to
        pass


def _stderr_writer(q: queue.SimpleQueue) -> None:
    while True:
        item = q.get()
        parts = []
        while item is not _STOP:
            parts.append(item)
            try:  # what else is waiting goes out in the same write
                item = q.get_nowait()
            except queue.Empty:
                break
        if parts:
            _write_now("".join(parts))
        if item is _STOP:
            return


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
    global _listener, _text, _stderr_queue, _stderr_thread
    _text = (fmt == "text") if fmt is not None else _is_terminal()
    if _stderr_thread is None:
        _stderr_queue = queue.SimpleQueue()
        _stderr_thread = threading.Thread(target=_stderr_writer, args=(_stderr_queue,),
                                          name="fastgw-stderr", daemon=True)
        _stderr_thread.start()
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
    """Write out every queued record (at exit)."""
    global _listener, _stderr_queue, _stderr_thread
    if _listener is not None:
        _listener.stop()
        _listener = None
    if _stderr_thread is not None and _stderr_queue is not None:
        _stderr_queue.put(_STOP)
        _stderr_thread.join(5)
        _stderr_thread = None
        _stderr_queue = None


atexit.register(flush)


def event(level: int, name: str, **fields: Any) -> None:
    """Log one structured event, e.g. event(WARNING, "upstream_error", pool="chat", status=502)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": fields})


# Whether events at a level are logged: the logger's own cached check, bound once (the hot
# path asks per session; a wrapper would add a Python call).
enabled = logger.isEnabledFor
