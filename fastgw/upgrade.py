"""Live upgrade: SIGUSR2 hands this process's listeners and plain WebSocket sessions to a new
process running the same command line (so a newly installed fastgw takes over), without
disconnecting anyone.

The old process (`Predecessor`):
1. starts the new one: `sys.executable` with the original arguments (sys.orig_argv), with one end
   of a socket pair inherited and its number in FASTGW_UPGRADE_FD (fastgw.handover);
2. sends it every listening socket (and the admin one); the new process binds none of them, loads
   its configuration, starts its probes and accepts on them, then says "ready". Until then the
   old process keeps accepting too: both accept from the same kernel queue, so a client is never
   refused. A new process that fails (exit 2 for a bad configuration, a crash, no "ready" within
   START_TIMEOUT) is stopped if need be and logged; the old one goes on as if nothing happened;
3. stops accepting, moves every plain WebSocket session (handover.Departure), then finishes the
   rest in place: TLS sessions and sessions that could not move within MOVE_BOUND stay until they
   end or `[gateway] upgrade_drain_timeout`, then get 1001; HTTP connections finish their
   request in flight and close. It exits when it holds nothing, or at that deadline.

The outcome is written to a status file, `status_path(pid)` of the old process, which `fastgw
upgrade --pid PID` waits for: {"outcome": "done"|"failed", "successor": pid, "reason": ...}.
Under systemd the old process also tells the service manager the new main PID (sd_notify
MAINPID=, which needs NotifyAccess=main in the unit): see docs/deploy.md.

A worker (`workers` > 1) does not start its successor: its supervisor does, and sends it its end
of the channel (`follow`); the rest is the same. See fastgw.supervisor.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from fastgw import handover, log
from fastgw.handover import Departure, HandoverError

START_TIMEOUT = 60.0  # seconds for the new process to load, start its probes and say "ready"
MOVE_BOUND = 5.0  # seconds for a session's write buffers to drain before it moves (at most
# upgrade_drain_timeout: what stays is closed by then anyway)
ENV_FD = "FASTGW_UPGRADE_FD"
CONTROL_FD = "FASTGW_CONTROL_FD"  # a worker's end of its supervisor's channel


def status_dir() -> str:
    """Where the status files are: systemd's RuntimeDirectory= if the unit has one (the unit's
    /tmp is private), else the temporary directory."""
    return os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir()


def status_path(pid: int, directory: str | None = None) -> str:
    return os.path.join(directory or status_dir(), f"fastgw-upgrade-{pid}.json")


def write_status(outcome: str, successor: int = 0, reason: str = "", **extra: Any) -> None:
    path = status_path(os.getpid())
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"outcome": outcome, "successor": successor, "reason": reason, **extra}, f)
    os.replace(tmp, path)  # the reader never sees half a file


def refuse(reason: str, serving: str) -> None:
    """An upgrade that does not start: said in the log and in the status file."""
    log.event(log.ERROR, "upgrade_failed", reason=reason, serving=serving)
    write_status("failed", reason=reason)


def read_status(pid: int, directory: str | None = None) -> dict | None:
    try:
        with open(status_path(pid, directory)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def notify_main_pid(pid: int) -> None:
    """Tell systemd the service's main process is now `pid` (sd_notify(3) MAINPID=)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(f"MAINPID={pid}".encode(), address)
        except OSError as exc:
            log.event(log.WARNING, "sd_notify_failed", error=str(exc))


def successor_command() -> list[str]:
    """This process's command line, run afresh: the interpreter, then what followed it
    (`-m fastgw serve ...` or the `fastgw` script's path and its arguments)."""
    return [sys.executable, *sys.orig_argv[1:]]


def failure_reason(proc: subprocess.Popen, timed_out: bool, what: str) -> str:
    """Why the new process `proc` did not take over, from its exit status (it is stopped if it
    still runs: it never said ready, so it is not serving). `what`: the other end's account."""
    try:
        status = proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "the new process did not become ready in time" if timed_out \
            else f"{what}; it was stopped"
    if status == 2:
        return "the new process refused the configuration (exit status 2)"
    return f"the new process exited with status {status}"


# -- the old process -----------------------------------------------------------------------


class Predecessor:
    """Runs one upgrade attempt of `gateway`; `done` is set when the new process took over."""

    def __init__(self, gateway: Any):
        self.gateway = gateway
        self.proc: subprocess.Popen | None = None
        self.channel: Any = None
        self.done = False
        self.running = False

    async def run(self, channel: socket.socket | None = None) -> bool:
        """`channel`: a worker's; its supervisor started the new process (fastgw.supervisor)
        and holds the other end. Without one, this process starts it."""
        if self.running or self.done:
            log.event(log.WARNING, "upgrade_ignored", reason="an upgrade is already under way")
            if channel is not None:
                channel.close()
            return False
        self.running = True
        try:
            return await self._run(channel)
        finally:
            self.running = False

    async def _run(self, given: socket.socket | None) -> bool:
        if given is not None:
            log.event(log.INFO, "upgrade_started", by="supervisor")
            ours = given
        else:
            log.event(log.INFO, "upgrade_started", command=successor_command())
            ours, theirs = handover.channel_pair()
            try:
                self.proc = subprocess.Popen(
                    successor_command(), pass_fds=(theirs.fileno(),),
                    env=dict(os.environ, **{ENV_FD: str(theirs.fileno())}))
            except OSError as exc:
                ours.close()
                return self._failed(f"cannot start the new process: {exc}")
            finally:
                theirs.close()
        self.channel = ours
        try:
            successor = await asyncio.wait_for(self._hand_listeners(), START_TIMEOUT)
        except (HandoverError, asyncio.TimeoutError) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            if self.proc is not None:
                return self._failed(failure_reason(self.proc, timed_out, str(exc)))
            # The supervisor started it and says why it failed (its exit status).
            return self._failed("the new process did not become ready in time" if timed_out
                                else str(exc))
        gateway = self.gateway
        log.event(log.INFO, "upgrade_listeners_handed_over", successor=successor,
                  listeners=[f"{b}:{p}" for b, p in gateway.acceptors])
        for acceptor in gateway.acceptors.values():
            acceptor.close()
        if gateway.admin_server is not None:
            gateway.admin_server.close()
        moved, kept = await self._move_sessions()
        try:
            await handover.send(ours, {"type": "done"})
        except HandoverError:
            pass  # it has everything it needs
        ours.close()
        self.done = True
        log.event(log.INFO, "upgrade_done", successor=successor, sessions_moved=moved,
                  sessions_kept=kept, drain_timeout=gateway.config.gateway.upgrade_drain_timeout)
        write_status("done", successor)
        if given is None:  # a worker's successor is not the service's main process
            notify_main_pid(successor)
        return True

    async def _hand_listeners(self) -> int:
        gateway = self.gateway
        keys = list(gateway.acceptors)
        fds = [gateway.acceptors[k].sock.fileno() for k in keys]
        admin = gateway.admin_server is not None and bool(gateway.admin_server.sockets)
        if admin:
            fds.append(gateway.admin_server.sockets[0].fileno())
        await handover.send(self.channel, {"type": "listeners", "keys": keys, "admin": admin},
                            fds)
        message, extra = await handover.receive(self.channel)
        handover._close_all(extra)
        if message.get("type") != "ready":
            raise HandoverError(f"unexpected message {message.get('type')!r}")
        return int(message["pid"])

    async def _move_sessions(self) -> tuple[int, int]:
        gateway = self.gateway
        sessions = list(gateway.sessions)
        departures = [Departure(s) for s in sessions if handover.movable(s)]
        for departure in departures:
            departure.pause()
        deadline = time.monotonic() + min(MOVE_BOUND, gateway.config.gateway.upgrade_drain_timeout)
        waiting = departures
        ready: list[Departure] = []
        while waiting:
            ready += [d for d in waiting if d.drained()]
            waiting = [d for d in waiting if not d.drained()]
            if not waiting or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        for departure in waiting:
            departure.resume()  # a peer that does not read: it stays, 1001 at the deadline
        moved = sent = answered = 0
        try:
            # One session at a time, its answer before the next: sending them all first would
            # fill both directions of the channel (the new process blocks on an answer, then
            # stops reading) once the sessions outnumber what its socket buffers hold.
            for departure in ready:
                if departure.session.ended:
                    continue
                await handover.send(self.channel, departure.state(), departure.fds())
                sent += 1
                answer, extra = await handover.receive(self.channel)
                answered += 1
                handover._close_all(extra)
                if answer.get("ok"):
                    departure.retire(gateway.dispatcher, gateway.recorder)
                    moved += 1
                else:
                    log.event(log.WARNING, "upgrade_session_kept", reason=answer.get("reason"))
                    departure.resume()
        except HandoverError as exc:
            # Answers that never came: the new process may have resumed those sessions or not;
            # the old one cannot know, so it keeps them paused until the drain deadline cuts
            # them rather than risk two processes writing into one socket.
            log.event(log.ERROR, "upgrade_sessions_lost", error=str(exc),
                      unanswered=sent - answered)
        return moved, len(sessions) - moved

    def _failed(self, reason: str) -> bool:
        if self.channel is not None:
            self.channel.close()
        log.event(log.ERROR, "upgrade_failed", reason=reason, serving="this process, unchanged")
        write_status("failed", reason=reason)
        return False


# -- a worker: its supervisor starts the upgrade ---------------------------------------------


def supervisor_channel() -> socket.socket | None:
    """A worker's channel from its supervisor (fastgw.supervisor), if it was started by one."""
    fd = os.environ.pop(CONTROL_FD, None)
    if not fd:
        return None
    channel = socket.socket(fileno=int(fd))
    channel.setblocking(False)
    channel.set_inheritable(False)
    return channel


async def follow(channel: socket.socket, start: Callable[[socket.socket], object]) -> None:
    """A worker's end of its supervisor's channel: each {"type": "upgrade"} comes with our end
    of a channel to the new worker the supervisor started in our place, for `start`."""
    try:
        while True:
            message, fds = await handover.receive(channel)
            if message.get("type") == "upgrade" and len(fds) == 1:
                ours = socket.socket(fileno=fds[0])
                ours.setblocking(False)
                start(ours)
            else:
                handover._close_all(fds)
                log.event(log.WARNING, "supervisor_message_ignored", type=message.get("type"))
    except HandoverError:
        pass  # this worker was replaced, or the supervisor is gone (cli._exit_with_parent)
    finally:
        channel.close()


# -- the new process -------------------------------------------------------------------------


class Successor:
    """The new process's end: the listeners it is given, and the sessions after it is ready."""

    def __init__(self, fd: int):
        self.channel = socket.socket(fileno=fd)
        self.channel.setblocking(False)
        self.task: asyncio.Task | None = None

    @classmethod
    def from_environment(cls) -> Successor | None:
        fd = os.environ.pop(ENV_FD, None)
        return cls(int(fd)) if fd else None

    async def listeners(self) -> dict:
        """The `presockets` of gateway.Gateway: (bind, port) -> socket, and "admin"."""
        message, fds = await handover.receive(self.channel)
        if message.get("type") != "listeners":
            handover._close_all(fds)
            raise HandoverError(f"unexpected message {message.get('type')!r}")
        socks = [socket.socket(fileno=fd) for fd in fds]
        result: dict = {(bind, port): sock for (bind, port), sock in zip(message["keys"], socks)}
        if message.get("admin") and len(socks) > len(message["keys"]):
            result["admin"] = socks[-1]
        return result

    async def ready(self, gateway: Any) -> None:
        await handover.send(self.channel, {"type": "ready", "pid": os.getpid()})
        self.task = asyncio.get_running_loop().create_task(self._sessions(gateway))

    async def _sessions(self, gateway: Any) -> None:
        resumed = refused = 0
        try:
            while True:
                message, fds = await handover.receive(self.channel)
                if message.get("type") == "done":
                    break
                if message.get("type") != "session" or len(fds) != 2:
                    handover._close_all(fds)
                    raise HandoverError(f"unexpected message {message.get('type')!r}")
                try:
                    await handover.resume(message, fds, gateway)
                except HandoverError as exc:
                    refused += 1
                    gateway.stats.handovers[("refused",)] += 1
                    await handover.send(self.channel, {"type": "resumed", "ok": False,
                                                       "reason": str(exc)})
                    continue
                resumed += 1
                gateway.stats.handovers[("resumed",)] += 1
                await handover.send(self.channel, {"type": "resumed", "ok": True})
        except HandoverError as exc:
            log.event(log.WARNING, "upgrade_channel_closed", error=str(exc))
        finally:
            self.channel.close()
        log.event(log.INFO, "upgrade_sessions_received", resumed=resumed, refused=refused)
