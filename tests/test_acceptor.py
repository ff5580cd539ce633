"""Accepting without a socket object, and coroutines driven without a Task (fastgw.acceptor).

- `Driven` runs a coroutine that awaits futures: its value goes to the owner's coro_done, its
  exception to coro_failed, and once closed the owner hears nothing more.
- `Accepted` stands in for an accepted socket on uvloop: its descriptor is closed by libuv with
  the transport once handed over (its close() is then a no-op), and by close() otherwise.
- Through a real uvloop loop and a real client: the connection is accepted, its protocol made
  and connected, and closing the transport closes the client's connection, with nothing
  reported to the loop's exception handler.
"""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
import uvloop

from fastgw.acceptor import Accepted, Acceptor, Driven
from fastgw.stats import Stats


class Owner:
    def __init__(self):
        self.done: list = []
        self.failed: list = []

    def coro_done(self, result):
        self.done.append(result)

    def coro_failed(self, exc):
        self.failed.append(exc)


def run(coro_fn):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn(loop))
    finally:
        loop.close()


def test_driven_gives_the_value_or_the_failure_and_nothing_once_closed():
    async def scenario(loop):
        async def two_steps(a, b):
            return (await a) + (await b)

        owner = Owner()
        a, b = loop.create_future(), loop.create_future()
        Driven(two_steps(a, b), owner)()
        a.set_result(1)
        await asyncio.sleep(0)
        assert owner.done == []  # still waiting for b
        b.set_result(2)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert owner.done == [3] and owner.failed == []

        failing = Owner()
        c = loop.create_future()
        Driven(two_steps(c, c), failing)()
        c.set_exception(ConnectionRefusedError())
        await asyncio.sleep(0)
        assert failing.done == [] and isinstance(failing.failed[0], ConnectionRefusedError)

        closed = Owner()
        d = loop.create_future()
        driven = Driven(two_steps(d, d), closed)
        driven()
        driven.close()
        d.set_result(1)
        await asyncio.sleep(0)
        assert closed.done == [] and closed.failed == []

    run(scenario)


def test_accepted_closes_its_descriptor_only_until_it_is_handed_over():
    a, b = socket.socketpair()
    kept = Accepted(a.detach(), socket.AF_UNIX, None, None)
    kept.close()
    with pytest.raises(OSError):
        os.fstat(kept.fd)
    handed = Accepted(b.detach(), socket.AF_UNIX, None, None)
    assert handed.fileno() == handed.fd and handed.taken
    handed.close()  # libuv owns it now
    os.fstat(handed.fd)
    os.close(handed.fd)


def test_a_connection_accepted_on_uvloop_is_connected_and_closed_once():
    class Proto(asyncio.Protocol):
        def __init__(self):
            self.made = asyncio.get_running_loop().create_future()
            self.lost = asyncio.get_running_loop().create_future()

        def connection_made(self, transport):
            self.made.set_result(transport)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def scenario(loop):
        errors: list = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        protocols: list[Proto] = []

        def factory():
            protocols.append(Proto())
            return protocols[-1]

        acceptor = Acceptor(loop, listener, factory, lambda p: None, None, "test", Stats())
        assert acceptor.stand_in
        acceptor.start()
        client = socket.create_connection(listener.getsockname())
        client.setblocking(False)
        while not protocols:
            await asyncio.sleep(0.01)
        transport = await asyncio.wait_for(protocols[0].made, 5)
        assert transport.get_extra_info("peername") == client.getsockname()
        transport.close()
        assert await asyncio.wait_for(protocols[0].lost, 5) is None
        assert await asyncio.wait_for(loop.sock_recv(client, 1), 5) == b""  # closed: EOF
        client.close()
        acceptor.close()
        await asyncio.sleep(0)
        assert errors == []

    run(scenario)
