"""Process helpers: start pinned with taskset, wait for a listening port, find a process tree,
read CPU times from /proc, stop by pid.

Only processes this harness started are ever signalled, by pid, after checking that the pid still
belongs to the same process (its start time in /proc/PID/stat).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_prefix(cpus: str | None) -> list[str]:
    """["taskset", "-c", cpus] or [] when cpus is empty/None (unpinned)."""
    if not cpus:
        return []
    taskset = shutil.which("taskset")
    if not taskset:
        raise RuntimeError("taskset not found (apt-get install -y util-linux)")
    return [taskset, "-c", cpus]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    rest = data[data.rindex(")") + 2:].split()
    return rest  # rest[0] is field 3 (state)


def start_time(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[19]) if f else None       # field 22


def ppid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None        # field 4


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK if f else None   # fields 14, 15


def descendants(root: int) -> list[int]:
    """root and all its descendants (by scanning /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = ppid(int(name))
            if p is not None:
                children.setdefault(p, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return sorted(out)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    """A process this harness started (argv already includes any taskset prefix)."""

    name: str
    argv: list[str]
    log: Path
    env: dict | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = None
    tree: dict[int, int] = field(default_factory=dict)   # pid -> start time, for safe kills

    def start(self) -> "Proc":
        self._logf = open(self.log, "wb")
        self.popen = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                      start_new_session=True)
        self.tree = {self.popen.pid: start_time(self.popen.pid) or 0}
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def wait_port(self, port: int, timeout: float) -> None:
        """Wait until something accepts on 127.0.0.1:port; raise if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessExited(self.name, self.popen.returncode, self.log_tail())
            if port_open(port):
                return
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} did not listen on port {port} within {timeout:.0f} s\n"
                           f"--- log ---\n{self.log_tail()}")

    def settle_tree(self, min_processes: int = 1, timeout: float = 5.0) -> list[int]:
        """Wait until the process tree has at least min_processes and is stable; return its pids."""
        deadline = time.monotonic() + timeout
        last: list[int] = []
        while time.monotonic() < deadline:
            if not self.alive():
                raise ProcessExited(self.name, self.popen.returncode, self.log_tail())
            pids = descendants(self.pid)
            if len(pids) >= min_processes and pids == last:
                break
            last = pids
            time.sleep(0.1)
        for pid in last:
            self.tree.setdefault(pid, start_time(pid) or 0)
        return last

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal our process, wait, then SIGKILL it and any of its recorded descendants left."""
        if self.popen is None:
            return
        if self.alive():
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for pid, st in self.tree.items():     # stragglers (e.g. an orphaned nginx worker)
            if pid != self.popen.pid and start_time(pid) == st:
                deadline = time.monotonic() + 2
                while start_time(pid) == st and time.monotonic() < deadline:
                    time.sleep(0.05)
                if start_time(pid) == st:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self._logf.close()


class ProcessExited(RuntimeError):
    def __init__(self, name: str, code: int | None, log: str):
        super().__init__(f"{name} exited with code {code} before it was ready\n--- log ---\n{log}")
        self.name, self.code, self.log = name, code, log
