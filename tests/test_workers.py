"""`workers = N`: a supervisor, N SO_REUSEPORT workers, restarts, signals, summed metrics."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request

from support import AiohttpBackend, free_port, run_cli, start_cli, wait_port


def children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry))
    return out


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_two_workers_restart_signals_and_metrics(tmp_path):
    backend = AiohttpBackend("b")
    port, admin = free_port(), free_port()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[gateway]
workers = 2
admin = "127.0.0.1:{admin}"
access_log = "off"

[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"

[[backend_pools]]
name = "pool"
servers = ["127.0.0.1:{backend.port}"]

[[backend_settings]]
name = "s"

[[rules]]
name = "r"
listener = "web"
backend_pool = "pool"
backend_settings = "s"
""")
    proc = start_cli("serve", str(cfg))
    try:
        wait_port(port, proc=proc)
        assert wait_for(lambda: len(children(proc.pid)) == 2)
        workers = children(proc.pid)
        for _ in range(40):
            assert get(f"http://127.0.0.1:{port}/x")[0] == 200
        time.sleep(0.6)  # each worker moves its counts to the shared metrics within 0.25 s
        _, text = get(f"http://127.0.0.1:{admin}/metrics")
        line = next(x for x in text.decode().splitlines()
                    if x.startswith('fastgw_http_requests_total{code_class="2xx"'))
        assert float(line.rsplit(" ", 1)[1]) == 40  # summed over both workers
        # A worker that dies is replaced; traffic keeps flowing meanwhile.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid))
        # Its replacement has read the configuration (before it changes below) and serves.
        assert wait_for(lambda: proc.stderr.read().count('"event":"started"') == 3)
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/x")[0] == 200
        # SIGHUP goes to every worker: both serve a new backend pool afterwards.
        second = AiohttpBackend("second")
        try:
            cfg.write_text(cfg.read_text().replace(f'"127.0.0.1:{backend.port}"', f'"127.0.0.1:{second.port}"'))
            proc.send_signal(signal.SIGHUP)

            def all_second():
                return all(json.loads(get(f"http://127.0.0.1:{port}/y")[1])["server"] == "second"
                           for _ in range(10))
            assert wait_for(all_second)
            # A live upgrade to a configuration the new worker refuses changes nothing: the
            # supervisor and its workers serve on (test_upgrade has the upgrades that work).
            workers = children(proc.pid)
            cfg.write_text(cfg.read_text() + "\nnonsense = 1\n")
            done = run_cli("upgrade", "--pid", str(proc.pid), timeout=60)
            assert done.returncode == 1
            assert "worker 0: the new process refused the configuration (exit status 2)" \
                in done.stderr
            assert proc.poll() is None and wait_for(lambda: children(proc.pid) == workers)
            assert wait_for(all_second)
        finally:
            second.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        backend.stop()
    assert children(proc.pid) == set()


def test_worker_that_cannot_bind_stops_the_supervisor(tmp_path):
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f"""
[gateway]
workers = 2
[[listeners]]
name = "web"
port = {port}
bind = "127.0.0.1"
[[backend_pools]]
name = "pool"
[[backend_settings]]
name = "s"
[[rules]]
name = "r"
listener = "web"
backend_pool = "pool"
backend_settings = "s"
""")
    proc = start_cli("serve", str(cfg))
    try:
        assert proc.wait(15) == 1
        err = proc.stderr.read()
        assert "cannot listen on 127.0.0.1" in err and "Traceback" not in err
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()


