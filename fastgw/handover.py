"""What a live upgrade passes from the old process to the new one, and how it is passed.

The two processes talk over one AF_UNIX SOCK_SEQPACKET socket pair (the new process inherits
its end): one JSON message per datagram, with the descriptors that belong to it attached
(SCM_RIGHTS, unix(7)). A passed descriptor is the same kernel socket: its accept queue, its
unsent and unread bytes and the TCP connection itself stay as they are.

    old -> new   {"type": "listeners", "keys": [[bind, port], ...], "admin": bool} + the fds
    new -> old   {"type": "ready", "pid": N}           config loaded, probes started, accepting
    old -> new   {"type": "session", ...state} + (client fd, backend fd)     once per session
    new -> old   {"type": "resumed", "ok": bool, "reason": str}              once per session
    old -> new   {"type": "done"}

A WebSocket session moves at a clean point of its own making (`pause`): neither leg is read any
more, everything already read has been forwarded (the pumps forward within the read), and both
write buffers of the old process are empty, so every byte is either in the kernel's socket
buffers (which move with the socket) or in a pump's held tail (which moves in the state). The
state is the frame scanner's position per direction (fastgw.frames: export_state/from_state),
the held tails, the session's identity (route, server) and counters; the new process wraps the
sockets in its own transports and resumes the relay where it stopped (`resume`). No Close frame
is sent and no byte is written twice: the old process writes nothing after `pause`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, cast

from fastgw.downstream import RELAYING, ClientConnection
from fastgw.frames import FrameScanner, Pump
from fastgw.recorder import GatewayRecorder
from fastgw.relay import OPEN, WebSocketSession
from fastgw.timeouts import NEVER
from fastgw.upstream import UpstreamConnection
from fastgw.wsproxy import release_session

MAX_MESSAGE = 65536  # one JSON message; a session's state is well under 1 KiB
MAX_FDS = 64  # descriptors per message (listeners; SCM_MAX_FD is 253)


class HandoverError(Exception):
    """The other process broke the protocol or went away."""


# -- messages ------------------------------------------------------------------------------------


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): theirs is inherited by the new process."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    theirs.set_inheritable(True)
    return ours, theirs


async def _wait(sock: socket.socket, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = sock.fileno()
    if writable:
        loop.add_writer(fd, ready.set_result, None)
    else:
        loop.add_reader(fd, ready.set_result, None)
    try:
        await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def send(sock: socket.socket, message: dict, fds: list[int] | tuple = ()) -> None:
    data = json.dumps(message).encode()
    while True:
        try:
            socket.send_fds(sock, [data], list(fds))
            return
        except BlockingIOError:
            await _wait(sock, True)
        except OSError as exc:
            raise HandoverError(f"the other process went away ({exc})") from None


async def receive(sock: socket.socket) -> tuple[dict, list[int]]:
    while True:
        try:
            data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
            break
        except BlockingIOError:
            await _wait(sock, False)
        except OSError as exc:
            raise HandoverError(f"the other process went away ({exc})") from None
    if not data:
        raise HandoverError("the other process closed the channel")
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        _close_all(fds)
        raise HandoverError("a handover message was truncated")
    try:
        message = json.loads(data)
    except ValueError:
        _close_all(fds)
        raise HandoverError("a handover message is not JSON") from None
    return message, fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        socket.socket(fileno=fd).close()


# -- a session leaving -----------------------------------------------------------------------------


def movable(session: WebSocketSession) -> bool:
    """Plain on both legs and open: TLS keeps its state in this process (it stays)."""
    return (session.state == OPEN and session.client.proto == b"http"
            and session.exchange.backend.settings.protocol == "http"
            and all(pump.forwarding and not pump.failed for pump in session.pumps))


class Departure:
    """One session on its way out: paused, then sent, then retired here (or resumed here)."""

    __slots__ = ("session", "sinks", "deadline_at", "reading")

    def __init__(self, session: WebSocketSession):
        self.session = session
        self.sinks = tuple(pump.sink for pump in session.pumps)
        self.deadline_at = session.client.deadline_at
        # A leg not being read is held back by the other leg's full write buffer (the pumps'
        # flow control): it must stay so if the session stays here.
        self.reading = tuple(t.is_reading() for t in session.transports)

    def pause(self) -> None:
        """Read neither leg, forward nothing, send no Ping (its deadline waits)."""
        session = self.session
        for transport in session.transports:
            transport.pause_reading()
        for pump in session.pumps:
            # Also keeps resume_writing() (a write buffer draining) from resuming a read.
            pump.sink = None
        session.client.deadline_at = NEVER

    def drained(self) -> bool:
        return all(t.get_write_buffer_size() == 0 for t in self.session.transports)

    def resume(self) -> None:
        """It stays here after all: as it was. A leg that flow control held back stays held
        back until the write buffer it feeds drains, unless that happened during the pause (the
        resume_writing() then found no sink: nothing writes while paused, so a buffer at or
        below its low-water mark now has drained)."""
        session = self.session
        for pump, sink in zip(session.pumps, self.sinks):
            pump.sink = sink
        transports = session.transports
        for leg, transport in enumerate(transports):
            into = transports[1 - leg]
            if self.reading[leg] or \
                    into.get_write_buffer_size() <= into.get_write_buffer_limits()[0]:
                transport.resume_reading()
        session.client.deadline_at = self.deadline_at

    def state(self) -> dict:
        session = self.session
        exchange = session.exchange
        head = exchange.head
        client = session.client
        host = head.host
        if isinstance(host, bytes):
            host = host.decode("latin-1")
        legs = []
        for pump in session.pumps:
            tail, bytes_in = pump.export_state()
            legs.append({"scanner": list(pump.scanner.export_state()),
                         "tail": tail.decode("latin-1"), "bytes_in": bytes_in})
        return {
            "type": "session",
            "socket_key": list(client.socket_key), "peer": [client.peer_ip, client.peer_port],
            "sent": client.sent,
            "host": host, "path": head.path(), "url": head.original_url.decode("latin-1"),
            "request_id": exchange.request_id.decode("latin-1") if exchange.request_id else "",
            "backend": list(exchange.route.backend_key), "server": session.endpoint.name,
            "legs": legs, "started": session.started, "upgrades": session.upgrades,
            "ping_count": session.ping_count,
            "pongs_due": [[p.decode("latin-1") for p in due] for due in session.pongs_due],
        }

    def fds(self) -> list[int]:
        return [t.get_extra_info("socket").fileno() for t in self.session.transports]

    def retire(self, host: Any, recorder: GatewayRecorder) -> None:
        """The new process has it: let go of our descriptors without a word on either socket
        (closing one descriptor of a socket another process holds sends nothing)."""
        session = self.session
        for pump in session.pumps:
            pump.session = _GONE  # their connection_lost must not end the session
        for transport in session.transports:
            transport.close()
        session.ended = True
        session.exchange.session = None
        release_session(session.exchange)  # the new process counts it now (max_sessions)
        session.endpoint.active -= 1
        recorder.sessions.discard(session)
        client = cast(ClientConnection, session.client)
        client.session = None
        client.deadline_at = NEVER
        host.connection_closed(client)


class _Gone:
    """The pumps' session once it has moved: what the closing transports report is nobody's."""

    def on_connection_lost(self, pump: Any, exc: BaseException | None) -> None:
        pass

    def on_eof(self, pump: Any) -> bool:
        return False

    def on_control(self, pump: Any, data: Any, consumed: int) -> int:
        return 0

    def on_frame_error(self, pump: Any, exc: Any, data: Any) -> None:
        pass


_GONE = _Gone()


# -- a session arriving ------------------------------------------------------------------------


class _Hold:
    """The protocol of a socket that has arrived, until its session takes it: keeps what is read
    meanwhile (uvloop starts reading right after connection_made), for the session to scan first."""

    __slots__ = ("early",)

    def __init__(self) -> None:
        self.early = bytearray()

    def connection_made(self, transport: Any) -> None:
        transport.pause_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.early += data

    def eof_received(self) -> bool:
        return True  # the session sees the end when it reads (its pump's eof_received)


class _Identity:
    """What a resumed session keeps of the exchange that opened it: its route and backend (as
    this process configures them), its request's URL and id, for the logs."""

    __slots__ = ("route", "backend", "head", "request_id", "session", "sessions")

    def __init__(self, route: Any, backend: Any, url: bytes, host: str, path: str,
                 request_id: bytes):
        self.route = route
        self.backend = backend
        self.head = _Head(url, host, path)
        self.request_id = request_id
        self.session: Any = None
        # A place among the settings' open sessions (max_sessions), as a WebSocketExchange
        # holds one: given back by wsproxy.release_session when the session ends.
        count = backend.sessions
        count.open += 1
        self.sessions: Any = count


class _Head:
    __slots__ = ("original_url", "host", "_path")

    def __init__(self, url: bytes, host: str, path: str):
        self.original_url = url
        self.host = host
        self._path = path

    def path(self) -> str:
        return self._path


async def resume(state: dict, fds: list[int], gateway: Any) -> WebSocketSession:
    """Wrap the two sockets in this process's transports and continue the session. Raises
    HandoverError (the old process keeps it) when this configuration has no place for it."""
    client_sock = socket.socket(fileno=fds[0])
    backend_sock = socket.socket(fileno=fds[1])
    try:
        key = (state["socket_key"][0], state["socket_key"][1])
        route = gateway.router.match(key, state["host"] or None, state["path"])
        backend_key = tuple(state["backend"])
        if route is None or route.backend_key != backend_key:
            raise HandoverError("its route is not configured here")
        backend = gateway.backends.get(backend_key)
        endpoint = next((ep for ep in backend.endpoints if ep.name == state["server"]), None) \
            if backend is not None else None
        if endpoint is None:
            raise HandoverError(f"server {state['server']} is not configured here")
        scanners = [FrameScanner.from_state(leg["scanner"]) for leg in state["legs"]]
    except (HandoverError, KeyError, TypeError, ValueError, StopIteration) as exc:
        client_sock.close()
        backend_sock.close()
        raise HandoverError(str(exc) or type(exc).__name__) from None
    loop = gateway.loop
    transports, holds = [], []
    for sock in (client_sock, backend_sock):
        transport, hold = await loop.connect_accepted_socket(_Hold, sock)
        transports.append(transport)
        holds.append(hold)
    client = ClientConnection(gateway.dispatcher, gateway.recorder, gateway.config.gateway, loop,
                              key, False)
    client.transport = transports[0]
    client.peer_ip, client.peer_port = state["peer"]
    client.sent = state["sent"]
    upstream = UpstreamConnection(endpoint)
    upstream.transport = transports[1]
    endpoint.active += 1  # the session's; it gives it back when it ends
    identity = _Identity(route, backend, state["url"].encode("latin-1"), state["host"],
                         state["path"], state["request_id"].encode("latin-1"))
    session = WebSocketSession(client, upstream, identity, bool(scanners[0].allow_rsv1),
                               gateway.recorder, gateway.config.gateway.close_timeout)
    pumps = []
    for side, scanner, leg in zip(("client", "backend"), scanners, state["legs"]):
        pump = Pump(scanner, session, side=side)
        pump.import_state(leg["tail"].encode("latin-1"), leg["bytes_in"])
        pumps.append(pump)
    session.pumps = (pumps[0], pumps[1])
    session.started = state["started"]
    session.upgrades = state["upgrades"] + 1
    session.ping_count = state["ping_count"]
    session.pongs_due = [[p.encode("latin-1") for p in due] for due in state["pongs_due"]]
    identity.session = session
    gateway.dispatcher.connection_opened(client)
    client.state = RELAYING
    client.session = session
    client.parser = None
    session.start(bytes(holds[0].early), bytes(holds[1].early))
    return session
