"""In-memory MPC sessions, bounded in count (LRU eviction) and idle time (TTL).

A session holds one client's planning state (its goal latent and last plan)
and an ``asyncio.Lock`` that serialises the requests on it: a replan reads
the last plan and records the next, and two interleaved replans would each
warm-start from a stale plan. Sessions never share state, so requests on
different sessions proceed concurrently.

The store runs on the event loop thread only (no thread lock needed). It
remembers why recently removed ids went away, so a client whose session was
evicted or expired is told which.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from server.tokens import MPCState
RemovalReason = Literal["evicted", "expired", "deleted"]
# Enough to explain recent removals; older ids get the generic message.
_TOMBSTONES = 4096


class SessionNotFound(Exception):
    """No live session has this id; ``reason`` says why if it is known."""

    code = "session.not_found"

    def __init__(self, session_id: str, reason: RemovalReason | None, detail: str) -> None:
        self.session_id = session_id
        self.reason = reason
        self.message = detail
        super().__init__(detail)


@dataclass
class Session:
    """One client's planning state: the episode's warm start (the same `MPCState` a token carries)
    and its goal latent, kept here for the session's life. None until its first plan lands."""

    id: str
    last_used: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: MPCState | None = None
    goal: Any = None  # models.Latent (1, ...) of the goal


class SessionStore:
    """Sessions by id, least recently used first.

    Args:
        max_sessions: inserting past this evicts the least recently used.
        ttl_s: a session idle for longer expires.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self, max_sessions: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._removed: OrderedDict[str, RemovalReason] = OrderedDict()
        self.counts: dict[str, int] = {"created": 0, "evicted": 0, "expired": 0, "deleted": 0}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> Session:
        """The live session with a plan; marks it used. Raises ``SessionNotFound``."""
        self.sweep()
        session = self._sessions.get(session_id)
        if session is None:
            raise self._not_found(session_id)
        if session.state is None:
            raise SessionNotFound(
                session_id,
                None,
                f"session '{session_id}' has no plan yet: its first POST /plan has not "
                "finished; wait for it, then replan.",
            )
        self._touch(session)
        return session

    def get_or_create(self, session_id: str) -> tuple[Session, bool]:
        """The session with this id, created (possibly evicting another) if absent.

        Returns the session and whether it was created.
        """
        self.sweep()
        session = self._sessions.get(session_id)
        if session is not None:
            self._touch(session)
            return session, False
        while len(self._sessions) >= self.max_sessions:
            oldest, _ = self._sessions.popitem(last=False)
            self._forget(oldest, "evicted")
        session = Session(id=session_id, last_used=self._clock())
        self._sessions[session_id] = session
        self._removed.pop(session_id, None)
        self.counts["created"] += 1
        return session, True

    def discard(self, session: Session) -> None:
        """Drop a session that never got a plan (its first plan failed)."""
        if self._sessions.get(session.id) is session and session.state is None:
            del self._sessions[session.id]

    def delete(self, session_id: str) -> None:
        """Remove a session on the client's request. Raises ``SessionNotFound``."""
        self.sweep()
        if session_id not in self._sessions:
            raise self._not_found(session_id)
        del self._sessions[session_id]
        self._forget(session_id, "deleted")

    def sweep(self) -> int:
        """Expire idle sessions; returns how many went."""
        cutoff = self._clock() - self.ttl_s
        expired = 0
        # LRU order: the first session used since the cutoff ends the scan.
        while self._sessions:
            oldest_id, oldest = next(iter(self._sessions.items()))
            if oldest.last_used > cutoff:
                break
            del self._sessions[oldest_id]
            self._forget(oldest_id, "expired")
            expired += 1
        return expired

    def _touch(self, session: Session) -> None:
        session.last_used = self._clock()
        self._sessions.move_to_end(session.id)

    def _forget(self, session_id: str, reason: RemovalReason) -> None:
        self.counts[reason] += 1
        self._removed[session_id] = reason
        self._removed.move_to_end(session_id)
        while len(self._removed) > _TOMBSTONES:
            self._removed.popitem(last=False)

    def _not_found(self, session_id: str) -> SessionNotFound:
        reason = self._removed.get(session_id)
        why = {
            "evicted": f"it was evicted to stay within {self.max_sessions} sessions "
            "(least recently used first)",
            "expired": f"it expired after {self.ttl_s:g} s idle",
            "deleted": "it was deleted",
            None: "no such session exists (never created, or removed long ago)",
        }[reason]
        return SessionNotFound(
            session_id,
            reason,
            f"session '{session_id}' not found: {why}; start a new one with POST /plan.",
        )
