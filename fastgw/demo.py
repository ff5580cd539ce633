"""`fastgw demo`: the gateway in front of two built-in demo backends, all on loopback.

The demo backends are deliberately small and dependency-free (asyncio + httptools): each serves a
page, `/api/info` (which server answered, and the headers the gateway added), `/api/gateway` (the
gateway's own view: its open WebSocket sessions and client connections, read from the admin
listener's /metrics), `/healthz`, and a WebSocket chat room at `/chat/ws`. The gateway's
configuration is ordinary TOML (DEMO_TOML), loaded through the same path as `fastgw serve`, with
an admin listener so that the page can link /metrics and /backend-health.

The chat endpoint uses the gateway's own frame engine (fastgw.frames: FrameScanner validates what
clients send, RFC 6455 section 5; build_frame and build_close write the answers) and accept key
(fastgw.handshake.accept_key, section 4.2.2).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from importlib import resources
from typing import Any

import httptools

from fastgw import config as config_mod
from fastgw import frames, log
from fastgw.errors import FrameError
from fastgw.handshake import accept_key
from fastgw.http1 import reason

# A chat message's text and sender name, in characters: longer ones are refused with an error
# message to the sender (the page's inputs have the same limits and a counter).
CHAT_TEXT_LIMIT = 2000
CHAT_NAME_LIMIT = 40
# A WebSocket message, in bytes: beyond this the chat endpoint closes with 1009 (section 7.4.1).
MAX_MESSAGE_BYTES = 64 * 1024

DEMO_TOML = """\
# The configuration `fastgw demo` runs (the configuration contract: see the README).
[gateway]
shutdown_timeout = 3
admin = "{admin}"

[[listeners]]
name = "demo"
port = {port}
bind = "{host}"

[[backend_pools]]
name = "web"
servers = ["127.0.0.1:{a}", "127.0.0.1:{b}"]

[[backend_pools]]
name = "chat"
servers = ["127.0.0.1:{a}"]     # one chat room lives in one backend process

[[backend_settings]]
name = "web-settings"
port = {a}
request_timeout = 30

[[backend_settings]]
name = "chat-settings"
port = {a}
request_timeout = 600           # also the idle timeout of a chat session

[[rules]]
name = "demo"
type = "path_based"
listener = "demo"
backend_pool = "web"
backend_settings = "web-settings"
  [[rules.paths]]
  paths = ["/chat/*"]
  backend_pool = "chat"
  backend_settings = "chat-settings"
"""


class DemoBackend:
    """A tiny HTTP/1.1 + WebSocket server; `name` says which backend answered. `admin` is the
    gateway's admin address (host, port), whose /metrics `/api/gateway` reads."""

    def __init__(self, name: str, admin: tuple[str, int]):
        self.name = name
        self.admin = admin
        self.room: set[DemoConnection] = set()
        page = resources.files("fastgw").joinpath("demo_static/index.html").read_text("utf-8")
        self.page = (page.replace("__SERVER__", name).replace("__ADMIN_PORT__", str(admin[1]))
                     .replace("__CHAT_TEXT_LIMIT__", str(CHAT_TEXT_LIMIT))
                     .replace("__CHAT_NAME_LIMIT__", str(CHAT_NAME_LIMIT))).encode()
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: DemoConnection(self), host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def broadcast(self, message: dict) -> None:
        frame = frames.build_frame(frames.OP_TEXT, json.dumps(message).encode())
        for conn in list(self.room):
            conn.transport.write(frame)

    async def gateway_view(self) -> dict:
        """What the gateway itself counts, from its admin listener's /metrics."""
        host, port = self.admin
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        try:
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            response = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        wanted = {b"fastgw_websocket_sessions_open": "websocket_sessions_open",
                  b"fastgw_connections": "client_connections"}
        view: dict = {"admin": f"{host}:{port}"}
        for line in response.partition(b"\r\n\r\n")[2].splitlines():
            name, _, value = line.partition(b" ")
            if name in wanted:
                view[wanted[name]] = int(float(value))
        return view

    async def stop(self) -> None:
        for conn in list(self.room):
            conn.transport.write(frames.build_close(frames.CLOSE_GOING_AWAY, "demo stopping"))
            conn.transport.close()
        if self.server is not None:
            self.server.close()


class DemoConnection(asyncio.Protocol):
    def __init__(self, backend: DemoBackend):
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None  # the loop's transport, from connection_made
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.websocket = False
        self.scanner: frames.FrameScanner | None = None
        self.inbox = bytearray()  # WebSocket bytes received and not yet handled as whole frames
        self.checked = 0  # how many bytes of inbox the scanner has validated
        self.fragments: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self in self.backend.room:
            self.backend.room.discard(self)
            self.backend.broadcast({"from": "*",
                                    "text": f"someone left ({len(self.backend.room)} here)"})

    def data_received(self, data: bytes) -> None:
        if self.websocket:
            self.ws_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # httptools stops after any Upgrade request; only /chat/ws switches protocols, and
            # after another path's answer nothing more on this connection is HTTP.
            if self.websocket:
                self.ws_data(data[exc.args[0]:])
            elif not self.transport.is_closing():
                self.transport.close()
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        path = self.url.split(b"?")[0]
        keep = self.parser.should_keep_alive()
        if path == b"/chat/ws" and self.headers.get(b"upgrade", b"").lower() == b"websocket":
            self.accept_websocket()
        elif path == b"/":
            self.respond(200, "text/html; charset=utf-8", self.backend.page, keep)
        elif path == b"/api/info":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers.items()}
            info = {"server": self.backend.name, "headers": headers}
            self.respond(200, "application/json", json.dumps(info, indent=2).encode(), keep)
        elif path == b"/api/gateway":
            # Answered when the admin listener has: no more requests are read until then, so
            # that answers keep the order of the requests (RFC 9112 section 9.3.2).
            self.transport.pause_reading()
            asyncio.get_running_loop().create_task(self.answer_gateway_view(keep))
        elif path == b"/healthz":
            self.respond(200, "text/plain", b"ok\n", keep)
        else:
            self.respond(404, "text/plain", b"not found\n", keep)

    async def answer_gateway_view(self, keep: bool) -> None:
        try:
            view = await self.backend.gateway_view()
            view["server"] = self.backend.name
            self.respond(200, "application/json", json.dumps(view).encode(), keep)
        except (OSError, asyncio.TimeoutError) as exc:
            self.respond(502, "text/plain", f"admin listener unreachable: {exc}\n".encode(), keep)
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def respond(self, status: int, ctype: str, body: bytes, keep: bool) -> None:
        if self.transport.is_closing():
            return
        close = "" if keep else "Connection: close\r\n"
        head = (f"HTTP/1.1 {status} {reason(status)}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                f"X-Demo-Server: {self.backend.name}\r\n{close}\r\n")
        self.transport.write(head.encode() + body)
        if not keep:
            self.transport.close()

    # -- the chat room: an RFC 6455 server endpoint ------------------------------------------

    def accept_websocket(self) -> None:
        key = self.headers.get(b"sec-websocket-key", b"")
        offered = [p.strip() for p in self.headers.get(b"sec-websocket-protocol", b"").split(b",")]
        proto = b"Sec-WebSocket-Protocol: chat\r\n" if b"chat" in offered else b""
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key)
                             + b"\r\n" + proto + b"\r\n")
        self.websocket = True
        self.scanner = frames.FrameScanner(masked=True, max_message_size=MAX_MESSAGE_BYTES)
        self.backend.room.add(self)
        self.backend.broadcast({"from": "*",
                                "text": f"someone joined ({len(self.backend.room)} here)"})

    def ws_data(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self.inbox += data
        assert self.scanner is not None  # set by accept_websocket, with self.websocket
        try:
            # The scanner takes what it did not consume last time, then the new bytes.
            self.checked += self.scanner.scan(bytes(self.inbox[self.checked:]))
        except FrameError as exc:
            self.close(exc.code, exc.reason)
            return
        while True:
            frame = _whole_frame(self.inbox, self.checked)
            if frame is None:
                return
            opcode, fin, payload, used = frame
            del self.inbox[:used]
            self.checked -= used
            if opcode == frames.OP_CLOSE:
                try:
                    code, _ = frames.parse_close(payload)
                except FrameError as exc:
                    self.close(exc.code, exc.reason)
                    return
                # Section 5.5.1: answer a Close with a Close (echoing its code), then end TCP.
                self.close(code, "")
                return
            if opcode == frames.OP_PING:
                self.transport.write(frames.build_frame(frames.OP_PONG, payload))
            elif opcode in (frames.OP_TEXT, frames.OP_BINARY, frames.OP_CONT):
                self.fragments.append(payload)
                if fin:
                    text = b"".join(self.fragments)
                    self.fragments = []
                    self.chat(text)

    def close(self, code: int | None, reason: str) -> None:
        self.transport.write(frames.build_close(code, reason))
        self.transport.close()

    def send(self, message: dict) -> None:
        self.transport.write(frames.build_frame(frames.OP_TEXT, json.dumps(message).encode()))

    def chat(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"from": "?", "text": raw.decode("utf-8", "replace")}
        if not isinstance(message, dict):
            message = {"from": "?", "text": str(message)}
        sender, text = str(message.get("from", "?")), str(message.get("text", ""))
        if len(text) > CHAT_TEXT_LIMIT or len(sender) > CHAT_NAME_LIMIT:
            what, limit, n = ("message", CHAT_TEXT_LIMIT, len(text)) \
                if len(text) > CHAT_TEXT_LIMIT else ("name", CHAT_NAME_LIMIT, len(sender))
            self.send({"from": "*", "error": "too_long", "limit": limit,
                       "text": f"not sent: your {what} has {n} characters, the limit is {limit}"})
            return
        self.backend.broadcast({"from": sender, "text": text})


def _whole_frame(buf: bytearray, checked: int):
    """(opcode, fin, unmasked payload, frame length) of the frame at the start of `buf` when it
    is whole and among the first `checked` bytes (already validated by the FrameScanner: masked,
    minimal length, section 5.2), else None."""
    if checked < 2:
        return None
    length, pos = buf[1] & 0x7F, 2
    if length == 126:
        length, pos = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(buf[2:10], "big"), 10
    end = pos + 4 + length
    if end > checked:
        return None
    payload = bytearray(buf[pos + 4:end])
    frames.apply_mask(payload, buf[pos:pos + 4])
    return buf[0] & 0x0F, bool(buf[0] & 0x80), bytes(payload), end


def _admin_port(host: str, port: int) -> int:
    """The port after the gateway's when it is free on `host`, else any free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in (port + 1, 0):
        if candidate > 65535:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free port for the admin listener on {host}")


async def demo_main(host: str, port: int, ready: asyncio.Event | None = None) -> int:
    from fastgw.gateway import Gateway
    admin = (host, _admin_port(host, port))
    shown_admin = f"[{host}]:{admin[1]}" if ":" in host else f"{host}:{admin[1]}"
    a, b = DemoBackend("demo-backend-a", admin), DemoBackend("demo-backend-b", admin)
    port_a, port_b = await a.start(), await b.start()
    toml = DEMO_TOML.format(host=host, port=port, a=port_a, b=port_b, admin=shown_admin)
    cfg = config_mod.loads(toml, source="<demo>")
    gateway = Gateway(cfg)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"fastgw demo: open http://{shown}:{port}/  "
          f"(WebSocket chat at ws://{shown}:{port}/chat/ws)", flush=True)
    print(f"  admin listener: http://{shown_admin}/metrics, http://{shown_admin}/backend-health",
          flush=True)
    print(f"  demo backends on 127.0.0.1:{port_a} and 127.0.0.1:{port_b}; Ctrl-C stops everything",
          flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    await gateway.stop()
    await a.stop()
    await b.stop()
    print("fastgw demo: stopped", flush=True)
    return 0


def run_demo(host: str = "127.0.0.1", port: int = 8080, log_format: str | None = None,
             warn_build: Callable[..., None] | None = None) -> int:
    """`warn_build(as_event=True)` logs why the compiled build is not in use (cli passes it)."""
    log.setup(log.WARNING if not os.environ.get("FASTGW_LOG_LEVEL") else
              getattr(log, os.environ["FASTGW_LOG_LEVEL"].upper(), log.INFO), log_format)
    if warn_build is not None:
        warn_build(as_event=True)
    from fastgw.errors import ConfigError
    from fastgw.listener import BindError
    try:
        import uvloop
        return uvloop.run(demo_main(host, port))
    except BindError as exc:
        print(f"fastgw demo: {exc} (try --port)", file=sys.stderr)
        return 1
    except ConfigError as exc:  # e.g. a --host that is not an IP address
        print(exc.render().replace("<demo>:", "fastgw demo: "), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"fastgw demo: {exc}", file=sys.stderr)
        return 1
