"""Per-connection deadlines that cost almost nothing when they move.

A keep-alive connection sets a new deadline for every request (header timeout, then idle
timeout, ...), and a WebSocket session's idle deadline moves with every read. Re-arming an event
loop timer each time would cost a cancel and a heap insert per request. `Deadline` keeps one timer
and re-arms it lazily: moving the deadline *later* is a plain attribute write; when the timer
fires early it re-arms itself for the current deadline. Only moving it *earlier* touches the loop.
"""

from __future__ import annotations

import asyncio
from typing import Callable

NEVER = float("inf")


class Deadline:
    __slots__ = ("_loop", "_callback", "_handle", "_armed_for", "when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for = NEVER
        self.when = NEVER  # loop.time() at which callback runs; NEVER = not set

    def set(self, when: float) -> None:
        """Run the callback at loop time `when` (replacing any earlier setting)."""
        self.when = when
        if when < self._armed_for:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_for = when
            self._handle = self._loop.call_at(when, self._fire)

    def set_in(self, seconds: float) -> None:
        self.set(self._loop.time() + seconds)

    def clear(self) -> None:
        """No deadline; the pending timer, if any, will wake once and find nothing to do."""
        self.when = NEVER

    def cancel(self) -> None:
        """No deadline and no timer: for connections that are gone."""
        self.when = NEVER
        self._armed_for = NEVER
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = NEVER
        when = self.when
        if when == NEVER:
            return
        if self._loop.time() >= when:
            self.when = NEVER
            self._callback()
        else:
            self._armed_for = when
            self._handle = self._loop.call_at(when, self._fire)
