"""`fastgw demo`: the gateway in front of two built-in demo backends, all on loopback.

The demo backends are deliberately small and dependency-free (asyncio + httptools): each serves a
page, `/api/info` (which server answered, and the headers the gateway added), `/healthz`, and a
WebSocket chat room at `/chat/ws`. The gateway's configuration is ordinary TOML (DEMO_TOML),
loaded through the same path as `fastgw serve`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import struct
import sys
from importlib import resources

import httptools

from fastgw import config as config_mod
from fastgw import log

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

DEMO_TOML = """\
# The configuration `fastgw demo` runs (DESIGN.md section 5 keys).
[gateway]
shutdown_timeout = 3

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
    """A tiny HTTP/1.1 + WebSocket server; `name` says which backend answered."""

    def __init__(self, name: str):
        self.name = name
        self.room: set[DemoConnection] = set()
        self.page = resources.files("fastgw").joinpath("demo_static/index.html").read_text("utf-8")
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: DemoConnection(self), host, port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def broadcast(self, message: dict) -> None:
        frame = encode_frame(0x1, json.dumps(message).encode())
        for conn in list(self.room):
            conn.transport.write(frame)

    async def stop(self) -> None:
        for conn in list(self.room):
            conn.transport.write(encode_frame(0x8, struct.pack("!H", 1001) + b"demo stopping"))
            conn.transport.close()
        if self.server is not None:
            self.server.close()


class DemoConnection(asyncio.Protocol):
    def __init__(self, backend: DemoBackend):
        self.backend = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.ws_buffer = b""
        self.fragments: list[bytes] = []
        self.websocket = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        if self in self.backend.room:
            self.backend.room.discard(self)
            self.backend.broadcast({"from": "*", "text": f"someone left ({len(self.backend.room)} here)"})

    def data_received(self, data: bytes) -> None:
        if self.websocket:
            self.ws_data(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.ws_data(data[exc.args[0]:])
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
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
        if path == b"/chat/ws" and self.headers.get(b"upgrade", b"").lower() == b"websocket":
            self.accept_websocket()
        elif path == b"/":
            self.respond(200, "text/html; charset=utf-8",
                         self.backend.page.replace("__SERVER__", self.backend.name).encode())
        elif path == b"/api/info":
            info = {"server": self.backend.name,
                    "headers": {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers.items()}}
            self.respond(200, "application/json", json.dumps(info, indent=2).encode())
        elif path == b"/healthz":
            self.respond(200, "text/plain", b"ok\n")
        else:
            self.respond(404, "text/plain", b"not found\n")

    def respond(self, status: int, ctype: str, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found"}.get(status, "OK")
        keep = self.parser.should_keep_alive()
        close = "" if keep else "Connection: close\r\n"
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"X-Demo-Server: {self.backend.name}\r\n{close}\r\n".encode() + body)
        if not keep:
            self.transport.close()

    # -- the chat room: a minimal RFC 6455 server endpoint -------------------------------

    def accept_websocket(self) -> None:
        key = self.headers.get(b"sec-websocket-key", b"")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        offered = [p.strip() for p in self.headers.get(b"sec-websocket-protocol", b"").split(b",")]
        proto = b"Sec-WebSocket-Protocol: chat\r\n" if b"chat" in offered else b""
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
                             + proto + b"\r\n")
        self.websocket = True
        self.backend.room.add(self)
        self.backend.broadcast({"from": "*", "text": f"someone joined ({len(self.backend.room)} here)"})

    def ws_data(self, data: bytes) -> None:
        self.ws_buffer += data
        while True:
            frame = decode_frame(self.ws_buffer)
            if frame is None:
                return
            fin, opcode, payload, used = frame
            self.ws_buffer = self.ws_buffer[used:]
            if opcode == 0x8:
                self.transport.write(encode_frame(0x8, payload[:2]))
                self.transport.close()
                return
            if opcode == 0x9:
                self.transport.write(encode_frame(0xA, payload))
            elif opcode in (0x0, 0x1, 0x2):
                self.fragments.append(payload)
                if fin:
                    text = b"".join(self.fragments)
                    self.fragments = []
                    self.chat(text)

    def chat(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            out = {"from": str(message.get("from", "?"))[:40], "text": str(message.get("text", ""))[:2000]}
        except (ValueError, AttributeError):
            out = {"from": "?", "text": raw.decode("utf-8", "replace")[:2000]}
        self.backend.broadcast(out)


def decode_frame(buf: bytes):
    """(fin, opcode, unmasked payload, bytes used) or None if incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = struct.unpack_from("!H", buf, 2)[0]
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = struct.unpack_from("!Q", buf, 2)[0]
        pos = 10
    mask = b""
    if b1 & 0x80:
        mask = buf[pos:pos + 4]
        pos += 4
    if len(buf) < pos + length:
        return None
    payload = buf[pos:pos + length]
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload, pos + length


def encode_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


async def demo_main(host: str, port: int, ready: asyncio.Event | None = None) -> int:
    from fastgw.gateway import Gateway
    a, b = DemoBackend("demo-backend-a"), DemoBackend("demo-backend-b")
    port_a, port_b = await a.start(), await b.start()
    toml = DEMO_TOML.format(host=host, port=port, a=port_a, b=port_b)
    cfg = config_mod.loads(toml, source="<demo>")
    gateway = Gateway(cfg)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"fastgw demo: open http://{shown}:{port}/  (WebSocket chat at ws://{shown}:{port}/chat/ws)",
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


def run_demo(host: str = "127.0.0.1", port: int = 8080) -> int:
    log.setup(log.WARNING if not os.environ.get("FASTGW_LOG_LEVEL") else
              getattr(log, os.environ["FASTGW_LOG_LEVEL"].upper(), log.INFO))
    from fastgw.listener import BindError
    try:
        import uvloop
        return uvloop.run(demo_main(host, port))
    except BindError as exc:
        print(f"fastgw demo: {exc} (try --port)", file=sys.stderr)
        return 1
