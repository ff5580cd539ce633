"""How long a live upgrade takes per 1000 plain WebSocket sessions.

    .venv/bin/python benchmarks/upgrade.py [SESSIONS [WORKERS]]      (default 1000 1)

Starts a websockets echo backend and `fastgw serve` (the build installed in this venv), opens
SESSIONS idle sessions through it, runs `fastgw upgrade --pid`, and reports from the gateway's
own log records:
- start: `upgrade_started` to `upgrade_listeners_handed_over` (the new process starting, loading
  its configuration and saying ready: independent of the sessions);
- handover: `upgrade_listeners_handed_over` to `upgrade_done` (every session paused, drained,
  sent with its two sockets and resumed), and that per 1000 sessions;
- total, as `fastgw upgrade` saw it.
With WORKERS > 1 the supervisor upgrades its workers one after the other: start and handover are
the sums over the workers.
Then every session must still echo (nothing was closed). Loopback only; bounded by SESSIONS.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.e2e.procs import free_port  # noqa: E402  (a script: the repository's path)

CONFIG = """
[gateway]
header_timeout = 5
workers = {workers}

[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend}"]

[[backend_settings]]
name = "settings"
port = 80
request_timeout = 60

[[rules]]
name = "rule"
listener = "web"
backend_pool = "pool"
backend_settings = "settings"
"""


def stamp(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()


async def run(count: int, workers: int, workdir: str) -> dict:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    port = free_port()
    async with serve(echo, "127.0.0.1", 0, compression=None, ping_interval=None) as backend:
        backend_port = backend.sockets[0].getsockname()[1]
        config = os.path.join(workdir, "gw.toml")
        with open(config, "w") as f:
            f.write(CONFIG.format(port=port, backend=backend_port, workers=workers))
        log_path = os.path.join(workdir, "gw.log")
        log = open(log_path, "wb")
        proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", config,
                                 "--log-format", "json"], stderr=log)
        pids = [proc.pid]
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            clients = []
            for start in range(0, count, 100):
                clients += await asyncio.gather(*(
                    connect(f"ws://127.0.0.1:{port}/", compression=None, ping_interval=None)
                    for _ in range(start, min(count, start + 100))))
            began = time.monotonic()
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "fastgw", "upgrade", "--pid",
                                 str(proc.pid), "--timeout", "120"],
                capture_output=True, text=True)
            total = time.monotonic() - began
            if done.returncode != 0:
                raise SystemExit(f"upgrade failed: {done.stderr}")
            if workers == 1:  # else the supervisor stops its workers
                pids.append(int(done.stdout.split()[2]))
            for ws in clients:
                await ws.send("still here")
            answers = await asyncio.gather(*(ws.recv() for ws in clients))
            assert answers == ["still here"] * count, "a session did not survive"
            for ws in clients:
                await ws.close()
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            proc.wait(timeout=30)
            log.close()
    events: dict[str, list] = {}
    with open(log_path) as f:
        for line in f:
            if '"event":"upgrade_' in line:
                record = json.loads(line)
                if "workers" not in record:  # the supervisor's own records
                    events.setdefault(record["event"], []).append(record)
    # One (started, handed over, done) per process upgraded, in that order.
    steps = list(zip(events["upgrade_started"], events["upgrade_listeners_handed_over"],
                     events["upgrade_done"]))
    start = sum(stamp(handed) - stamp(started) for started, handed, _ in steps)
    handover = sum(stamp(done) - stamp(handed) for _, handed, done in steps)
    moved = sum(done["sessions_moved"] for _, _, done in steps)
    return {"sessions": count, "workers": workers, "moved": moved, "start_s": round(start, 3),
            "handover_s": round(handover, 3),
            "handover_per_1000_s": round(handover * 1000 / max(moved, 1), 3),
            "total_s": round(total, 3)}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    # This process holds both ends it serves: 2 descriptors per session.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as workdir:
        print(json.dumps(asyncio.run(run(count, workers, workdir))))


if __name__ == "__main__":
    main()
