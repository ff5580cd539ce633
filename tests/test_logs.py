"""The logs: one envelope on every line, the access log's record builders, and the batched writer.

- accesslog.py picks each record's values and the line writer (fastgw/_logline.pyx and its
  twin) builds its JSON line: it must be valid JSON whatever bytes a client sends (URI,
  User-Agent, Host, X-Request-Id), numbers must read back as numbers, and the C writer must
  give the twin's bytes (hypothesis, with json.loads as the oracle).
- logfile.LogFile writes from the loop in batches (64 KiB, or one second), loses nothing on
  reopen (SIGHUP) or stop (SIGTERM), and survives a full disk: counted, logged once, bounded.
- `fastgw serve`: every stderr line is one JSON object with `time`, `level` and `log`;
  `--log-format text` gives readable lines instead.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import signal
import time
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import accesslog, log, logline
from fastgw.http1 import RequestHead, analyse_request
from fastgw.logfile import BUFFER_BYTES, RETAIN_BYTES, LogFile
from fastgw.stats import Stats

from support import AiohttpBackend, free_port, gateway_toml, start_cli, wait_port

# The C line writer, when the compiled build is in use (the twin is always compared with it).
c_engine = importlib.import_module("fastgw._logline") if logline.IMPLEMENTATION == "c" else None
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- record builders -------------------------------------------------------------------------


def head_of(uri: bytes, agent: bytes, host: bytes) -> RequestHead:
    head = RequestHead(b"GET", uri, "1.1", [(b"Host", host), (b"User-Agent", agent)])
    analyse_request(head)
    head.size = 60  # set by the connection from the bytes it read
    return head


def line_for(head, **kw) -> dict:
    args = dict(now=time.time(), handshake=False, peer_ip="198.51.100.7",
                peer_port=40000, tls=None, head=head, status=200, received_body=0, sent=10,
                taken=0.25, labels=("web", "rule", "pool", "2xx"), settings=None, server="",
                latency=None, request_id=b"abc", error="")
    args.update(kw)
    line = accesslog.request_line(*args.values())
    assert isinstance(line, bytes) and b"\n" not in line
    return json.loads(line)


@settings(max_examples=300, deadline=None)
@given(uri=st.binary(max_size=40), agent=st.binary(max_size=40), host=st.binary(max_size=20),
       request_id=st.binary(max_size=20), error=st.text(max_size=20))
def test_request_line_is_json_whatever_the_client_sent(uri, agent, host, request_id, error):
    head = RequestHead(b"GET", b"/" + uri, "1.1", [(b"User-Agent", agent)])
    head.fields = {b"user-agent": [agent]}  # as analyse_request indexes it
    head.host = host
    record = line_for(head, request_id=request_id, error=error)
    assert record["requestUri"] == ("/" + uri.decode("latin-1"))
    assert record["userAgent"] == agent.decode("latin-1")
    assert record["originalHost"] == record["host"] == host.decode("latin-1")
    assert record["transactionId"] == request_id.decode("latin-1")
    assert record["error_info"] == utf8(error)
    assert (record["time"], record["level"], record["log"]) == (record["timeStamp"], "info", "access")


def test_request_line_fields_and_numbers():
    record = line_for(head_of(b"/a?b=1", b"curl/8", b"example.com"), status=502, sent=5,
                      received_body=7, taken=0.0012, latency=1.5, server="10.0.0.1:80",
                      tls=("TLSv1.3", "TLS_AES_128_GCM_SHA256"), handshake=True)
    assert record["type"] == "websocket" and record["httpStatus"] == 502
    assert record["httpMethod"] == "GET" and record["httpVersion"] == "HTTP/1.1"
    assert record["timeTaken"] == 0.0012 and record["serverResponseLatency"] == 1.5
    assert record["serverStatus"] == "502" and record["serverRouted"] == "10.0.0.1:80"
    assert record["receivedBytes"] == 67 and record["sentBytes"] == 5
    assert (record["sslEnabled"], record["sslProtocol"]) == ("on", "TLSv1.3")
    assert TIME.match(record["time"])
    refused = json.loads(accesslog.request_line(
        time.time(), False, "::1", 1, None, None, 400, 0, 30, 0.0,
        ("web", "", "", "4xx"), None, "", None, b"", "malformed"))
    assert refused["httpMethod"] == "" and refused["serverResponseLatency"] is None


def utf8(text: str) -> str:
    """What a str reads back as from a UTF-8 line: a lone surrogate cannot be encoded ("?")."""
    return text.encode("utf-8", "replace").decode("utf-8")


# The arguments of the line writers (fastgw/_logline.pyi), generated.
LABEL = st.text(max_size=12)
WIRE = st.binary(max_size=24)
COUNT = st.integers(0, 2 ** 50)
SECONDS = st.floats(0, 1e6, allow_nan=False)
NOW = st.floats(0, 4e9, allow_nan=False)
REQUEST_ARGS = st.tuples(
    NOW, st.booleans(), LABEL, st.integers(0, 65535), st.none() | st.tuples(LABEL, LABEL), WIRE,
    WIRE, WIRE, LABEL, st.integers(100, 599), COUNT, COUNT, SECONDS, st.none() | LABEL, WIRE,
    LABEL, LABEL, LABEL, LABEL, LABEL, st.none() | SECONDS, WIRE, LABEL)
SESSION_ARGS = st.tuples(
    NOW, LABEL, st.integers(0, 65535), WIRE, LABEL, LABEL, LABEL, LABEL, LABEL, WIRE, SECONDS,
    st.integers(1000, 4999), LABEL, LABEL, COUNT, COUNT, COUNT, COUNT, COUNT, COUNT, COUNT)


def wire(value: bytes) -> str:
    return value.decode("latin-1")


@settings(max_examples=400, deadline=None)
@given(args=REQUEST_ARGS)
def test_request_lines_of_both_writers_are_the_same_json(args):
    import fastgw._logline_py as twin
    line = twin.request_line(*args)
    if c_engine is not None:
        assert c_engine.request_line(*args) == line
    record = json.loads(line)  # the oracle: the stdlib's JSON parser
    (now, handshake, ip, port, tls, method, uri, agent, version, status, received, sent, taken,
     host, original, listener, rule, pool, settings_name, server, latency, tid, error) = args
    assert record["time"] == record["timeStamp"] == twin.timestamp(now)
    assert record["type"] == ("websocket" if handshake else "request")
    assert (record["clientIp"], record["clientPort"]) == (utf8(ip), port)
    assert (record["httpMethod"], record["requestUri"], record["userAgent"]) == \
        (wire(method), wire(uri), wire(agent))
    assert (record["httpStatus"], record["httpVersion"]) == (status, utf8(version))
    assert (record["receivedBytes"], record["sentBytes"]) == (received, sent)
    assert record["timeTaken"] == pytest.approx(taken, abs=1e-6)
    assert record["sslEnabled"] == ("off" if tls is None else "on")
    assert (record["sslProtocol"], record["sslCipher"]) == \
        (("", "") if tls is None else (utf8(tls[0]), utf8(tls[1])))
    assert record["host"] == (wire(original) if host is None else utf8(host))
    assert record["originalHost"] == wire(original)
    assert [record[k] for k in ("listenerName", "ruleName", "backendPoolName",
                                "backendSettingName", "serverRouted", "error_info")] == \
        [utf8(x) for x in (listener, rule, pool, settings_name, server, error)]
    assert record["serverStatus"] == (str(status) if latency is not None and server else "")
    if latency is None:
        assert record["serverResponseLatency"] is None
    else:
        assert record["serverResponseLatency"] == pytest.approx(latency, abs=1e-6)
    assert record["transactionId"] == wire(tid)


@settings(max_examples=200, deadline=None)
@given(args=SESSION_ARGS)
def test_session_lines_of_both_writers_are_the_same_json(args):
    import fastgw._logline_py as twin
    line = twin.session_line(*args)
    if c_engine is not None:
        assert c_engine.session_line(*args) == line
    record = json.loads(line)
    (now, ip, port, uri, listener, rule, pool, settings_name, server, tid, duration, code,
     closed_by, reason, *counts) = args
    assert record["time"] == record["timeStamp"] == twin.timestamp(now)
    assert (record["type"], record["clientIp"], record["clientPort"]) == \
        ("session-end", utf8(ip), port)
    assert (record["requestUri"], record["transactionId"]) == (wire(uri), wire(tid))
    assert [record[k] for k in ("listenerName", "ruleName", "backendPoolName",
                                "backendSettingName", "serverRouted", "closedBy",
                                "closeReason")] == \
        [utf8(x) for x in (listener, rule, pool, settings_name, server, closed_by, reason)]
    assert record["duration"] == pytest.approx(duration, abs=1e-6)
    assert record["closeCode"] == code
    assert [record[k] for k in ("clientFrames", "clientBytes", "backendFrames", "backendBytes",
                                "clientMessages", "backendMessages", "upgrades")] == counts


@pytest.mark.parametrize("value, text", [
    (0.0, b"0.0"), (-1.0, b"0.0"), (0.0000004, b"0.0"), (0.0000005, b"0.000001"),
    (0.001, b"0.001"), (0.25, b"0.25"), (1.0, b"1.0"), (12.3456789, b"12.345679"),
    (86400.5, b"86400.5"),
])
def test_durations_have_microseconds_at_most(line_engine, value, text):
    line = line_engine.session_line(0.0, "", 0, b"", "", "", "", "", "", b"", value, 1000, "", "",
                                    0, 0, 0, 0, 0, 0, 0)
    assert re.search(rb'"duration":([^,]*),', line).group(1) == text
    assert json.loads(text) == pytest.approx(max(value, 0.0), abs=1e-6)


@pytest.mark.parametrize("t", [0.0, 1_780_000_000.0, 1_780_000_000.5, 1_780_000_000.987,
                               1_780_000_059.9999, 4_102_444_800.25])
def test_timestamp(line_engine, t):
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t)))
    assert line_engine.timestamp(t) == f"{second}.{int(t * 1000) % 1000:03d}Z"
    assert TIME.match(accesslog.timestamp())


def test_transaction_ids_are_a_process_prefix_and_a_counter(line_engine):
    first, second = line_engine.transaction_id(), line_engine.transaction_id()
    assert re.fullmatch(rb"[0-9a-f]{32}", first) and first[:16] == second[:16]
    assert int(second[16:], 16) == int(first[16:], 16) + 1


# -- the batched writer ------------------------------------------------------------------------


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_lines_wait_for_the_buffer_or_the_second(tmp_path, loop):
    path = tmp_path / "access.log"
    out = LogFile(str(path), "access", loop, Stats())
    out.write(b'{"a":1}')
    assert path.read_text() == ""  # not yet: batched
    loop.run_until_complete(asyncio.sleep(1.2))
    assert path.read_text() == '{"a":1}\n'  # at most a second later
    line = b"x" * 1000
    for _ in range(BUFFER_BYTES // 1001):
        out.write(line)
    assert path.read_text() == '{"a":1}\n'
    out.write(line)  # the buffer is full: written at once
    assert len(path.read_text().splitlines()) == 1 + BUFFER_BYTES // 1001 + 1
    out.write(b"last")
    out.close()  # stop: nothing is lost
    assert path.read_text().splitlines()[-1] == "last"


def test_reopen_after_rotation_loses_nothing(tmp_path, loop):
    path = tmp_path / "access.log"
    out = LogFile(str(path), "access", loop, Stats())
    out.write(b"before")
    os.rename(path, tmp_path / "access.log.1")
    out.write(b"still before")
    out.reopen()
    out.write(b"after")
    out.close()
    assert (tmp_path / "access.log.1").read_text() == "before\nstill before\n"
    assert path.read_text() == "after\n"


def test_a_full_disk_is_counted_logged_once_and_bounded(tmp_path, loop, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("!!! no /dev/full here")
    events = []
    monkeypatch.setattr(log, "event", lambda level, name, **f: events.append((name, f)))
    stats = Stats()
    out = LogFile("/dev/full", "access", loop, stats)  # every write: ENOSPC
    line = b"y" * 999
    for _ in range(3 * RETAIN_BYTES // 1000):
        out.write(line)  # the first 64 KiB fail to write; then only the timer retries
    loop.run_until_complete(asyncio.sleep(2.2))  # two retries, both failing: nothing raises
    assert [name for name, _ in events] == ["log_write_failed"]
    assert stats.log_errors[("access", "ENOSPC")] == 3
    assert out.size <= RETAIN_BYTES and stats.log_dropped[("access",)] > 0
    # The disk has room again (here: the destination now points to a file): the kept lines are
    # written, and the recovery is logged with what was lost.
    kept = len(out.lines)
    out.destination = str(tmp_path / "access.log")
    out.reopen()  # reopen flushes first (fails once more), then switches
    out.flush()
    assert len((tmp_path / "access.log").read_text().splitlines()) == kept
    assert [name for name, _ in events][-1] == "log_write_recovered"
    assert events[-1][1]["dropped_lines"] == stats.log_dropped[("access",)]
    out.close()


# -- the envelope, end to end -------------------------------------------------------------------


def traffic(port: int) -> None:
    for path in ("/a", "/b?x=%22quoted%22"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            r.read()


def serve_some_traffic(tmp_path, *extra: str) -> list[str]:
    """`fastgw serve` with the access log on stderr, two requests, SIGTERM: its stderr lines."""
    backend = AiohttpBackend("b")
    port = free_port()
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                                   gateway_extra='access_log = "-"'))
    proc = start_cli("serve", str(config), *extra)
    try:
        wait_port(port, proc=proc)
        traffic(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        backend.stop()
    return proc.stderr.read().splitlines()


def test_every_stderr_line_is_one_envelope(tmp_path):
    lines = serve_some_traffic(tmp_path)
    records = [json.loads(line) for line in lines]
    assert all(list(r)[:3] == ["time", "level", "log"] and TIME.match(r["time"]) for r in records)
    logs = {r["log"] for r in records}
    assert logs == {"event", "access"}, logs
    access = [r for r in records if r["log"] == "access"]
    assert [r["requestUri"] for r in access] == ["/a", '/b?x=%22quoted%22']
    assert any(r.get("event") == "stopped" for r in records)  # the last lines were flushed


def test_text_format(tmp_path):
    lines = serve_some_traffic(tmp_path, "--log-format", "text")
    assert lines and not any(line.startswith("{") for line in lines), lines
    access = [line for line in lines if " access " in line]
    assert len(access) == 2 and all(TIME.match(line.split()[0]) for line in access)
    assert "requestUri=/a " in access[0] and "httpStatus=200" in access[0]
    assert any(" info " in line and "event=started" in line for line in lines)
