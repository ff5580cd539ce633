"""The access log's records: one per HTTP request and per WebSocket handshake, and one
`session-end` record per WebSocket session. Pure: values in, a dict out (logfile.py writes it).

Field names are the cloud application gateway's access log names where one exists (clientIp,
clientPort, httpMethod, requestUri, httpStatus, httpVersion, receivedBytes, sentBytes, timeTaken,
host, originalHost, listenerName, ruleName, backendPoolName, backendSettingName, serverRouted,
serverStatus, serverResponseLatency, transactionId, ...). Times are in seconds.
"""

from __future__ import annotations

import time
from typing import Any


def timestamp(t: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: 2026-12-05T09:00:00.123Z."""
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def request_record(client: Any, ex: Any, status: int, error: str, now: float,
                   labels: tuple) -> dict[str, Any]:
    """The record of one answered request or handshake. `client` is the connection
    (contracts.ClientSide), `ex` the exchange (contracts.Exchange), `status` the status logged
    (499 for a client that left), `now` the loop time, `labels` the request counter's
    (listener, rule, pool, status class)."""
    head = ex.head
    backend = ex.backend
    endpoint = ex.endpoint
    tls = client.tls_info
    if head is not None:
        method = head.method.decode("latin-1")
        uri = head.original_url.decode("latin-1")
        agent = (head.header(b"user-agent") or b"").decode("latin-1")
        version = f"HTTP/{head.version}"
        received = head.size + ex.body_received
        taken = round(now - head.t0, 6) if head.t0 else 0.0
        original_host = (head.host or b"").decode("latin-1")
    else:
        method = uri = agent = version = original_host = ""
        received = 0
        taken = 0.0
    host = backend.settings.host_name if backend is not None else ""
    return {
        "timeStamp": timestamp(),
        "type": "websocket" if ex.handshake else "request",
        "clientIp": client.peer_ip,
        "clientPort": client.peer_port,
        "httpMethod": method,
        "requestUri": uri,
        "userAgent": agent,
        "httpStatus": status,
        "httpVersion": version,
        "receivedBytes": received,
        "sentBytes": client.sent - ex.sent_at_start,
        "timeTaken": taken,
        "sslEnabled": "on" if tls else "off",
        "sslProtocol": tls[0] if tls else "",
        "sslCipher": tls[1] if tls else "",
        "host": host or original_host,
        "originalHost": original_host,
        "listenerName": labels[0],
        "ruleName": labels[1],
        "backendPoolName": labels[2],
        "backendSettingName": backend.settings.name if backend is not None else "",
        "serverRouted": endpoint.name if endpoint is not None else "",
        "serverStatus": (str(ex.status) if endpoint is not None and ex.server_latency is not None
                         else ""),
        "serverResponseLatency": (round(ex.server_latency, 6) if ex.server_latency is not None
                                  else None),
        "transactionId": ex.request_id.decode("latin-1"),
        "error_info": error or ex.error,
    }


def session_record(session: Any) -> dict[str, Any]:
    """The `session-end` record of a WebSocket session (relay.WebSocketSession)."""
    fields = session.summary()
    client = session.client
    exchange = session.exchange
    return {
        "timeStamp": timestamp(), "type": "session-end",
        "clientIp": client.peer_ip, "clientPort": client.peer_port,
        "requestUri": exchange.head.original_url.decode("latin-1"),
        "listenerName": exchange.route.listener.name,
        "ruleName": fields["rule"], "backendPoolName": fields["pool"],
        "backendSettingName": exchange.backend.settings.name,
        "serverRouted": fields["server"],
        "transactionId": exchange.request_id.decode("latin-1"),
        "duration": fields["duration"], "closeCode": fields["close_code"],
        "closedBy": fields["closed_by"], "closeReason": fields["close_reason"],
        "clientFrames": fields["client_frames"], "clientBytes": fields["client_bytes"],
        "backendFrames": fields["backend_frames"], "backendBytes": fields["backend_bytes"],
        "clientMessages": fields["client_messages"],
        "backendMessages": fields["backend_messages"],
    }
