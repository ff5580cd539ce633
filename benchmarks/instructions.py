"""Instructions per request and per WebSocket handshake, counted by valgrind (callgrind).

Wall-clock figures on a shared VM drift by ±20 % from run to run; instruction counts do not. This
tool runs `fastgw serve` under `valgrind --tool=callgrind` in front of the benchmark's C echo
backend (benchmarks/e2e), sends N requests (or handshakes) with a plain client, and again with
2N, and prints (Ir(2N) - Ir(N)) / N: the instructions fastgw executes for one more request,
start-up excluded. Use it to compare two versions of the hot path; it is not part of the tests.

    python benchmarks/instructions.py [http|ws] [N]

The access log is off; FASTGW_INSTR_ACCESS_LOG=on writes it to a file (its cost is the
difference). FASTGW_INSTR_REWRITE=on gives the rule a rewrite rule set of three rules (a request
header from a variable, one from a condition's capture, a response header set and one deleted).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(port)


sys.path.insert(0, str(ROOT))
from benchmarks.e2e.procs import free_port  # noqa: E402  (a script: the repository's path)
from benchmarks.e2e.proxies import REWRITE_SET  # noqa: E402


def echo_backend() -> tuple[subprocess.Popen, int]:
    from benchmarks.e2e.build import build  # type: ignore
    tools = build()
    proc = subprocess.Popen([str(tools["wsecho"]), "-p", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    port = int(re.search(r"(\d+)\s*$", line.strip()).group(1))
    return proc, port


def http_load(port: int, n: int, conns: int = 8) -> None:
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    request = b"GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: instr\r\nAccept: */*\r\n\r\n"
    for i in range(n):
        s = socks[i % conns]
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n") and len(data) < 100:
            data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"Content-Length: (\d+)", head, re.I)
            if m and len(body) >= int(m.group(1)):
                break
    for s in socks:
        s.close()


def ws_load(port: int, n: int) -> None:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        s.sendall(b"\x88\x82\x00\x00\x00\x00\x03\xe8")  # Close 1000, zero mask key
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
        s.close()




def run(kind: str, n: int) -> int:
    backend, backend_port = echo_backend()
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="fastgw-instr-"))
    try:
        cfg = work / "gw.toml"
        access_log = work / "access.log" if os.environ.get("FASTGW_INSTR_ACCESS_LOG") == "on" else "off"
        cfg.write_text(f"""
[gateway]
access_log = "{access_log}"
[[listeners]]
name = "l"
port = {port}
bind = "127.0.0.1"
[[backend_pools]]
name = "p"
servers = ["127.0.0.1:{backend_port}"]
[[backend_settings]]
name = "s"
port = {backend_port}
request_timeout = 60
[[rules]]
name = "r"
listener = "l"
backend_pool = "p"
backend_settings = "s"
{REWRITE_SET if os.environ.get("FASTGW_INSTR_REWRITE") == "on" else ""}""")
        out = work / "callgrind.out"
        fastgw = ROOT / ".venv" / "bin" / "fastgw"
        env = dict(os.environ, FASTGW_METRICS_INTERVAL="100000")  # no periodic work in the count
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 str(fastgw), "serve", str(cfg), "--log-level", "warning"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_port(port)
        (http_load if kind == "http" else ws_load)(port, n)
        proc.send_signal(signal.SIGTERM)
        proc.wait(300)
        if os.environ.get("FASTGW_INSTR_KEEP"):
            shutil.copy(out, os.environ["FASTGW_INSTR_KEEP"] + f".{n}")
        text = out.read_text(errors="replace")
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        return int(m.group(1))
    finally:
        backend.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    kind = sys.argv[1] if len(sys.argv) > 1 else "http"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else (2000 if kind == "http" else 300)
    a = run(kind, n)
    b = run(kind, 2 * n)
    print(f"{kind}: {(b - a) / n:,.0f} instructions per {'request' if kind == 'http' else 'handshake'}"
          f" (Ir {a:,} for {n}, {b:,} for {2 * n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
