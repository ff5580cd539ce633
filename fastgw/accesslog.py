"""The access log's records: one per HTTP request and per WebSocket handshake, and one
`session-end` record per WebSocket session. Pure: values in, a line out (logfile.py writes it).

Field names are the cloud application gateway's access log names where one exists (clientIp,
clientPort, httpMethod, requestUri, httpStatus, httpVersion, receivedBytes, sentBytes, timeTaken,
host, originalHost, listenerName, ruleName, backendPoolName, backendSettingName, serverRouted,
serverStatus, serverResponseLatency, transactionId, ...). Times are in seconds. Each record sits in
the log envelope (log.py): `time` (equal to the record's own `timeStamp`), `level`, `log`.

This module picks a request record's values out of the request and the route (a session's are
picked by recorder.py, which knows the session's type); the line itself is written by the line
writer (fastgw/logline.py: a Cython engine with a pure-Python
twin), field by field into one buffer, as bytes ready for the file.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastgw.logline import request_line as _request_line
from fastgw.logline import timestamp as _timestamp

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.http1 import RequestHead


def timestamp(t: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: 2026-12-05T09:00:00.123Z (the `time` of every log
    record, log.py)."""
    return _timestamp(time.time() if t is None else t)


def request_line(now: float, handshake: bool, peer_ip: str, peer_port: int, tls: tuple | None,
                 head: RequestHead | None, status: int, received_body: int, sent: int,
                 taken: float, labels: tuple, settings: Any, server: str, latency: float | None,
                 request_id: bytes, error: str) -> bytes:
    """The JSON line of one answered request or handshake: `now` its time (time.time()), `head`
    the request (None for the refusal of one that could not be parsed), `status` the status
    logged (499 for a client that left), `taken` seconds since the request's first byte,
    `labels` the request counter's (listener, rule, pool, status class), `settings` the backend
    settings (config.SettingsConfig) or None, `server` the server routed to ("" for none),
    `latency` its response time (None when it did not answer)."""
    method = uri = agent = original_host = b""
    version = ""
    received = received_body
    if head is not None:
        method = head.method
        uri = head.original_url
        user_agent = head.header(b"user-agent")
        if user_agent is not None:
            agent = user_agent
        version = "HTTP/1.1" if head.version == "1.1" else "HTTP/" + head.version
        received += head.size
        if head.host is not None:
            original_host = head.host
    settings_name = ""
    host = None  # the backend got the client's Host
    if settings is not None:
        settings_name = settings.name
        if settings.host_name:
            host = settings.host_name
    return _request_line(now, handshake, peer_ip, peer_port, tls, method, uri, agent, version,
                         status, received, sent, taken, host, original_host, labels[0],
                         labels[1], labels[2], settings_name, server, latency, request_id, error)
