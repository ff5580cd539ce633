"""`workers = N` (or "auto"): a supervisor process and N gateway worker processes.

Each worker is `fastgw serve CONFIG` started afresh (not forked, so no event loop or TLS state is
shared by accident) with FASTGW_WORKER set; it binds every listener and the admin address itself
with SO_REUSEPORT, and the kernel spreads new connections across the workers. The supervisor:

* validates the configuration before starting anything (exit 2 on a bad file);
* restarts a worker that dies (with a growing back-off if it keeps dying), but stops everything
  if a worker fails during start-up (a port that cannot be bound, say: exit 1);
* forwards SIGTERM/SIGINT (graceful stop: workers close WebSocket sessions with 1001, finish
  requests) and SIGHUP (reload, validated first so that a bad file is reported once);
* gives the workers a shared PROMETHEUS_MULTIPROC_DIR, so that the worker that answers a
  /metrics scrape reports the sum over all workers, and drops a dead worker's gauges.

Health probing runs in every worker (each keeps its own view of server health, as each process of
nginx or HAProxy with several processes does); with N workers a server sees N times the probes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from fastgw import log

STARTUP_GRACE = 2.0  # a worker that exits this soon after starting failed to start


class Supervisor:
    def __init__(self, config_path: str, workers: int, log_level: str = "info",
                 log_format: str = "json"):
        self.config_path = config_path
        self.count = workers
        self.log_level = log_level
        self.log_format = log_format
        self.procs: dict[int, subprocess.Popen] = {}  # slot -> process
        self.started_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.stopping = False
        self.exit_status = 0
        self.metrics_dir = tempfile.mkdtemp(prefix="fastgw-metrics-")

    def _spawn(self, slot: int) -> None:
        env = dict(os.environ, FASTGW_WORKER=str(slot), PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", self.config_path,
                                 "--log-level", self.log_level, "--log-format", self.log_format],
                                env=env)
        self.procs[slot] = proc
        self.started_at[slot] = time.monotonic()
        log.event(log.INFO, "worker_started", worker=slot, pid=proc.pid)

    def run(self) -> int:
        pending: list[int] = []
        signal.signal(signal.SIGTERM, lambda *_: pending.append(signal.SIGTERM))
        signal.signal(signal.SIGINT, lambda *_: pending.append(signal.SIGINT))
        signal.signal(signal.SIGHUP, lambda *_: pending.append(signal.SIGHUP))
        # SIGUSR2's default action would end the supervisor and orphan its workers.
        signal.signal(signal.SIGUSR2, lambda *_: pending.append(signal.SIGUSR2))
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self.procs:
                while pending:
                    self._signal(pending.pop(0))
                self._reap()
                time.sleep(0.1)
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self.exit_status

    def _signal(self, sig: int) -> None:
        if sig == signal.SIGUSR2:
            # A live upgrade moves one process's listeners and sessions (fastgw.upgrade); the
            # workers' SO_REUSEPORT groups are not handed over yet.
            from fastgw.upgrade import write_status
            reason = "a live upgrade needs workers = 1"
            log.event(log.ERROR, "upgrade_failed", reason=reason, serving="these workers, unchanged")
            write_status("failed", reason=reason)
            return
        if sig == signal.SIGHUP:
            from fastgw.errors import ConfigError
            from fastgw.preflight import load_checked
            try:
                load_checked(self.config_path)
            except ConfigError as exc:
                for line in exc.render().splitlines():
                    log.event(log.ERROR, "reload_refused", problem=line)
                return
        else:
            self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def _reap(self) -> None:
        from prometheus_client import multiprocess
        for slot, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[slot]
            multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
            if self.stopping:
                continue
            # `fastgw serve` exits 1 when it cannot start (a port it cannot bind) and 2 for a
            # bad configuration; a worker killed by a signal is restarted whenever it dies.
            if time.monotonic() - self.started_at[slot] < STARTUP_GRACE and code in (1, 2):
                log.event(log.ERROR, "worker_failed_to_start", worker=slot, status=code)
                self.exit_status = 1
                self.stopping = True
                for other in self.procs.values():
                    other.send_signal(signal.SIGTERM)
                continue
            self.failures[slot] = self.failures.get(slot, 0) + 1
            delay = min(10.0, 0.1 * 2 ** min(self.failures[slot], 7))
            log.event(log.WARNING, "worker_died", worker=slot, status=code, restart_in=delay)
            time.sleep(delay)
            self._spawn(slot)
