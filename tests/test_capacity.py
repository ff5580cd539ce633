"""Descriptor capacity: the limit raised at start, max_connections, and exhaustion handled.

- `fastgw serve` raises its soft RLIMIT_NOFILE to the hard limit and logs the capacity.
- At `[gateway] max_connections` the gateway stops accepting: new clients wait in the listen
  backlog (not accepted and reset) and are served once a connection closes; the admin listener
  keeps answering.
- Out of descriptors (a lowered hard limit): accepting pauses and resumes by itself, a backend
  connect that fails with EMFILE is a 503 that names the gateway, the server stays healthy, and
  service returns once descriptors are free.
"""

from __future__ import annotations

import json
import resource
import socket
import time
import urllib.request

import pytest

from fastgw import capacity

from support import AiohttpBackend, GatewayThread, free_port, gateway_toml, parse_responses, wait_port

GET = b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.fixture
def backend():
    b = AiohttpBackend("b")
    yield b
    b.stop()


def answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not parse_responses(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data


@pytest.mark.parametrize("soft, expected", [(1024, 475), (20000, 9868), (100, 17), (10, 0)])
def test_capacity_in_sessions(soft, expected):
    assert capacity.sessions(soft) == expected
    assert capacity.max_connections(0, soft) == max(1, expected)
    assert capacity.max_connections(5, soft) == 5


def test_max_connections_holds_new_clients_in_the_backlog(backend):
    port, admin = free_port(), free_port()
    gw = GatewayThread(gateway_toml(port, [f"127.0.0.1:{backend.port}"],
                                    gateway_extra=f'max_connections = 2\nadmin = "127.0.0.1:{admin}"'))
    try:
        first = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        for s in first:
            s.sendall(GET)
            assert parse_responses(answer(s, 5))[0][0] == 200
        third = socket.create_connection(("127.0.0.1", port))  # the kernel's backlog takes it
        third.sendall(GET)
        assert answer(third, 0.5) == b""  # not accepted: no answer, and no reset
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "fastgw_connections_limit 2.0" in metrics and "fastgw_connections 2.0" in metrics
        first[0].close()  # room again: the waiting client is accepted and answered
        assert parse_responses(answer(third, 5))[0][0] == 200
        for s in first[1:] + [third]:
            s.close()
    finally:
        gw.stop()


def lowered(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return preexec


def test_out_of_descriptors_is_the_gateways_problem_and_passes(backend, tmp_path):
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(port, [f"127.0.0.1:{backend.port}"], gateway_extra=(
        f'max_connections = 1000\nadmin = "127.0.0.1:{admin}"\naccess_log = "off"')))
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lowered(72))
    idle: list[socket.socket] = []
    try:
        wait_port(port, proc=proc)
        # Use the descriptors up with idle clients; the kernel keeps taking connections into the
        # backlog after the gateway stops accepting.
        for _ in range(80):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        # An accepted client's request needs a backend connection: no descriptor left for it.
        answers = []
        for s in idle[:40]:
            s.sendall(GET)
        for s in idle[:40]:
            answers += [status for status, _, _ in parse_responses(answer(s, 0.3))]
        assert 503 in answers, answers
        for s in idle:
            s.close()
        idle = []
        time.sleep(0.6)  # the accept pause ends; the closed clients' descriptors are free
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(GET)
            assert parse_responses(answer(s, 5))[0][0] == 200  # service is back by itself
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/backend-health", timeout=5) as r:
            health = json.loads(r.read())
        assert health["pools"][0]["servers"][0]["state"] == "healthy"
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'fastgw_gateway_connect_errors_total{error="EMFILE"}' in metrics
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    names = [e.get("event") for e in events]
    assert "low_capacity" in names
    assert "gateway_out_of_descriptors" in names
    assert "server_failed" not in names and "server_state" not in names
    # Warnings are rate-limited: not one per failed accept or connect.
    assert names.count("accept_paused") <= 3 and names.count("gateway_out_of_descriptors") <= 3
    assert "Traceback" not in err.decode()


def test_serve_raises_the_soft_limit(backend, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"!!! the hard limit here is {hard}: nothing to raise to")
    port = free_port()
    config = tmp_path / "gw.toml"
    config.write_text(gateway_toml(port, [f"127.0.0.1:{backend.port}"]))

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec)
    try:
        wait_port(port, proc=proc)
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert int(line.split()[3]) == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    [event] = [json.loads(x) for x in err.decode().splitlines() if '"capacity"' in x]
    assert event["sessions"] == capacity.sessions(event["open_files"]) >= 9000 or hard < 20000
