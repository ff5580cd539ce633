"""The access log's line writer, pure Python: the twin of fastgw/_logline.pyx, byte for byte.

fastgw/logline.py picks one of the two; the contract is fastgw/_logline.pyi. Here a line is an
f-string encoded once; JSON strings are escaped by json.dumps(..., ensure_ascii=False) whenever
a value has a character to escape (RFC 8259 section 7), and lone surrogates become "?" when the
line is encoded.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

__all__ = ["timestamp", "request_line", "session_line", "transaction_id"]

# (second, its text): formatted once per second.
_second: tuple[int, str] = (-1, "")
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))


def timestamp(now: float) -> str:
    global _second
    second = int(now)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1] + _MILLIS[min(max(int(now * 1000) - second * 1000, 0), 999)]


def _seconds(t: float) -> str:
    micros = int(t * 1_000_000 + 0.5)
    if micros <= 0:
        return "0.0"
    whole, frac = divmod(micros, 1_000_000)
    return f"{whole}.{(f'{frac:06d}'.rstrip('0') or '0')}"


def _text(value: str) -> str:
    for c in value:
        if c < " " or c == '"' or c == "\\":
            return json.dumps(value, ensure_ascii=False)[1:-1]
    return value


def _wire(value: bytes) -> str:
    return _text(value.decode("latin-1"))


def _encode(line: str) -> bytes:
    return line.encode("utf-8", "replace")


def _envelope(now: float) -> str:
    when = timestamp(now)
    return f'{{"time":"{when}","level":"info","log":"access","timeStamp":"{when}"'


def _route(listener: str, rule: str, pool: str, settings: str, server: str) -> str:
    """The fields both records have, from listenerName to serverRouted."""
    return (f'"listenerName":"{_text(listener)}","ruleName":"{_text(rule)}",'
            f'"backendPoolName":"{_text(pool)}","backendSettingName":"{_text(settings)}",'
            f'"serverRouted":"{_text(server)}"')


def request_line(now: float, handshake: bool, client_ip: str, client_port: int, tls: Any,
                 method: bytes, uri: bytes, agent: bytes, version: str, status: int,
                 received: int, sent: int, taken: float, host: str | None,
                 original_host: bytes, listener: str, rule: str, pool: str, settings: str,
                 server: str, latency: float | None, transaction_id: bytes, error: str) -> bytes:
    on, protocol, cipher = ("on", _text(tls[0]), _text(tls[1])) if tls is not None else ("off", "", "")
    original = _wire(original_host)
    return _encode(
        f'{_envelope(now)},"type":"{"websocket" if handshake else "request"}","clientIp":"{_text(client_ip)}",'
        f'"clientPort":{client_port},"httpMethod":"{_wire(method)}","requestUri":"{_wire(uri)}",'
        f'"userAgent":"{_wire(agent)}","httpStatus":{status},"httpVersion":"{_text(version)}",'
        f'"receivedBytes":{received},"sentBytes":{sent},"timeTaken":{_seconds(taken)},'
        f'"sslEnabled":"{on}","sslProtocol":"{protocol}","sslCipher":"{cipher}",'
        f'"host":"{original if host is None else _text(host)}","originalHost":"{original}",'
        f'{_route(listener, rule, pool, settings, server)},'
        f'"serverStatus":"{status if latency is not None and server else ""}",'
        f'"serverResponseLatency":{"null" if latency is None else _seconds(latency)},'
        f'"transactionId":"{_wire(transaction_id)}","error_info":"{_text(error)}"}}')


def session_line(now: float, client_ip: str, client_port: int, uri: bytes, listener: str,
                 rule: str, pool: str, settings: str, server: str, transaction_id: bytes,
                 duration: float, close_code: int, closed_by: str, close_reason: str,
                 client_frames: int, client_bytes: int, backend_frames: int, backend_bytes: int,
                 client_messages: int, backend_messages: int, upgrades: int) -> bytes:
    return _encode(
        f'{_envelope(now)},"type":"session-end","clientIp":"{_text(client_ip)}","clientPort":{client_port},'
        f'"requestUri":"{_wire(uri)}",{_route(listener, rule, pool, settings, server)},'
        f'"transactionId":"{_wire(transaction_id)}","duration":{_seconds(duration)},'
        f'"closeCode":{close_code},"closedBy":"{_text(closed_by)}",'
        f'"closeReason":"{_text(close_reason)}","clientFrames":{client_frames},'
        f'"clientBytes":{client_bytes},"backendFrames":{backend_frames},'
        f'"backendBytes":{backend_bytes},"clientMessages":{client_messages},'
        f'"backendMessages":{backend_messages},"upgrades":{upgrades}}}')


_ID_PREFIX = os.urandom(8).hex().encode()
_id_counter = itertools.count(1)


def transaction_id() -> bytes:
    return b"%s%016x" % (_ID_PREFIX, next(_id_counter))
