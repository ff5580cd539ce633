"""Dead-peer detection (backend settings ping_interval, ping_timeout).

A leg silent for ping_interval gets a Ping from the gateway, between frames; the Pong that answers
it is the gateway's and is not forwarded; a leg that answers nothing for ping_timeout ends the
session: the live leg gets Close 1001 "peer unresponsive", the dead leg's TCP is cut.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from fastgw.closepolicy import BACKEND, CLIENT, Action, Ending, plan

from support import GatewayThread, WsBackend, frame, free_port, ws_gateway_toml, ws_raw_handshake

PINGS = 'ping_interval = 0.3\nping_timeout = 0.5'


@pytest.fixture
def wsb():
    b = WsBackend()
    yield b
    b.stop()


def read_frames(sock: socket.socket, buf: bytearray) -> list[tuple[int, bytes]]:
    """Whole unmasked frames (server to client) at the front of buf: (opcode, payload)."""
    out = []
    while len(buf) >= 2:
        length = buf[1] & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                break
            length, pos = struct.unpack_from("!H", buf, 2)[0], 4
        if len(buf) < pos + length:
            break
        out.append((buf[0] & 0x0F, bytes(buf[pos:pos + length])))
        del buf[:pos + length]
    return out


def test_plan_for_an_unresponsive_leg():
    assert plan(Ending.UNRESPONSIVE, CLIENT) == (Action(None, "", cut=True),
                                                Action(1001, "peer unresponsive"))
    assert plan(Ending.UNRESPONSIVE, BACKEND) == (Action(1001, "peer unresponsive"),
                                                 Action(None, "", cut=True))


def test_a_client_that_answers_nothing_ends_its_session(wsb):
    port = free_port()
    gw = GatewayThread(ws_gateway_toml(port, wsb.port, extra_settings=PINGS))
    try:
        sock, head, rest = ws_raw_handshake(port, "/echo")
        assert head.startswith(b"HTTP/1.1 101")
        started = time.monotonic()
        # The client reads (so the Ping is seen) but never answers it.
        buf = bytearray(rest)
        frames = []
        sock.settimeout(5)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buf += data
                frames += read_frames(sock, buf)
        except (ConnectionResetError, socket.timeout):
            pass
        ended = time.monotonic() - started
        assert frames and frames[0][0] == 0x9 and frames[0][1].startswith(b"fastgw-ping-")
        assert all(op == 0x9 for op, _ in frames)  # Pings only: the dead leg gets no Close
        assert ended <= 0.3 + 0.5 + 1.0
        assert wsb.wait_closes(1) == [("/echo", 1001, "peer unresponsive")]
    finally:
        gw.stop()


def test_a_client_that_answers_keeps_its_session_and_sees_no_foreign_pong(wsb):
    port = free_port()
    gw = GatewayThread(ws_gateway_toml(port, wsb.port, extra_settings=PINGS))
    try:
        sock, head, rest = ws_raw_handshake(port, "/echo")
        assert head.startswith(b"HTTP/1.1 101")
        buf = bytearray(rest)
        seen = []
        sock.settimeout(0.1)
        deadline = time.monotonic() + 2.0  # several ping intervals, silent but for Pongs
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            assert data, "the gateway closed a live session"
            buf += data
            for opcode, payload in read_frames(sock, buf):
                seen.append(opcode)
                if opcode == 0x9:
                    pong = frame(0xA, payload)  # the Pong, masked as a client's
                    if seen.count(0x9) % 2:
                        sock.sendall(pong)
                    else:  # split across two reads: the gateway still recognises it
                        sock.sendall(pong[:3])
                        time.sleep(0.05)
                        sock.sendall(pong[3:])
        assert seen.count(0x9) >= 2
        assert 0xA not in seen  # the backend's Pongs to the gateway's Pings stay with it
        sock.sendall(frame(0x1, b"still here"))
        sock.settimeout(5)
        echoed = []
        while not echoed:
            buf += sock.recv(65536)
            echoed = [p for op, p in read_frames(sock, buf) if op == 0x1]
        assert echoed == [b"still here"]
        sock.close()
    finally:
        gw.stop()
