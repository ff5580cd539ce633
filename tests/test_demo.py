"""`fastgw demo`: the gateway and its demo backends, with nothing else running."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import urllib.request

from websockets.asyncio.client import connect

from support import free_port, start_cli, wait_port


def test_demo_serves_page_api_and_chat():
    port = free_port()
    proc = start_cli("demo", "--port", str(port))
    try:
        wait_port(port, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
        assert "fastgw demo" in page and "/chat/ws" in page
        servers = set()
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5) as r:
                info = json.loads(r.read())
            servers.add(info["server"])
            assert info["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert servers == {"demo-backend-a", "demo-backend-b"}  # round robin over both

        async def chat():
            url = f"ws://127.0.0.1:{port}/chat/ws"
            async with connect(url, proxy=None, subprotocols=["chat"]) as alice, \
                    connect(url, proxy=None, subprotocols=["chat"]) as bob:
                assert alice.subprotocol == "chat"
                await alice.send(json.dumps({"from": "alice", "text": "hello bob"}))
                while True:
                    message = json.loads(await asyncio.wait_for(bob.recv(), 5))
                    if message["from"] == "alice":
                        return message["text"]
        assert asyncio.run(chat()) == "hello bob"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        out = proc.stdout.read()
        assert f"http://127.0.0.1:{port}/" in out
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def _admin_address(proc) -> str:
    """host:port of the demo's admin listener, from what it printed at start."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"admin listener: http://([\d.]+:\d+)/metrics", proc.stdout.read())
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no admin address printed: {proc.stdout.read()!r}")


def test_demo_admin_listener_session_count_and_chat_limit():
    from fastgw.demo import CHAT_TEXT_LIMIT

    port = free_port()
    proc = start_cli("demo", "--port", str(port))
    try:
        wait_port(port, proc=proc)
        admin = _admin_address(proc)
        # The gateway's own endpoints, on its admin listener.
        with urllib.request.urlopen(f"http://{admin}/backend-health", timeout=5) as r:
            health = json.loads(r.read())
        assert {p["pool"] for p in health["pools"]} == {"web", "chat"}
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as r:
            assert b"fastgw_websocket_sessions_open" in r.read()
        # The page links them (on the admin port of the host it was loaded from) and shows the
        # chat's limit in its input.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
        assert f':{admin.split(":")[1]}";' in page
        assert 'admin + "/metrics"' in page and 'admin + "/backend-health"' in page
        assert f'maxlength="{CHAT_TEXT_LIMIT}"' in page and f"0 / {CHAT_TEXT_LIMIT}" in page

        def sessions_open() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/gateway", timeout=5) as r:
                return json.loads(r.read())["websocket_sessions_open"]

        async def until_sessions(n: int) -> None:
            deadline = time.monotonic() + 5  # the gateway's gauges are synced 4 times a second
            while (count := await asyncio.to_thread(sessions_open)) != n:
                assert time.monotonic() < deadline, f"{count} sessions open, not {n}"
                await asyncio.sleep(0.1)

        async def chat():
            await until_sessions(0)
            url = f"ws://127.0.0.1:{port}/chat/ws"
            async with connect(url, proxy=None, subprotocols=["chat"]) as alice, \
                    connect(url, proxy=None, subprotocols=["chat"]) as bob:
                await until_sessions(2)
                # Over the limit: refused, with an error message to the sender alone.
                await alice.send(json.dumps({"from": "alice", "text": "x" * (CHAT_TEXT_LIMIT + 1)}))
                await alice.send(json.dumps({"from": "alice", "text": "y" * CHAT_TEXT_LIMIT}))
                got = []
                while len(got) < 2:
                    message = json.loads(await asyncio.wait_for(alice.recv(), 5))
                    if message.get("error") or message["from"] == "alice":
                        got.append(message)
                error, accepted = got
                assert error["error"] == "too_long" and error["limit"] == CHAT_TEXT_LIMIT
                assert error["text"] == (f"not sent: your message has {CHAT_TEXT_LIMIT + 1} "
                                         f"characters, the limit is {CHAT_TEXT_LIMIT}")
                assert accepted["text"] == "y" * CHAT_TEXT_LIMIT  # at the limit: sent whole
                while True:  # bob gets the accepted message, never the refused one
                    message = json.loads(await asyncio.wait_for(bob.recv(), 5))
                    assert "error" not in message and not message["text"].startswith("x")
                    if message["from"] == "alice":
                        assert message["text"] == "y" * CHAT_TEXT_LIMIT
                        break
                # A ping is answered, and a close is answered with the same code.
                await asyncio.wait_for(await bob.ping(), 5)
            await until_sessions(0)
            return alice.close_code

        assert asyncio.run(chat()) == 1000
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
