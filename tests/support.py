"""Test support: a gateway and real backends on loopback, each on its own event loop thread.

Tests talk to them with real clients (aiohttp, websockets, http.client, raw sockets) from the test
thread. Nothing here fakes the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable

import uvloop
from aiohttp import web

from fastgw import config as config_mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopThread:
    """An event loop (uvloop by default) running in a daemon thread."""

    def __init__(self, use_uvloop: bool = True):
        self.loop = uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        """Cancel what still runs on the loop (so no coroutine is left to die unfinished), then
        stop it."""
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.call(cancel_all(), timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# ------------------------------------------------------------------------------------------
# The gateway under test


class GatewayThread:
    """A fastgw Gateway built from TOML text, serving in a LoopThread."""

    def __init__(self, toml_text: str, *, use_uvloop: bool = True, path: str | None = None):
        from fastgw.gateway import Gateway
        self.config = config_mod.loads(textwrap.dedent(toml_text), source=path or "<test>")
        self.lt = LoopThread(use_uvloop)

        async def build():
            gw = Gateway(self.config)
            await gw.start()
            return gw

        self.gateway = self.lt.call(build())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.lt.call(self.gateway.stop(), timeout=30)
        self.lt.stop()


def gateway_toml(listen_port: int, servers: list[str], *, request_timeout: float = 5,
                 extra_settings: str = "", extra: str = "", pool_extra: str = "",
                 gateway_extra: str = "") -> str:
    """A one-listener, one-pool configuration in DESIGN.md section 5 terms."""
    servers_toml = ", ".join(f'"{s}"' for s in servers)
    return f"""
[gateway]
header_timeout = 2
{gateway_extra}

[[listeners]]
name = "web"
port = {listen_port}
bind = "127.0.0.1"

[[backend_pools]]
name = "pool"
servers = [{servers_toml}]
{pool_extra}

[[backend_settings]]
name = "settings"
port = 80
request_timeout = {request_timeout}
{extra_settings}

[[rules]]
name = "rule"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"
{extra}
"""


# ------------------------------------------------------------------------------------------
# Backends


class AiohttpBackend:
    """A real HTTP/1.1 + WebSocket server (aiohttp) with the endpoints tests need."""

    def __init__(self, name: str = "backend", port: int | None = None, ssl_context=None):
        self.name = name
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.lt = LoopThread()
        self.requests: list[dict] = []
        self.ws_sessions = 0
        self.healthy = True  # GET / answers 500 when False (for health probe tests)
        self.probes = 0
        self.lt.call(self._start())

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/headers", self.headers)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/big", self.big)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_get("/ws", self.ws_echo)
        app.router.add_route("*", "/{tail:.*}", self.default)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True,
                                ssl_context=self.ssl_context)
        await self.site.start()

    def _record(self, request: web.Request) -> None:
        self.requests.append({"method": request.method, "path": request.path_qs,
                              "headers": dict(request.headers)})

    async def default(self, request: web.Request) -> web.Response:
        if request.headers.get("User-Agent") == "fastgw-probe":
            self.probes += 1
            if request.path == "/" and not self.healthy:
                return web.Response(status=500, text="unhealthy")
            return web.Response(text=f"healthy {self.name}")
        self._record(request)
        body = await request.read()
        return web.json_response({"server": self.name, "method": request.method,
                                  "path": request.path_qs, "body_len": len(body),
                                  "proto": request.headers.get("X-Forwarded-Proto"),
                                  "tls": request.secure},
                                 headers={"X-Server": self.name})

    async def echo(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        resp = web.StreamResponse(headers={"X-Server": self.name})
        if request.headers.get("X-Echo-Chunked"):
            resp.enable_chunked_encoding()
        else:
            resp.content_length = request.content_length or 0
        await resp.prepare(request)
        async for chunk in request.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def headers(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"headers": [[k, v] for k, v in request.headers.items()],
                                  "server": self.name})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        count = int(request.query.get("n", "5"))
        resp = web.StreamResponse(headers={"X-Server": self.name})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(count):
            await resp.write(f"chunk-{i};".encode())
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    async def big(self, request: web.Request) -> web.Response:
        self._record(request)
        size = int(request.query.get("size", str(1 << 20)))
        pattern = bytes(range(256)) * (size // 256 + 1)
        return web.Response(body=pattern[:size], headers={"X-Server": self.name})

    async def slow(self, request: web.Request) -> web.Response:
        self._record(request)
        await asyncio.sleep(float(request.query.get("delay", "10")))
        return web.Response(text="late")

    async def status(self, request: web.Request) -> web.Response:
        self._record(request)
        code = int(request.match_info["code"])
        if code in (204, 304):
            return web.Response(status=code)
        return web.Response(status=code, text=f"status {code}")

    async def ws_echo(self, request: web.Request) -> web.WebSocketResponse:
        self._record(request)
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self.ws_sessions += 1
        async for msg in ws:
            if msg.type.name == "TEXT":
                await ws.send_str(msg.data)
            elif msg.type.name == "BINARY":
                await ws.send_bytes(msg.data)
        return ws

    def stop(self) -> None:
        if not self.lt.loop.is_running():
            return  # stopped already
        with contextlib.suppress(Exception):
            self.lt.call(self.runner.cleanup(), timeout=10)
        self.lt.stop()


class RawBackend:
    """A TCP server whose behaviour per connection is a coroutine (reader, writer): for backends
    that misbehave on purpose (garbage, hang, reset)."""

    def __init__(self, handler: Callable, port: int | None = None):
        self.port = port or free_port()
        self.handler = handler
        self.connections = 0
        self.lt = LoopThread()
        self.server = self.lt.call(self._start())

    async def _start(self):
        self.tasks: set = set()

        async def on_conn(reader, writer):
            self.connections += 1
            task = asyncio.current_task()
            self.tasks.add(task)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                self.tasks.discard(task)
                with contextlib.suppress(Exception):
                    writer.close()
        return await asyncio.start_server(on_conn, "127.0.0.1", self.port, reuse_address=True)

    def stop(self) -> None:
        async def close():
            self.stopping.set()
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            self.lt.call(close(), timeout=5)
        self.lt.stop()


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


# ------------------------------------------------------------------------------------------
# Raw HTTP client helpers (for malformed requests and exact byte checks)


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0, read_until_close: bool = True,
                 expect_bytes: int | None = None) -> bytes:
    """Send raw bytes, return everything received until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if expect_bytes is not None and sum(map(len, chunks)) >= expect_bytes:
                break
            if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def parse_responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """Split a byte stream into (status, headers, body) responses (Content-Length/chunked)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers: dict = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.setdefault(k.strip().lower().decode(), []).append(v.strip().decode())
        body = b""
        if "content-length" in headers:
            n = int(headers["content-length"][0])
            body, rest = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", [""])[0].lower() == "chunked":
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
        elif status >= 200 and status not in (204, 304):
            body, rest = rest, b""
        out.append((status, headers, body))
        data = rest
    return out


# ------------------------------------------------------------------------------------------
# The CLI as a subprocess


def run_cli(*args: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgw", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


class _Captured:
    """A child's output in a temporary file: unlike a pipe nobody drains, it never fills up and
    blocks the child. `read()` returns everything written so far."""

    def __init__(self) -> None:
        import tempfile
        self.file = tempfile.TemporaryFile(mode="w+b")

    def read(self) -> str:
        self.file.seek(0)
        return self.file.read().decode("utf-8", "replace")

    def close(self) -> None:
        self.file.close()


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    out, err = _Captured(), _Captured()
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", *args], stdout=out.file,
                            stderr=err.file, env={**os.environ, **(env or {})})
    proc.stdout, proc.stderr = out, err  # type: ignore[assignment]
    return proc


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


def json_body(body: bytes) -> Any:
    return json.loads(body.decode())


class WsBackend:
    """A WebSocket backend on the `websockets` library, one behaviour per path.

    /echo        echo every message (permessage-deflate on unless the client does not offer it)
    /greet       send "hello" right after the handshake, then echo
    /close4001   echo one message, then close with 4001 "custom"
    /drop        after the first message, drop the TCP connection without a Close
    /headers     send the handshake request headers as one JSON message
    /silent      read nothing after the handshake; never answer a Close
    /slow        read one message per `slow_delay` seconds, then echo its length
    anything else: 404 (refused handshake)
    Subprotocols "chat" and "superchat" are offered to the handshake selection.
    Each session's close code/reason as the backend saw it is appended to `closes`.
    """

    def __init__(self, port: int | None = None, slow_delay: float = 0.05):
        self.port = port or free_port()
        self.lt = LoopThread()
        self.closes: list[tuple[str, int | None, str]] = []
        self.sessions = 0
        self.slow_delay = slow_delay
        self.received: list[bytes | str] = []
        self.stopping = asyncio.Event()
        self.server = self.lt.call(self._start())

    async def _start(self):
        from websockets.asyncio.server import serve

        async def process_request(conn, request):
            if request.path.split("?")[0] not in ("/echo", "/greet", "/close4001", "/drop",
                                                  "/headers", "/silent", "/slow"):
                return conn.respond(404, "no such WebSocket endpoint\n")
            if request.path.startswith("/headers"):
                conn.request_headers_json = json.dumps([[k, v] for k, v in request.headers.raw_items()])
            return None

        def select_subprotocol(conn, offered):
            # The backend chooses: its preference order, and no subprotocol is fine too.
            return next((p for p in ("superchat", "chat") if p in offered), None)

        return await serve(self._handler, "127.0.0.1", self.port,
                           select_subprotocol=select_subprotocol,
                           process_request=process_request, max_size=None, ping_interval=None,
                           close_timeout=2)

    async def _handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed
        path = ws.request.path.split("?")[0]
        self.sessions += 1
        try:
            if path == "/greet":
                await ws.send("hello")
            if path == "/headers":
                await ws.send(ws.request_headers_json)
            if path == "/silent":
                ws.transport.pause_reading()
                # It sees nothing (not even the connection's end): it waits for stop().
                await asyncio.wait_for(self.stopping.wait(), 60)
                ws.transport.resume_reading()  # to see the end now rather than wait for it
                return
            if path == "/slow":
                async for msg in ws:
                    self.received.append(msg)
                    await asyncio.sleep(self.slow_delay)
                    await ws.send(str(len(msg)))
                return
            async for msg in ws:
                self.received.append(msg)
                if path == "/drop":
                    ws.transport.abort()
                    return
                await ws.send(msg)
                if path == "/close4001":
                    await ws.close(4001, "custom")
                    return
        except ConnectionClosed:
            pass
        finally:
            await asyncio.sleep(0)
            rcvd = ws.protocol.close_rcvd
            self.closes.append((path, rcvd.code if rcvd else None, rcvd.reason if rcvd else ""))

    def stop(self) -> None:
        async def close():
            self.stopping.set()
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 5)
        with contextlib.suppress(Exception):
            self.lt.call(close(), timeout=10)
        self.lt.stop()

    def wait_closes(self, n: int, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.closes) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.closes


def ws_gateway_toml(listen_port: int, ws_port: int, *, request_timeout: float = 10,
                    extra_settings: str = "", gateway_extra: str = "") -> str:
    return gateway_toml(listen_port, [f"127.0.0.1:{ws_port}"], request_timeout=request_timeout,
                        extra_settings=extra_settings, gateway_extra=gateway_extra)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bytes | None = b"\x01\x02\x03\x04",
          rsv: int = 0) -> bytes:
    """A raw frame for tests that send what no library would."""
    import struct
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def ws_raw_handshake(port: int, path: str = "/echo", *, extra: str = "", timeout: float = 5.0):
    """Open a raw socket, send an upgrade request; return (socket, response head, leftover)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, head, rest


def read_close(sock: socket.socket, leftover: bytes = b"", timeout: float = 10.0):
    """Read frames until a Close arrives; return (code, reason, frames before it)."""
    import struct
    sock.settimeout(timeout)
    buf = leftover
    seen = []
    while True:
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if len(buf) < pos + n:
                break
            payload = buf[pos:pos + n]
            buf = buf[pos + n:]
            if b0 & 0x0F == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode(), seen
            seen.append((b0 & 0x0F, payload))
        chunk = sock.recv(65536)
        if not chunk:
            return None, "EOF without a Close frame", seen
        buf += chunk
