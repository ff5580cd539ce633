"""Per-connection deadlines that cost an attribute write to set.

A keep-alive connection moves its deadline several times per request (header timeout, backend
response timeout, idle timeout), and a WebSocket session's idle deadline moves with traffic. An
event loop timer per move would cost a cancel and a heap insert each time. Instead every
connection carries one number, `deadline_at` (loop time; NEVER = none), and one `Sweeper` per
gateway looks at all of them TICK times a second, calling `on_deadline()` on those that are due.
Deadlines are therefore met to within TICK seconds, which is plenty for timeouts counted in
seconds, and the hot path never touches the event loop's timer heap.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

NEVER = float("inf")
TICK = 0.2  # seconds between sweeps: the precision of every deadline


class HasDeadline(Protocol):
    deadline_at: float

    def on_deadline(self) -> None: ...


class Sweeper:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK):
        self.loop = loop
        self.tick = tick
        self.items: set = set()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, item: HasDeadline) -> None:
        self.items.add(item)
        if self.handle is None:
            self.handle = self.loop.call_later(self.tick, self._sweep)

    def discard(self, item: HasDeadline) -> None:
        self.items.discard(item)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _sweep(self) -> None:
        now = self.loop.time()
        due = [item for item in self.items if item.deadline_at <= now]
        for item in due:
            if item.deadline_at <= now:  # an earlier callback may have moved it
                item.deadline_at = NEVER
                item.on_deadline()
        self.handle = self.loop.call_later(self.tick, self._sweep) if self.items else None
