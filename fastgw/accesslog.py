"""The access log's records: one per HTTP request and per WebSocket handshake, and one
`session-end` record per WebSocket session. Pure: values in, a line out (logfile.py writes it).

Field names are the cloud application gateway's access log names where one exists (clientIp,
clientPort, httpMethod, requestUri, httpStatus, httpVersion, receivedBytes, sentBytes, timeTaken,
host, originalHost, listenerName, ruleName, backendPoolName, backendSettingName, serverRouted,
serverStatus, serverResponseLatency, transactionId, ...). Times are in seconds. Each record sits in
the log envelope (log.py): `time` (equal to the record's own `timeStamp`), `level`, `log`.

A record is built once per request, so its JSON line is built directly, by one f-string per kind
of record: compiled (fastgw/native.py), that is one allocation for the whole line, and the few
values that come from the client (method, URI, User-Agent, Host, X-Request-Id) are checked for
characters JSON must escape by a C loop. Configuration names need no escaping (config.py allows
letters, digits and `_.-` only); addresses and numbers neither.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fastgw.http1 import RequestHead

# (second, its text): formatted once per second; one tuple, so that a thread reading it while
# another replaces it sees a matching pair.
_second: tuple[int, str] = (-1, "")
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))


def timestamp(t: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: 2026-12-05T09:00:00.123Z (the `time` of every log
    record, log.py)."""
    global _second
    if t is None:
        t = time.time()
    second = int(t)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1] + _MILLIS[int(t * 1000) - second * 1000]


def seconds(t: float) -> str:
    """A duration in seconds as a JSON number with microseconds at most (0.0012, 3.0), built
    from integers: cheaper than formatting a float."""
    micros = int(t * 1_000_000 + 0.5)
    if micros <= 0:
        return "0.0"
    digits = str(micros)
    if len(digits) <= 6:
        text = "0." + "0" * (6 - len(digits)) + digits
    else:
        text = digits[:-6] + "." + digits[-6:]
    text = text.rstrip("0")
    return text + "0" if text[-1] == "." else text


def json_text(value: str) -> str:
    """`value` as the inside of a JSON string (RFC 8259 section 7): most values need nothing."""
    for c in value:
        if c < " " or c == '"' or c == "\\" or c > "~":
            return json.dumps(value, ensure_ascii=False)[1:-1]
    return value


def wire_text(value: bytes) -> str:
    """Bytes from the wire (latin-1, as HTTP/1.1 defines them) as the inside of a JSON string."""
    for c in value:
        if c < 0x20 or c == 0x22 or c == 0x5C or c > 0x7E:
            return json.dumps(value.decode("latin-1"), ensure_ascii=False)[1:-1]
    return value.decode("ascii")


def request_line(when: str, handshake: bool, peer_ip: str, peer_port: int, tls: tuple | None,
                 head: RequestHead | None, status: int, received_body: int, sent: int,
                 taken: float, labels: tuple, settings: Any, server: str, latency: float | None,
                 request_id: bytes, error: str) -> str:
    """The JSON line of one answered request or handshake: `when` its timestamp, `head` the
    request (None for the refusal of one that could not be parsed), `status` the status logged
    (499 for a client that left), `taken` seconds since the request's first byte, `labels` the
    request counter's (listener, rule, pool, status class), `settings` the backend settings
    (config.SettingsConfig) or None, `server` the server routed to ("" for none), `latency` its
    response time (None when it did not answer)."""
    received = received_body
    method = uri = agent = version = original_host = ""
    if head is not None:
        method = wire_text(head.method)
        uri = wire_text(head.original_url)
        user_agent = head.header(b"user-agent")
        if user_agent is not None:
            agent = wire_text(user_agent)
        version = "HTTP/1.1" if head.version == "1.1" else "HTTP/" + head.version
        received += head.size
        if head.host is not None:
            original_host = wire_text(head.host)
    host = original_host
    settings_name = ""
    if settings is not None:
        settings_name = settings.name
        if settings.host_name:
            host = json_text(settings.host_name)
    latency_text = "null"
    server_status = ""
    if latency is not None:
        latency_text = seconds(latency)
        if server:
            server_status = str(status)
    on, protocol, cipher = ("on", tls[0], tls[1]) if tls else ("off", "", "")
    return (
        f'{{"time":"{when}","level":"info","log":"access","timeStamp":"{when}",'
        f'"type":"{"websocket" if handshake else "request"}","clientIp":"{peer_ip}",'
        f'"clientPort":{peer_port},"httpMethod":"{method}","requestUri":"{uri}",'
        f'"userAgent":"{agent}","httpStatus":{status},"httpVersion":"{version}",'
        f'"receivedBytes":{received},"sentBytes":{sent},"timeTaken":{seconds(taken)},'
        f'"sslEnabled":"{on}","sslProtocol":"{protocol}","sslCipher":"{cipher}",'
        f'"host":"{host}","originalHost":"{original_host}","listenerName":"{labels[0]}",'
        f'"ruleName":"{labels[1]}","backendPoolName":"{labels[2]}",'
        f'"backendSettingName":"{settings_name}","serverRouted":"{server}",'
        f'"serverStatus":"{server_status}","serverResponseLatency":{latency_text},'
        f'"transactionId":"{wire_text(request_id)}","error_info":"{json_text(error)}"}}'
    )


def session_line(session: Any, when: str) -> str:
    """The JSON line of a WebSocket session's `session-end` record (relay.WebSocketSession)."""
    f = session.summary()
    client = session.client
    exchange = session.exchange
    return (
        f'{{"time":"{when}","level":"info","log":"access","timeStamp":"{when}",'
        f'"type":"session-end","clientIp":"{client.peer_ip}","clientPort":{client.peer_port},'
        f'"requestUri":"{wire_text(exchange.head.original_url)}",'
        f'"listenerName":"{exchange.route.listener.name}","ruleName":"{f["rule"]}",'
        f'"backendPoolName":"{f["pool"]}","backendSettingName":"{exchange.backend.settings.name}",'
        f'"serverRouted":"{f["server"]}","transactionId":"{wire_text(exchange.request_id)}",'
        f'"duration":{seconds(f["duration"])},"closeCode":{f["close_code"]},"closedBy":"{f["closed_by"]}",'
        f'"closeReason":"{json_text(f["close_reason"] or "")}",'
        f'"clientFrames":{f["client_frames"]},"clientBytes":{f["client_bytes"]},'
        f'"backendFrames":{f["backend_frames"]},"backendBytes":{f["backend_bytes"]},'
        f'"clientMessages":{f["client_messages"]},"backendMessages":{f["backend_messages"]},'
        f'"upgrades":{f["upgrades"]}}}'
    )
