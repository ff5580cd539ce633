"""How the gateway ends a WebSocket session: what each leg gets, for each way a session ends. Pure.

RFC 6455 section 7.4.1 reserves 1006 for "the connection was dropped"; a client that sees its TCP
connection vanish reports 1006. So whenever the gateway ends a session it sends each leg still
open a Close frame with a real code, and only then closes TCP. The table (relay.py applies it):

    ending             client leg                         backend leg
    IDLE               1001 "idle timeout"                1001 "idle timeout"
    SHUTDOWN           1001 "gateway shutting down"       1001 "gateway shutting down"
    DRAINED            1001 "server removed from the pool"  (the same)
    LOST client        (gone)                             1001 "client went away"
    LOST backend       1014 "backend connection lost"     (gone)
    VIOLATION client   its code (1002/1007/1009), cut     1001 "client <reason>"
    VIOLATION backend  1014 "backend <reason>"            its code (1002/1007), cut
      ... a frame or message over the limits (1009) from the backend: 1001 to the client
    UNRESPONSIVE side  the live leg: 1001 "peer unresponsive"; the dead leg: TCP cut, no frame

A Close the peers exchange themselves is relayed untouched (code and reason) and is not decided
here. "cut" means the TCP connection is closed right after the Close frame, without waiting for
the reply: the offender's stream can no longer be parsed, so its reply could not be read (section
7.1.7, "fail the WebSocket connection"). 1014 "bad gateway" (section 7.4.1, registered in the IANA
registry) tells a client that the server behind the gateway failed, not the gateway itself.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

CLIENT, BACKEND = 0, 1
SIDES = ("client", "backend")

GOING_AWAY = 1001
TOO_BIG = 1009
BAD_GATEWAY = 1014


class Ending(enum.IntEnum):
    IDLE = 0  # no frame either way for the idle timeout
    SHUTDOWN = 1  # the gateway stops (SIGTERM)
    DRAINED = 2  # the session's server left its pool (reload), after connection_draining
    LOST = 3  # one leg's TCP connection ended without a Close
    VIOLATION = 4  # one leg broke RFC 6455 or a configured limit
    UNRESPONSIVE = 5  # one leg did not answer the gateway's Ping within ping_timeout


class Action(NamedTuple):
    """What the gateway does to one leg: send Close `code`/`reason` (None: no frame), then
    `cut` the TCP connection at once instead of waiting for the close handshake."""

    code: int | None
    reason: str
    cut: bool = False


_ALL = {
    Ending.IDLE: "idle timeout",
    Ending.SHUTDOWN: "gateway shutting down",
    Ending.DRAINED: "server removed from the pool",
}


def plan(ending: Ending, side: int = CLIENT, code: int = 0, reason: str = ""
         ) -> tuple[Action | None, Action | None]:
    """(client action, backend action) for an ending; None for a leg that gets nothing (it is
    gone). `side` is the leg the ending came from (LOST, VIOLATION, UNRESPONSIVE); `code` and
    `reason` are the violation's (the frame engine's close code and text)."""
    if ending in _ALL:
        both = Action(GOING_AWAY, _ALL[ending])
        return both, both
    if ending == Ending.LOST:
        if side == BACKEND:
            return Action(BAD_GATEWAY, "backend connection lost"), None
        return None, Action(GOING_AWAY, "client went away")
    if ending == Ending.VIOLATION:
        offender = Action(code, reason, cut=True)
        if code == TOO_BIG or side == CLIENT:
            peer = Action(GOING_AWAY, f"{SIDES[side]} {reason}")
        else:
            peer = Action(BAD_GATEWAY, f"backend {reason}")
        return (offender, peer) if side == CLIENT else (peer, offender)
    if ending == Ending.UNRESPONSIVE:
        # A peer that answers nothing cannot take part in a close handshake (section 7.1.7).
        dead = Action(None, "", cut=True)
        live = Action(GOING_AWAY, "peer unresponsive")
        return (dead, live) if side == CLIENT else (live, dead)
    raise ValueError(f"unknown ending {ending!r}")
