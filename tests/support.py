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
        if self.loop.is_running():
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

    def __init__(self, name: str = "backend", port: int | None = None):
        self.name = name
        self.port = port or free_port()
        self.lt = LoopThread()
        self.requests: list[dict] = []
        self.ws_sessions = 0
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
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()

    def _record(self, request: web.Request) -> None:
        self.requests.append({"method": request.method, "path": request.path_qs,
                              "headers": dict(request.headers)})

    async def default(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.read()
        return web.json_response({"server": self.name, "method": request.method,
                                  "path": request.path_qs, "body_len": len(body)},
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
        async def on_conn(reader, writer):
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()
        return await asyncio.start_server(on_conn, "127.0.0.1", self.port, reuse_address=True)

    def stop(self) -> None:
        async def close():
            self.server.close()
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


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastgw", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


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
