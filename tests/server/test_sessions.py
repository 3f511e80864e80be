"""server.sessions: LRU eviction, idle expiry, and the reasons given for a missing session."""

from __future__ import annotations

import pytest

from server.sessions import SessionNotFound, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def planned(store: SessionStore, sid: str) -> None:
    session, _ = store.get_or_create(sid)
    session.state = f"plan-{sid}"


def test_least_recently_used_is_evicted_past_the_limit():
    store = SessionStore(max_sessions=2, ttl_s=100, clock=Clock())
    planned(store, "a")
    planned(store, "b")
    store.get("a")  # a is now more recent than b
    planned(store, "c")
    assert "b" not in store and "a" in store and "c" in store
    with pytest.raises(SessionNotFound) as info:
        store.get("b")
    assert info.value.reason == "evicted" and "evicted" in info.value.message
    assert store.counts["evicted"] == 1


def test_idle_sessions_expire_and_used_ones_do_not():
    clock = Clock()
    store = SessionStore(max_sessions=10, ttl_s=5, clock=clock)
    planned(store, "idle")
    planned(store, "busy")
    for _ in range(3):
        clock.now += 2
        store.get("busy")
    with pytest.raises(SessionNotFound) as info:
        store.get("idle")
    assert info.value.reason == "expired" and "5 s idle" in info.value.message
    assert store.get("busy").state == "plan-busy"
    assert len(store) == 1


def test_deleted_and_unknown_sessions_say_so():
    store = SessionStore(max_sessions=10, ttl_s=5, clock=Clock())
    planned(store, "x")
    store.delete("x")
    with pytest.raises(SessionNotFound) as info:
        store.get("x")
    assert info.value.reason == "deleted"
    with pytest.raises(SessionNotFound) as info:
        store.delete("never")
    assert info.value.reason is None


def test_session_without_a_plan_is_not_served_and_can_be_discarded():
    store = SessionStore(max_sessions=10, ttl_s=5, clock=Clock())
    session, created = store.get_or_create("new")
    assert created
    with pytest.raises(SessionNotFound, match="no plan yet"):
        store.get("new")
    store.discard(session)
    assert "new" not in store


def test_recreating_an_evicted_id_starts_fresh():
    store = SessionStore(max_sessions=1, ttl_s=5, clock=Clock())
    planned(store, "a")
    planned(store, "b")
    session, created = store.get_or_create("a")
    assert created and session.state is None
