"""Deployment and measurement helpers of the soak benchmark.

- descriptor budget: raise our soft RLIMIT_NOFILE to the hard limit (children inherit it: fastgw
  does not raise its own yet) and derive the session count N from it;
- the proxies: fastgw and nginx configured as in the end-to-end suite (``e2e/proxies.py``), with
  a longer fastgw ``request_timeout`` and nginx limits sized to N;
- a proxy's whole process tree: RSS (VmRSS of every process) and CPU time, from /proc;
- ``Client``: the C session client ``wssoak`` driven over its stdin/stdout.

Only processes started here are ever signalled, by pid (``e2e.procs.Proc``).
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..e2e import procs
from ..e2e.proxies import ProxyContext, fastgw_config, nginx_binary, render_nginx_conf

PROXY_CPUS = "0"      # the proxy on one core, client and backend on the other (as in e2e)
LOAD_CPUS = "1"
FD_RESERVE = 256      # descriptors a proxy process keeps for itself (listener, epoll, logs, ...)
MAX_SESSIONS = 10_000


def raise_nofile() -> int:
    """Raise this process's soft descriptor limit to the hard one; return the hard limit.
    Everything started afterwards (proxies, backend, client) inherits the raised soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def session_budget(hard: int) -> int:
    """The most sessions one proxy process can relay: each costs it 2 descriptors (client and
    backend side), and FD_RESERVE are left for its own files; at most MAX_SESSIONS."""
    return max(1, min(MAX_SESSIONS, (hard - FD_RESERVE) // 2))


# ------------------------------------------------------------------------------------ proxies
@dataclass(frozen=True)
class SoakProxy:
    """How to run one proxy in front of the backend; ``argv`` writes its config first."""

    name: str
    min_processes: int
    stop_signal: int = signal.SIGTERM

    def argv(self, ctx: ProxyContext, fastgw: str, nofile: int) -> list[str]:
        if self.name == "fastgw":
            return _fastgw_argv(ctx, fastgw, session_budget(nofile))
        return _nginx_argv(ctx, nofile)


def _sub(pattern: str, repl: str, text: str) -> str:
    """re.sub that fails loudly when the template it edits no longer has the setting."""
    out, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    if n != 1:
        raise RuntimeError(f"expected one match of {pattern!r} in the e2e proxy config")
    return out


FASTGW_CHECK_PATIENCE = 180.0   # s: how long a failing `fastgw check` is retried


def _fastgw_argv(ctx: ProxyContext, exe: str, sessions: int) -> list[str]:
    """e2e's fastgw config with one worker and a request_timeout of 600 s, so that idle sessions
    are not cut during the run, and max_connections at the run's session count (fastgw's own
    default keeps a larger reserve than FD_RESERVE: 9,868 sessions with 20,000 descriptors).
    `fastgw check` is retried for FASTGW_CHECK_PATIENCE: the editable install may be in the
    middle of a rebuild or of an edit of its sources."""
    text = _sub(r"^workers = .*$", f"workers = 1\nmax_connections = {sessions}",
                fastgw_config(ctx))
    text = _sub(r"^request_timeout = .*$", "request_timeout = 600", text)
    conf = ctx.workdir / "fastgw.toml"
    conf.write_text(text)
    deadline = time.monotonic() + FASTGW_CHECK_PATIENCE
    while True:
        r = subprocess.run([exe, "check", str(conf)], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        if r.returncode == 0:
            return [exe, "serve", str(conf)]
        if time.monotonic() > deadline:
            lines = (r.stderr or r.stdout).strip().splitlines() or [""]
            raise RuntimeError(f"`fastgw check` failed (exit {r.returncode}): {lines[-1]}\n"
                               f"{r.stderr or r.stdout}")
        time.sleep(10)


def _nginx_argv(ctx: ProxyContext, nofile: int) -> list[str]:
    """e2e's nginx config with worker_rlimit_nofile at our hard limit (the limit fastgw gets;
    nginx's master runs as root here and could go higher) and worker_connections at twice that.
    nginx counts both sides of a relayed session against worker_connections, and once fewer
    than 1/16 of them are free it closes "reusable" connections, which include accepted ones
    still waiting for their request: with worker_connections = the descriptor limit, 496 of
    9,872 handshakes were cut that way ("worker_connections are not enough, reusing
    connections").  The descriptor limit stays the real bound."""
    text = _sub(r"^worker_rlimit_nofile \d+;", f"worker_rlimit_nofile {nofile};",
                render_nginx_conf(ctx))
    text = _sub(r"^(\s*)worker_connections \d+;", rf"\g<1>worker_connections {2 * nofile};",
                text)
    conf = ctx.workdir / "nginx.conf"
    conf.write_text(text)
    return [nginx_binary(), "-p", str(ctx.workdir), "-c", str(conf),
            "-e", str(ctx.workdir / "error.log"), "-g", "daemon off;"]


PROXIES = {
    "fastgw": SoakProxy("fastgw", min_processes=1),
    "nginx": SoakProxy("nginx", min_processes=2),   # master + worker
}


# ----------------------------------------------------------------------------- process trees
def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS (KiB) over root and all its descendants."""
    total = 0
    for pid in procs.descendants(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass                  # exited between the scan and the read
    return total


def tree_cpu_s(root: int) -> float:
    return sum(procs.cpu_seconds(p) or 0.0 for p in procs.descendants(root))


def tree_fds(root: int) -> int:
    total = 0
    for pid in procs.descendants(root):
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def settle_rss(root: int, period: float = 0.5, window: int = 4, tol: float = 0.005,
               timeout: float = 30.0) -> tuple[int, float]:
    """Wait until the tree's RSS varies by at most `tol` (or 256 KiB) over `window` samples
    `period` apart; return (RSS in KiB, seconds waited).  Bounded by `timeout`."""
    t0 = time.monotonic()
    samples = [tree_rss_kib(root)]
    while time.monotonic() - t0 < timeout:
        time.sleep(period)
        samples.append(tree_rss_kib(root))
        last = samples[-window:]
        if len(last) == window and max(last) - min(last) <= max(256, tol * max(last)):
            break
    return samples[-1], time.monotonic() - t0


def tcp_mem_pages() -> int:
    """The kernel's TCP buffer memory in pages, machine-wide (/proc/net/sockstat)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return 0


def tcp_mem_pressure_pages() -> int:
    """The second field of net.ipv4.tcp_mem: above it the kernel is under TCP memory pressure
    (machine-wide) and shrinks socket buffers, which would change what is measured."""
    with open("/proc/sys/net/ipv4/tcp_mem") as f:
        return int(f.read().split()[1])


def proxy_queued_bytes(listen_port: int, backend_port: int) -> int:
    """Bytes queued in the kernel on the proxy's own sockets (Recv-Q + Send-Q of its accepted
    client sockets and of its connections to the backend), from ss.  Not part of any RSS, but
    memory the stalled sessions cost the machine."""
    out = subprocess.run(["ss", "-tnH", "state", "established"], capture_output=True, text=True,
                         timeout=30).stdout
    total = 0
    for line in out.splitlines():
        f = line.split()
        if len(f) < 4:
            continue
        local, peer = int(f[2].rsplit(":", 1)[1]), int(f[3].rsplit(":", 1)[1])
        if local == listen_port or (peer == backend_port and local != backend_port):
            total += int(f[0]) + int(f[1])
    return total


def listen_backlog(port: int) -> int | None:
    """The accept-queue length a listener was given (ss's Send-Q for a listening socket)."""
    try:
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=10).stdout.split()
        return int(out[2]) if len(out) > 2 else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def proxied_response(port: int, timeout: float = 10.0) -> bool:
    """True once a plain GET through the proxy gets a backend's answer (not a 5xx): the proxy
    accepts and relays, beyond having its port open."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: soak.local\r\nConnection: close\r\n\r\n")
                head = s.recv(64)
                if re.match(rb"HTTP/1\.[01] [1-4]\d\d ", head):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------ deployment
class Backend:
    """wsecho or wspush on core 1; they print "READY <port>" once listening."""

    def __init__(self, workdir: Path, argv: list[str], name: str):
        self.proc = procs.Proc(name, procs.pin_prefix(LOAD_CPUS) + argv + ["-p", "0"],
                               workdir / f"{name}.log").start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"^READY (\d+)$", self.proc.log_tail(4096), re.MULTILINE)
            if m:
                self.port = int(m.group(1))
                return
            if not self.proc.alive():
                raise procs.ProcessExited(name, self.proc.popen.returncode, self.proc.log_tail())
            time.sleep(0.01)
        self.proc.stop()
        raise TimeoutError(f"{name} did not start: {self.proc.log_tail()}")

    def push_stats(self) -> dict[str, int]:
        """wspush only: ask for its counters (SIGUSR1) and read the line they are printed on."""
        before = self.proc.log_tail(1 << 20).count("STATS ")
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            log = self.proc.log_tail(1 << 20)
            if log.count("STATS ") > before:
                words = log[log.rindex("STATS "):].split("\n")[0].split()[1:]
                return {k: int(v) for k, v in zip(words[::2], words[1::2])}
            time.sleep(0.02)
        raise TimeoutError("wspush did not print its counters")

    def stop(self) -> None:
        self.proc.stop()


class RunningProxy:
    """One proxy process tree on core 0, listening on ctx.listen_port, in front of a backend."""

    def __init__(self, spec: SoakProxy, ctx: ProxyContext, fastgw: str, nofile: int):
        self.spec, self.ctx, self.fastgw, self.nofile = spec, ctx, fastgw, nofile
        self.proc: procs.Proc | None = None
        self.starts = 0

    def start(self) -> float:
        """Start and wait until it relays a request; returns the seconds that took.  A fastgw
        that exits before it listens is retried twice (its editable install may be rebuilding)."""
        for attempt in range(3):
            self.starts += 1
            t0 = time.monotonic()
            argv = procs.pin_prefix(PROXY_CPUS) + self.spec.argv(self.ctx, self.fastgw, self.nofile)
            log = self.ctx.workdir / f"{self.spec.name}.{self.starts}.log"
            self.proc = procs.Proc(self.spec.name, argv, log, cwd=self.ctx.workdir).start()
            try:
                self.proc.wait_port(self.ctx.listen_port, 15)
                self.proc.settle_tree(self.spec.min_processes)
                if not proxied_response(self.ctx.listen_port):
                    raise TimeoutError(f"{self.spec.name} listens but relays nothing")
                return time.monotonic() - t0
            except (procs.ProcessExited, TimeoutError) as e:
                self.proc.stop(self.spec.stop_signal)
                if attempt == 2 or self.spec.name != "fastgw":
                    raise
                print(f"  {self.spec.name} failed to start, retrying: {str(e).splitlines()[0]}",
                      flush=True)
                time.sleep(3)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(self.spec.stop_signal, timeout=15)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        text = self.proc.log_tail() if self.proc else ""
        try:
            text += (self.ctx.workdir / "error.log").read_text()[-2000:]   # nginx
        except OSError:
            pass
        return text


# ---------------------------------------------------------------------------------- client
class ClientError(RuntimeError):
    """The session client died or did not answer a command in time."""


class Client:
    """The C session client (wssoak) on core 1: one command at a time, answers parsed into
    {key: value} (numbers as int or float, texts as str)."""

    def __init__(self, exe: Path, port: int, workdir: Path):
        self.stderr = open(workdir / "wssoak.stderr", "wb")
        self.popen = subprocess.Popen(procs.pin_prefix(LOAD_CPUS) + [str(exe), "-p", str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self.stderr, start_new_session=True)
        self._buf = b""
        line = self._line(10)
        if not line.startswith("READY "):
            raise ClientError(f"wssoak did not start: {line!r}")
        self.nofile = int(line.split()[1])     # its soft descriptor limit, once raised

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ClientError(f"wssoak gave no answer within {timeout:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ClientError(f"wssoak exited (code {self.popen.wait(5)})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def cmd(self, line: str, timeout: float) -> dict[str, int | float | str]:
        """Send one command; `timeout` bounds the wait (each command has its own deadline in the
        client too; this is the backstop)."""
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()
        out: dict[str, int | float | str] = {}
        while (text := self._line(timeout)) != "done":
            _, key, value = text.split(" ", 2)
            out[key] = _number(value)
        return out

    def close(self) -> None:
        """End of input: the client exits and the kernel closes what is left."""
        try:
            self.popen.stdin.close()
            self.popen.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.popen.kill()
            self.popen.wait(5)
        self.stderr.close()


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
