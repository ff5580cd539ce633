"""An echo WebSocket backend for the Autobahn TestSuite (fuzzingclient) runs.

Built on the maintained ``websockets`` package (asyncio implementation, >= 13),
configured so that it passes Autobahn cases 1-7, 9, 10, 12 and 13 by itself
with no FAILED case (see README.md for the counts):

* echoes every message, text or binary, one outgoing message per incoming
  message, up to ``MAX_MESSAGE_SIZE`` (32 MiB; Autobahn's largest is 16 MiB in
  9.1.6/9.2.6). Two modes:
  - ``stream`` (default): each incoming fragment is echoed as soon as it
    arrives (``recv_streaming``); text is validated incrementally, so invalid
    UTF-8 fails the connection with 1007 at the first bad fragment;
  - ``message``: the message is reassembled, then echoed in one frame.
* ping/pong, the close handshake, close-code validation and UTF-8 validation
  (1007) are websockets' own, except one per-connection adjustment: a Close
  arriving in the middle of a fragmented message ends the connection cleanly
  with the echoed code (RFC 6455 5.4/5.5.1; Autobahn 7.1.5) where websockets
  would answer 1002;
* permessage-deflate (cases 12/13) with websockets' server factory at default
  parameters: accepts every offer Autobahn makes, imposes nothing;
* accepts any Host header (websockets never checks it), any Origin, no
  subprotocol; no keepalive pings (they would add frames Autobahn compares).

Two ways to run it:

* ``python tests/autobahn_suite/echo_backend.py --host 127.0.0.1 --port 0
  [--mode stream|message]`` (or ``python -m autobahn_suite.echo_backend`` from
  ``tests/``): prints ``LISTENING <host> <port>`` on stdout once bound, runs
  until SIGTERM/SIGINT.
* ``start_echo_backend(host="127.0.0.1", port=0) -> (port, stop)``: starts that
  script as a subprocess (default; its own interpreter and GIL, so it never
  competes with a gateway running inside the test process), or with
  ``in_thread=True`` an asyncio loop in a daemon thread of this process.
  ``stop()`` is idempotent.

This module imports ``websockets`` only when the server actually runs, so
importing it never fails.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, Optional, Tuple

MAX_MESSAGE_SIZE = 32 * 1024 * 1024  # Autobahn 9.1.6/9.2.6 send 16 MiB messages
READY_PREFIX = "LISTENING"


def _make_deflate_factory():
    # Default parameters: the server accepts whatever window bits / no-context-
    # takeover the client offers (cases 13.x offer several combinations) and
    # imposes nothing itself. zlib's memLevel default (8) is fine for a test.
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    return ServerPerMessageDeflateFactory()


async def _echo_messages(ws) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def _echo_stream(ws) -> None:
    # Frame-by-frame echo: each incoming fragment is sent back as soon as it
    # arrives (still one outgoing message per incoming message). Text is
    # decoded incrementally, so invalid UTF-8 fails the connection with 1007 at
    # the first bad fragment ("fail fast", Autobahn 6.4.x OK instead of
    # NON-STRICT after a 2 s wait each).
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            await ws.send(ws.recv_streaming())
    except ConnectionClosed:
        pass


ECHO_MODES = {"message": _echo_messages, "stream": _echo_stream}
DEFAULT_MODE = "stream"


def _connection_class():
    """ServerConnection whose protocol accepts a Close inside a fragmented message.

    RFC 6455 5.4 allows control frames between the fragments of a message, and
    a Close there simply ends the connection (the incomplete message is
    dropped). websockets instead fails such a connection with 1002
    "incomplete fragmented message", which Autobahn 7.1.5 reports as FAILED
    (it expects the 1000 echoed). The change is per connection: the protocol
    object of each connection gets a subclass; nothing global is patched.
    """
    from websockets.asyncio.server import ServerConnection
    from websockets.frames import Opcode

    lenient_classes: dict = {}

    def lenient(cls):
        if cls not in lenient_classes:

            class LenientCloseProtocol(cls):
                def recv_frame(self, frame):
                    if frame.opcode is Opcode.CLOSE:
                        for attr in ("current_size", "cur_size"):  # name differs across versions
                            if getattr(self, attr, None) is not None:
                                setattr(self, attr, None)
                    return super().recv_frame(frame)

            lenient_classes[cls] = LenientCloseProtocol
        return lenient_classes[cls]

    class EchoServerConnection(ServerConnection):
        def __init__(self, protocol, *args, **kwargs):
            protocol.__class__ = lenient(type(protocol))
            super().__init__(protocol, *args, **kwargs)

    return EchoServerConnection


async def _serve(
    host: str, port: int, ready: Callable[[int], None], stop_event, mode: str = DEFAULT_MODE
) -> None:
    from websockets.asyncio.server import serve

    async with serve(
        ECHO_MODES[mode],
        host,
        port,
        compression=None,  # the deflate factory is passed explicitly below
        extensions=[_make_deflate_factory()],
        max_size=MAX_MESSAGE_SIZE,
        max_queue=16,
        ping_interval=None,
        ping_timeout=None,
        open_timeout=10,
        close_timeout=5,
        server_header="fastgw-autobahn-echo",
        create_connection=_connection_class(),
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        ready(bound)
        await stop_event.wait()


def _allow_many_fragments() -> None:
    # websockets >= 16 refuses (1009 "too many fragments") to reassemble a
    # message of more than $WEBSOCKETS_MAX_FRAGMENTS (4096) frames; Autobahn
    # 9.3.x/9.4.x send 4 MiB in frames of 64 B+ (65536 fragments). Read at
    # import time, so this only works before websockets is imported (the
    # subprocess); "stream" mode never reassembles and is not concerned.
    os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))


def _quiet_logging() -> None:
    import logging

    # websockets logs every failed handshake / protocol error at INFO or
    # ERROR; the fuzzer provokes hundreds of those on purpose.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)


def main(argv: Optional[list] = None) -> int:
    import asyncio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 picks a free port")
    parser.add_argument(
        "--mode",
        choices=sorted(ECHO_MODES),
        default=DEFAULT_MODE,
        help="stream: echo fragment by fragment (default); message: reassemble, then echo",
    )
    args = parser.parse_args(argv)
    if args.mode == "message":
        _allow_many_fragments()
    _quiet_logging()

    async def run() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)

        def ready(port: int) -> None:
            print(f"{READY_PREFIX} {args.host} {port}", flush=True)

        await _serve(args.host, args.port, ready, stop_event, args.mode)

    asyncio.run(run())
    return 0


def _start_subprocess(
    host: str, port: int, mode: str, startup_timeout: float
) -> Tuple[int, Callable[[], None]]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--host", host, "--port", str(port), "--mode", mode],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,  # inherit: a crash trace shows up in the test output
        text=True,
        start_new_session=True,  # a Ctrl-C in the terminal is not forwarded twice
    )

    line_box: list = []
    reader = threading.Thread(target=lambda: line_box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(startup_timeout)
    line = line_box[0] if line_box else ""
    if not line.startswith(READY_PREFIX):
        proc.kill()
        proc.wait()
        raise RuntimeError(
            f"echo backend did not start within {startup_timeout}s "
            f"(exit code {proc.returncode}, first line {line!r})"
        )
    bound = int(line.split()[2])

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout and not proc.stdout.closed:
            proc.stdout.close()

    return bound, stop


def _start_thread(
    host: str, port: int, mode: str, startup_timeout: float
) -> Tuple[int, Callable[[], None]]:
    import asyncio

    _quiet_logging()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict = {}

    async def run() -> None:
        state["stop_event"] = asyncio.Event()

        def ready(bound: int) -> None:
            state["port"] = bound
            started.set()

        await _serve(host, port, ready, state["stop_event"], mode)

    def target() -> None:
        try:
            loop.run_until_complete(run())
        except BaseException as exc:  # reported through start_echo_backend
            state["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="autobahn-echo-backend", daemon=True)
    thread.start()
    if not started.wait(startup_timeout) or "error" in state:
        raise RuntimeError(f"echo backend thread did not start: {state.get('error')!r}")

    def stop() -> None:
        if thread.is_alive():
            loop.call_soon_threadsafe(state["stop_event"].set)
            thread.join(10)

    return state["port"], stop


def start_echo_backend(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    in_thread: bool = False,
    mode: str = DEFAULT_MODE,
    startup_timeout: float = 15.0,
) -> Tuple[int, Callable[[], None]]:
    """Start the echo backend; return ``(bound_port, stop)``.

    By default the backend is a subprocess running this file with
    ``sys.executable`` (which must have ``websockets`` >= 13 installed).
    """
    if mode not in ECHO_MODES:
        raise ValueError(f"mode must be one of {sorted(ECHO_MODES)}, not {mode!r}")
    start = _start_thread if in_thread else _start_subprocess
    return start(host, port, mode, startup_timeout)


if __name__ == "__main__":
    sys.exit(main())
