"""The relay buffer (Pump) on both twins: held tails, session callbacks, flow-control direction,
and the hazard of DESIGN.md section 4 -- a transport keeps views of what it could not send, so a
reused receive buffer must never overwrite them -- with fake transports and with real loopback
sockets on uvloop and on the default asyncio loop."""

import asyncio
import random
import socket
import sys
import time

import pytest
import uvloop

from fastgw.errors import FrameError

KEY = b"\x9a\x01\xfe\x42"


def xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    stream = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


def frame(opcode, payload=b"", *, fin=True, key=KEY):
    n = len(payload)
    out = bytearray([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if key is not None else 0
    if n < 126:
        out.append(mbit | n)
    elif n < 65536:
        out += bytes([mbit | 126]) + n.to_bytes(2, "big")
    else:
        out += bytes([mbit | 127]) + n.to_bytes(8, "big")
    if key is None:
        return bytes(out) + payload
    return bytes(out) + key + xor(payload, key)


def random_stream(rnd: random.Random, total: int, *, pings=True) -> bytes:
    """Valid masked client frames, mostly small, some large, with interleaved pings."""
    parts, size, in_msg = [], 0, False
    while size < total:
        r = rnd.random()
        if pings and r < 0.05:
            part = frame(9, rnd.randbytes(rnd.randint(0, 125)), key=rnd.randbytes(4))
        else:
            n = rnd.choice([0, 1, 5, 64, 64, 64, 125, 126, 1000, 4000, 70000])
            fin = rnd.random() < 0.8
            part = frame(0 if in_msg else 2, rnd.randbytes(n), fin=fin, key=rnd.randbytes(4))
            in_msg = not fin
        parts.append(part)
        size += len(part)
    if in_msg:
        parts.append(frame(0, b"end", key=rnd.randbytes(4)))
    return b"".join(parts)


class Session:
    """The policy side, as small as a test needs: it records what the pump reports."""

    def __init__(self, impl, *, forward_prefix_on_error=False):
        self.impl = impl
        self.controls = []
        self.errors = []
        self.eofs = []
        self.lost = []
        self.forward_prefix_on_error = forward_prefix_on_error
        self.returns = None  # None: forward everything consumed

    def on_control(self, pump, data, consumed):
        for ev in pump.scanner.events:
            if ev[0] == self.impl.EV_CONTROL:
                payload = bytearray(data[ev[2] : ev[2] + ev[3]])
                if ev[4] is not None:
                    self.impl.apply_mask(payload, ev[4])
                self.controls.append((pump.side, ev[1], bytes(payload)))
        return consumed if self.returns is None else self.returns(pump, data, consumed)

    def on_frame_error(self, pump, exc, data):
        self.errors.append((pump.side, exc, bytes(data)))
        if self.forward_prefix_on_error and pump.sink is not None and exc.offset:
            pump.sink.write(bytes(data[: exc.offset]))

    def on_eof(self, pump):
        self.eofs.append(pump.side)
        return False

    def on_connection_lost(self, pump, exc):
        self.lost.append((pump.side, exc))


class Sink:
    """A transport that sends everything at once: it records a copy of each write."""

    def __init__(self):
        self.chunks = []
        self.paused = 0
        self.resumed = 0

    def write(self, data):
        self.chunks.append(bytes(data))

    def get_write_buffer_size(self):
        return 0

    def pause_reading(self):
        self.paused += 1

    def resume_reading(self):
        self.resumed += 1

    @property
    def data(self):
        return b"".join(self.chunks)


class HoldingSink(Sink):
    """A transport whose peer does not read: it keeps the objects it was given, as uvloop and
    asyncio keep what write() could not send, and reads them only when drained."""

    def __init__(self):
        super().__init__()
        self.held = []
        self.types = []

    def write(self, data):
        self.types.append(type(data))
        self.held.append(data)

    def get_write_buffer_size(self):
        return sum(len(memoryview(d)) for d in self.held)

    def drain(self):
        self.chunks += [bytes(d) for d in self.held]
        self.held.clear()


def deliver(pump, data: bytes, read_sizes=None):
    """Play the loop: get_buffer, 'read' into it, buffer_updated -- in pieces."""
    pos = 0
    while pos < len(data):
        buf = pump.get_buffer(-1)
        assert isinstance(buf, memoryview) and not buf.readonly
        n = len(buf) if read_sizes is None else min(len(buf), next(read_sizes))
        piece = data[pos : pos + n]
        buf[: len(piece)] = piece
        del buf
        pump.buffer_updated(len(piece))
        pos += len(piece)


def make_pump(impl, session=None, *, masked=True, side="client", sink=None, **kw):
    session = session or Session(impl)
    pump = impl.Pump(impl.FrameScanner(masked=masked, **kw), session, side=side)
    pump.sink = Sink() if sink is None else sink
    return pump, session


# -- construction and attributes -------------------------------------------------------------------


def test_attributes(impl):
    scanner = impl.FrameScanner(masked=True)
    session = Session(impl)
    before = time.monotonic()
    pump = impl.Pump(scanner, session, side="client")
    assert pump.scanner is scanner and pump.session is session and pump.side == "client"
    assert pump.sink is None and pump.transport is None and pump.forwarding and not pump.failed
    assert pump.bytes_in == 0 and before - 0.01 <= pump.last_read <= time.monotonic() + 0.01
    for name in ("scanner", "side", "last_read", "bytes_in", "failed"):
        with pytest.raises(AttributeError):
            setattr(pump, name, None)
    pump.sink = Sink()
    pump.forwarding = False
    assert not pump.forwarding


def test_construction_errors(impl):
    scanner = impl.FrameScanner(masked=True)
    with pytest.raises(ValueError):
        impl.Pump(scanner, Session(impl), side="server")
    with pytest.raises(TypeError):
        impl.Pump(scanner, Session(impl), side=1)
    with pytest.raises(TypeError):
        impl.Pump(object(), Session(impl), side="client")
    with pytest.raises(TypeError):
        impl.Pump(scanner, Session(impl))  # side is required


def test_last_read_is_the_monotonic_clock(impl):
    pump, _ = make_pump(impl)
    time.sleep(0.02)
    deliver(pump, frame(2, b"x"))
    now = time.monotonic()
    assert now - 0.01 <= pump.last_read <= now
    assert pump.bytes_in == 7


# -- forwarding and held tails -------------------------------------------------------------------


def test_forwards_a_stream_read_in_random_pieces(impl):
    rnd = random.Random(1)
    stream = random_stream(rnd, 300_000)
    pump, session = make_pump(impl)
    deliver(pump, stream, iter(lambda: rnd.choice([1, 2, 7, 100, 1500, 65536, 300_000]), None))
    assert pump.sink.data == stream
    assert pump.bytes_in == len(stream)
    assert pump.scanner.bytes == len(stream) and pump.scanner.at_boundary
    assert len(session.controls) == pump.scanner.control_frames > 0


def test_held_tail_byte_by_byte(impl):
    stream = frame(1, b"Hel", fin=False) + frame(9, b"ping") + frame(0, b"lo") + frame(2, b"z" * 300)
    pump, session = make_pump(impl)
    deliver(pump, stream, iter(lambda: 1, None))
    assert pump.sink.data == stream
    # A header is forwarded once complete, a data payload byte by byte as it comes, a control
    # frame whole.
    sizes = [len(c) for c in pump.sink.chunks]
    assert sizes[:8] == [6, 1, 1, 1, 10, 6, 1, 1]
    assert session.controls == [("client", 9, b"ping")]


def test_feed_before_the_transport(impl):
    stream = frame(1, b"early") + frame(9, b"p") + frame(2, b"x" * 200)
    pump, session = make_pump(impl)
    pump.feed(bytearray(stream[:9]))  # ends inside the ping: a held tail
    deliver(pump, stream[9:])
    assert pump.sink.data == stream
    assert session.controls == [("client", 9, b"p")]
    assert pump.bytes_in == len(stream)
    # feed() also takes over a held tail left by a read
    pump2, _ = make_pump(impl)
    deliver(pump2, stream[:3])
    pump2.feed(memoryview(stream)[3:])
    assert pump2.sink.data == stream


def test_data_received_is_the_protocol_path(impl):
    stream = frame(2, b"a" * 1000) + frame(10, b"pong")
    pump, session = make_pump(impl)
    for i in range(0, len(stream), 333):
        pump.data_received(stream[i : i + 333])
    assert pump.sink.data == stream
    assert session.controls == [("client", 10, b"pong")]


def test_forwarding_false_scans_but_does_not_write(impl):
    pump, session = make_pump(impl)
    pump.forwarding = False
    deliver(pump, frame(2, b"abc") + frame(9, b"x"))
    assert pump.sink.chunks == [] and pump.scanner.frames == 2 and len(session.controls) == 1


def test_no_sink_is_fine(impl):
    pump, _ = make_pump(impl)
    pump.sink = None
    deliver(pump, frame(2, b"abc"))
    assert pump.scanner.frames == 1


# -- session callbacks -------------------------------------------------------------------------


def test_close_frame_reaches_on_control_readable(impl):
    stream = frame(1, b"last words") + impl.build_close(1000, "bye", mask=True)
    seen = []
    pump, session = make_pump(impl)

    def returns(p, data, consumed):
        [ev] = p.scanner.events
        assert ev[:2] == (impl.EV_CONTROL, impl.OP_CLOSE) and p.scanner.closed
        payload = bytearray(data[ev[2] : ev[2] + ev[3]])
        impl.apply_mask(payload, ev[4])
        seen.append(impl.parse_close(payload))
        return consumed

    session.returns = returns
    deliver(pump, stream)
    assert seen == [(1000, "bye")]
    assert pump.sink.data == stream


def test_on_control_decides_how_much_is_forwarded(impl):
    head = frame(2, b"data")
    stream = head + frame(9, b"drop me")
    pump, session = make_pump(impl)
    session.returns = lambda p, data, consumed: p.scanner.events[0][2] - 6  # up to the ping
    deliver(pump, stream)
    assert pump.sink.data == head
    assert pump.scanner.bytes == len(stream)  # consumed all the same: nothing is held


@pytest.mark.parametrize("bad", [lambda c: c + 1, lambda c: -1, lambda c: None])
def test_on_control_must_return_a_count(impl, bad):
    pump, session = make_pump(impl)
    session.returns = lambda p, data, consumed: bad(consumed)
    with pytest.raises((ValueError, TypeError)):
        pump.feed(frame(9, b"x"))


def test_frame_error_reaches_on_frame_error_with_offset(impl):
    good = frame(2, b"fine") + frame(9, b"ping")
    bad = frame(1, b"unmasked", key=None)
    pump, session = make_pump(impl)
    deliver(pump, good[:3])  # a held tail: offsets count from the tail
    deliver(pump, good[3:] + bad + frame(2, b"more"))
    [(side, exc, data)] = session.errors
    assert type(exc) is FrameError and (exc.code, exc.reason) == (1002, "unmasked frame where masking is required")
    assert side == "client" and exc.offset == len(good) and data[: exc.offset] == good
    # The control frame before the fault is in the scanner's events; nothing was forwarded from
    # that read and nothing will be: the stream cannot resynchronize.
    assert [ev[1] for ev in pump.scanner.events] == [9]
    assert pump.failed and not pump.forwarding and pump.sink.data == b""
    deliver(pump, frame(2, b"ignored"))
    assert len(session.errors) == 1 and pump.sink.data == b""
    assert pump.bytes_in == len(good) + len(bad) + 10 + 13


def test_data_after_close_in_the_same_read(impl):
    close = impl.build_close(1001, mask=True)
    pump, session = make_pump(impl)
    deliver(pump, frame(2, b"x") + close + frame(2, b"late"))
    assert pump.sink.data == frame(2, b"x") + close
    [(side, exc, data)] = session.errors
    assert (exc.code, exc.reason, exc.offset) == (1002, "data after close frame", 0)
    assert data == frame(2, b"late")


def test_data_after_close_in_a_later_read(impl):
    pump, session = make_pump(impl)
    deliver(pump, impl.build_close(1000, mask=True))
    deliver(pump, frame(2, b"late"))
    [(side, exc, data)] = session.errors
    assert (exc.code, exc.offset) == (1002, 0)


def test_eof_and_connection_lost_go_to_the_session(impl):
    pump, session = make_pump(impl, side="backend")
    assert pump.eof_received() is False
    err = ConnectionResetError()
    pump.connection_lost(err)
    assert session.eofs == ["backend"] and session.lost == [("backend", err)]
    marker = object()
    pump.connection_made(marker)
    assert pump.transport is marker


def test_pause_writing_pauses_reading_the_sink(impl):
    # This pump reads leg A and writes into B (its sink). pause_writing() arrives when A's own
    # write buffer is full -- filled by the other pump, which reads B -- so B must stop reading.
    pump, _ = make_pump(impl)
    pump.pause_writing()
    assert (pump.sink.paused, pump.sink.resumed) == (1, 0)
    pump.resume_writing()
    assert (pump.sink.paused, pump.sink.resumed) == (1, 1)
    pump.sink = None
    pump.pause_writing()
    pump.resume_writing()


# -- the arena hazard (DESIGN.md section 4) -----------------------------------------------------


def test_views_held_by_a_transport_are_never_overwritten(impl):
    """Two pumps share the arena; one sink keeps every view it gets until drained."""
    rnd = random.Random(7)
    held = HoldingSink()
    p1, _ = make_pump(impl, sink=held)
    p2, _ = make_pump(impl)
    s1, s2 = random_stream(rnd, 400_000), random_stream(rnd, 400_000)
    sizes = iter(lambda: rnd.choice([10, 1000, 30000, 262144]), None)
    for i in range(0, 400_000, 50_000):
        deliver(p1, s1[i : i + 50_000], sizes)
        deliver(p2, s2[i : i + 50_000], sizes)  # reads into the arena p1's sink may hold
        if rnd.random() < 0.3:
            held.drain()
    deliver(p1, s1[400_000:], sizes)
    deliver(p2, s2[400_000:], sizes)
    held.drain()
    assert held.data == s1
    assert p2.sink.data == s2


def test_backlogged_sink_gets_copies(impl):
    held = HoldingSink()
    pump, _ = make_pump(impl, sink=held)
    deliver(pump, frame(2, b"a" * 100))
    deliver(pump, frame(2, b"b" * 100))
    deliver(pump, frame(2, b"c" * 100))
    # The first write was a view; once the sink is queueing, exact-size copies.
    assert held.types == [memoryview, bytes, bytes]
    held.drain()
    deliver(pump, frame(2, b"d" * 100))
    assert held.types[-1] is memoryview
    held.drain()
    assert held.data == b"".join(frame(2, c * 100) for c in (b"a", b"b", b"c", b"d"))


def test_arena_is_recycled_not_leaked(impl):
    """A sink that keeps views retires the arena; arenas come back once the views are gone."""
    info = impl._arena_info()
    held = HoldingSink()
    pump, _ = make_pump(impl, sink=held)
    for i in range(50):
        deliver(pump, frame(2, bytes([i]) * 1000))
        held.drain()  # the transport sends everything and drops its views
    after = impl._arena_info()
    assert after["retired"] - info["retired"] == 50
    if impl.__name__ == "fastgw._frames":
        # Spare arenas are reused once their exports drop to zero: no allocation per retire.
        assert after["allocated"] - info["allocated"] <= 2
        assert after["reused"] - info["reused"] >= 48


def test_session_keeping_data_does_not_see_it_overwritten_c(c_module):
    """The C module counts the arena's exports, so even a session that keeps `data` (which it
    must not) keeps intact bytes. The twin relies on write buffer sizes only."""
    impl = c_module
    kept = []
    pump, session = make_pump(impl)
    session.returns = lambda p, data, consumed: kept.append(data) or consumed
    ping = frame(9, b"keep")
    deliver(pump, ping)
    deliver(pump, frame(2, b"\xff" * 5000))
    assert bytes(kept[0]) == ping


def test_no_python_allocation_per_frame_c(c_module):
    """One read of ~900 small frames: while write() runs, the pump holds at most the view it
    passes (a memoryview and its managed buffer), nothing per frame."""
    impl = c_module
    stream = b"".join(frame(2, bytes(64), key=bytes([i & 0xFF, 1, 2, 3])) for i in range(900))
    pump, _ = make_pump(impl)
    deltas = []

    class CountingSink(Sink):
        def write(self, data):
            deltas.append(sys.getallocatedblocks() - base)

    pump.sink = CountingSink()
    for _ in range(20):
        buf = pump.get_buffer(-1)
        buf[: len(stream)] = stream
        del buf
        base = sys.getallocatedblocks()
        pump.buffer_updated(len(stream))
    assert len(deltas) == 20
    assert max(deltas[5:]) <= 3, deltas


# -- real sockets --------------------------------------------------------------------------------


class BufferedAdapter(asyncio.BufferedProtocol):
    """Lets the default asyncio loop use the pump's buffered path (that loop picks get_buffer
    only for asyncio.BufferedProtocol subclasses; uvloop only looks for the methods)."""

    def __init__(self, pump):
        self.pump = pump

    def connection_made(self, transport):
        self.pump.connection_made(transport)

    def get_buffer(self, sizehint):
        return self.pump.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        self.pump.buffer_updated(nbytes)

    def eof_received(self):
        return self.pump.eof_received()

    def connection_lost(self, exc):
        self.pump.connection_lost(exc)

    def pause_writing(self):
        self.pump.pause_writing()

    def resume_writing(self):
        self.pump.resume_writing()


class Recorder:
    """Wraps a transport given to a pump as its sink: counts pauses, tracks the write buffer."""

    def __init__(self, transport):
        self.transport = transport
        self.max_buffer = 0
        self.paused = 0
        self.resumed = 0

    def write(self, data):
        self.transport.write(data)
        self.max_buffer = max(self.max_buffer, self.transport.get_write_buffer_size())

    def get_write_buffer_size(self):
        return self.transport.get_write_buffer_size()

    def pause_reading(self):
        self.paused += 1
        self.transport.pause_reading()

    def resume_reading(self):
        self.resumed += 1
        self.transport.resume_reading()


LOOPS = ["uvloop-buffered", "asyncio-protocol", "asyncio-buffered"]


def run_on(loop_kind, coro_fn, timeout=30):
    loop = uvloop.new_event_loop() if loop_kind.startswith("uvloop") else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
    finally:
        loop.close()


async def relay(impl, loop_kind, session, client_bytes_fn, *, expect, slow=False, small_buffers=False):
    """client -> gateway (two pumps) -> backend. The client sends what client_bytes_fn writes;
    the backend collects `expect` bytes (slowly if asked). Returns (received, pumps, recorders)."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    done = loop.create_future()

    async def backend(reader, writer):
        while len(received) < expect:
            chunk = await reader.read(4096 if slow else 1 << 20)
            if not chunk:
                break
            received.extend(chunk)
            if slow:
                await asyncio.sleep(0.001)  # uvloop's timers have millisecond resolution
        done.set_result(None)
        writer.close()

    lsock = socket.socket()
    if small_buffers:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    server = await asyncio.start_server(backend, sock=lsock)

    c2b = impl.Pump(impl.FrameScanner(masked=True), session, side="client")
    b2c = impl.Pump(impl.FrameScanner(masked=False), session, side="backend")

    def wrap(pump):
        return BufferedAdapter(pump) if loop_kind.endswith("-buffered") and loop_kind.startswith("asyncio") else pump

    bsock = socket.socket()
    if small_buffers:
        bsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    bsock.setblocking(False)
    await loop.sock_connect(bsock, lsock.getsockname())
    backend_transport, _ = await loop.create_connection(lambda: wrap(b2c), sock=bsock)
    c2b.sink = sink_b = Recorder(backend_transport)

    gateway = await loop.create_server(lambda: wrap(c2b), "127.0.0.1", 0)
    port = gateway.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while c2b.transport is None:
        await asyncio.sleep(0.001)
    b2c.sink = sink_a = Recorder(c2b.transport)

    await client_bytes_fn(writer)
    await done
    writer.close()
    backend_transport.close()
    c2b.transport.close()
    gateway.close()
    server.close()
    await asyncio.sleep(0.01)
    return bytes(received), (c2b, b2c), (sink_a, sink_b)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_fast_sender_slow_receiver(impl, loop_kind):
    """2 MiB of frames into a backend that reads 4 KiB per millisecond: the bytes arrive
    uncorrupted, the gateway's queue toward the backend stays bounded, and reading the client was
    paused."""
    stream = random_stream(random.Random(3), 2 << 20)
    session = Session(impl)

    async def send(writer):
        for i in range(0, len(stream), 100_000):
            writer.write(stream[i : i + 100_000])
            await writer.drain()

    before = impl._arena_info()
    received, (c2b, _), (sink_a, sink_b) = run_on(
        loop_kind, lambda: relay(impl, loop_kind, session, send, expect=len(stream), slow=True, small_buffers=True))
    after = impl._arena_info()
    assert received == stream
    assert session.errors == []
    assert c2b.bytes_in == len(stream)
    # The backend leg's write buffer went past its high-water mark, so the client leg was paused
    # (pause_writing on the backend leg's pump -> its sink, the client transport) and resumed.
    assert sink_a.paused >= 1 and sink_a.resumed >= 1
    # Bounded: high-water mark (64 KiB) + one read (256 KiB) + slack.
    assert sink_b.max_buffer <= 512 * 1024, sink_b.max_buffer
    if loop_kind.startswith("uvloop"):
        # uvloop queued views of the arena: it was retired, not overwritten ...
        assert after["retired"] > before["retired"]
        if impl.__name__ == "fastgw._frames":
            # ... and came back as a spare once sent: a handful of arenas in all, not one per read.
            assert after["allocated"] - before["allocated"] <= 3


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_byte_by_byte_over_sockets(impl, loop_kind):
    stream = b"".join([frame(1, b"Hel", fin=False), frame(9, b"ping!"), frame(0, b"lo"),
                       impl.build_close(1000, "ok", mask=True)])
    session = Session(impl)

    async def send(writer):
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(stream)):
            writer.write(stream[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.002)

    received, (c2b, _), _ = run_on(loop_kind, lambda: relay(impl, loop_kind, session, send, expect=len(stream)))
    assert received == stream
    assert session.controls == [("client", 9, b"ping!"), ("client", 8, b"\x03\xe8ok")]
    assert c2b.scanner.closed and c2b.bytes_in == len(stream)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_frame_error_over_sockets(impl, loop_kind):
    good = random_stream(random.Random(5), 200_000)
    bad = frame(2, b"no mask", key=None)
    session = Session(impl, forward_prefix_on_error=True)

    async def send(writer):
        writer.write(good + bad + frame(2, b"never"))
        await writer.drain()

    received, (c2b, _), _ = run_on(loop_kind, lambda: relay(impl, loop_kind, session, send, expect=len(good)))
    # What the pump forwarded plus what the session forwarded on the error is exactly the valid
    # prefix.
    assert received == good
    [(side, exc, data)] = session.errors
    assert side == "client" and exc.code == 1002 and data[exc.offset :].startswith(bad)
    assert c2b.failed


class NaivePump:
    """What DESIGN.md section 4 warns against: one receive buffer, reused for every read, and
    views of it handed to write()."""

    buf = bytearray(1 << 18)

    def __init__(self, scanner, session, *, side):
        self.scanner, self.session, self.side = scanner, session, side
        self.sink = self.transport = None
        self.tail = b""

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        pass

    def eof_received(self):
        return False

    def pause_writing(self):
        self.sink.pause_reading()

    def resume_writing(self):
        self.sink.resume_reading()

    def get_buffer(self, sizehint):
        self.buf[256 - len(self.tail) : 256] = self.tail
        return memoryview(self.buf)[256:]

    def buffer_updated(self, nbytes):
        data = memoryview(self.buf)[256 - len(self.tail) : 256 + nbytes]
        consumed = self.scanner.scan(data)
        self.sink.write(data[:consumed])
        self.tail = bytes(data[consumed:])


def test_the_slow_receiver_test_catches_the_hazard():
    """The same relay with a pump that reuses its buffer under queued views corrupts the stream
    (on uvloop, which queues memoryviews as given), so test_fast_sender_slow_receiver would
    catch a pump that did this."""
    import fastgw._frames_py as twin

    naive = type("naive", (), {"Pump": NaivePump, "FrameScanner": twin.FrameScanner})
    stream = random_stream(random.Random(3), 2 << 20)

    async def send(writer):
        for i in range(0, len(stream), 100_000):
            writer.write(stream[i : i + 100_000])
            await writer.drain()

    received, _, (_, sink_b) = run_on("uvloop-buffered", lambda: relay(
        naive, "uvloop-buffered", None, send, expect=len(stream), slow=True, small_buffers=True))
    assert len(received) == len(stream) and received != stream
