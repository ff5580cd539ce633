"""`fastgw demo`: the gateway and its demo backends, with nothing else running."""

from __future__ import annotations

import asyncio
import json
import signal
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
