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
  /metrics scrape reports the sum over all workers, and drops a dead worker's gauges;
* on SIGUSR2, upgrades the workers live, one after the other (`upgrade`).

Each worker inherits one end of a channel from the supervisor (fastgw.upgrade.CONTROL_FD). A live
upgrade of worker i: the supervisor starts the new worker i (`fastgw serve` afresh, so a newly
installed fastgw) with one end of a handover channel (fastgw.handover), and sends the other end
to the old worker i over its channel; the old worker then does what a single process does on
SIGUSR2 (fastgw.upgrade.Predecessor: its listeners, its SO_REUSEPORT group member included, and
its plain WebSocket sessions go to the new worker, the rest finishes in place) and writes its
status file. The supervisor starts every worker itself, so it stays the parent of all of them (it
restarts them, their PR_SET_PDEATHSIG points at it); it is not started afresh itself. The old
workers are "retiring": reaped when they exit, never restarted.

Health probing runs in every worker (each keeps its own view of server health, as each process of
nginx or HAProxy with several processes does); with N workers a server sees N times the probes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from fastgw import handover, log, upgrade

STARTUP_GRACE = 2.0  # a worker that exits this soon after starting failed to start


class Supervisor:
    def __init__(self, config_path: str, workers: int, log_level: str = "info",
                 log_format: str = "json"):
        self.config_path = config_path
        self.count = workers
        self.log_level = log_level
        self.log_format = log_format
        self.procs: dict[int, subprocess.Popen] = {}  # slot -> process
        self.controls: dict[int, socket.socket] = {}  # slot -> our end of its channel
        self.retiring: list[subprocess.Popen] = []  # upgraded away, finishing in place
        self.started_at: dict[int, float] = {}
        self.failures: dict[int, int] = {}
        self.stopping = False
        self.exit_status = 0
        self.metrics_dir = tempfile.mkdtemp(prefix="fastgw-metrics-")

    def _start(self, slot: int, handover_end: socket.socket | None = None
               ) -> tuple[subprocess.Popen, socket.socket]:
        """A worker process, and our end of its channel. `handover_end`: it is the new worker of
        a live upgrade, and that is its end of the channel to the old one."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, FASTGW_WORKER=str(slot), PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        env[upgrade.CONTROL_FD] = str(theirs.fileno())
        fds = [theirs.fileno()]
        if handover_end is not None:
            env[upgrade.ENV_FD] = str(handover_end.fileno())
            fds.append(handover_end.fileno())
        # A SIGHUP forwarded before the worker has its handler would end it: it starts with
        # SIGHUP blocked (the mask survives exec), pending until gateway.serve unblocks it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            proc = subprocess.Popen([sys.executable, "-m", "fastgw", "serve", self.config_path,
                                     "--log-level", self.log_level, "--log-format",
                                     self.log_format], env=env, pass_fds=fds)
        except OSError:
            ours.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            theirs.close()
        return proc, ours

    def _spawn(self, slot: int) -> None:
        proc, control = self._start(slot)
        self._assign(slot, proc, control)

    def _assign(self, slot: int, proc: subprocess.Popen, control: socket.socket,
                **fields: int) -> None:
        old = self.controls.pop(slot, None)
        if old is not None:
            old.close()
        self.procs[slot] = proc
        self.controls[slot] = control
        self.started_at[slot] = time.monotonic()
        log.event(log.INFO, "worker_started", worker=slot, pid=proc.pid, **fields)

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
            while self.procs or self.retiring:
                while pending:
                    self._signal(pending.pop(0))
                self._reap()
                time.sleep(0.1)
        finally:
            for control in self.controls.values():
                control.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return self.exit_status

    def _signal(self, sig: int) -> None:
        if sig == signal.SIGUSR2:
            if self.stopping:
                upgrade.refuse("the supervisor is stopping", "these workers, until they stop")
            else:
                asyncio.run(self.upgrade())
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
        for proc in [*self.procs.values(), *self.retiring]:
            if proc.poll() is None:
                proc.send_signal(sig)

    # -- live upgrade (SIGUSR2) ----------------------------------------------------------------

    async def upgrade(self) -> None:
        """Upgrade the workers one after the other; the first that fails stops it there (the
        cause, a bad configuration or a new version that does not start, is the same for the
        rest) and leaves that worker and the ones after it as they were."""
        log.event(log.INFO, "upgrade_started", workers=len(self.procs))
        old = {slot: proc.pid for slot, proc in self.procs.items()}
        new: dict[int, int] = {}
        for slot in sorted(self.procs):
            reason = await self._upgrade_worker(slot)
            if reason:
                if new:
                    reason += f"; workers {sorted(new)} were upgraded, the others were not"
                upgrade.refuse(f"worker {slot}: {reason}",
                               "the workers not upgraded, unchanged" if new else
                               "these workers, unchanged")
                return
            new[slot] = self.procs[slot].pid
        log.event(log.INFO, "upgrade_done", workers=new, replaced=old)
        upgrade.write_status("done", os.getpid(), workers=list(new.values()),
                             replaced=list(old.values()))

    async def _upgrade_worker(self, slot: int) -> str:
        """Replace worker `slot` by a new one; "" when the new one took over, else why not."""
        old = self.procs[slot]
        ours, theirs = handover.channel_pair()
        try:
            proc, control = self._start(slot, theirs)
        except OSError as exc:
            ours.close()
            return f"cannot start the new process: {exc}"
        finally:
            theirs.close()
        try:
            os.unlink(upgrade.status_path(old.pid))  # an earlier attempt's outcome
        except FileNotFoundError:
            pass
        try:
            await handover.send(self.controls[slot], {"type": "upgrade"}, [ours.fileno()])
        except handover.HandoverError as exc:
            status: dict | None = {"outcome": "failed", "reason": f"worker {old.pid}: {exc}"}
        else:
            # The old worker gives up on a new one not ready within START_TIMEOUT and says so.
            deadline = time.monotonic() + upgrade.START_TIMEOUT + 10
            while (status := upgrade.read_status(old.pid)) is None and old.poll() is None \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            ours.close()
        if status is not None and status["outcome"] == "done":
            os.unlink(upgrade.status_path(old.pid))
            self.retiring.append(old)
            self.procs.pop(slot)
            self._assign(slot, proc, control, took_over_from=old.pid)
            return ""
        control.close()
        what = status["reason"] if status is not None else f"no outcome from worker {old.pid}"
        return upgrade.failure_reason(proc, status is None, what)

    def _reap(self) -> None:
        from prometheus_client import multiprocess
        for proc in list(self.retiring):
            if proc.poll() is not None:
                self.retiring.remove(proc)
                multiprocess.mark_process_dead(proc.pid, self.metrics_dir)
                log.event(log.INFO, "worker_retired", pid=proc.pid, status=proc.returncode)
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
