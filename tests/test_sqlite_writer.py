"""The SQLite writer process: what the server sees when it dies, stops, or outlives nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from opencdp.errors import Unavailable
from opencdp.models import EventQuery, ProfileRef
from opencdp.store.sqlite.store import SQLiteStore
from tests.read_fixtures import T0, WS, call
from tests.server_process import ServerProcess, client_token


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.anyio
async def test_a_dead_writer_process_means_503_then_a_new_one(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "opencdp.db"))
    await store.start()
    try:
        before = await store.append_calls(WS, [call(user_id="u1")])
        first = store.writer.process_id
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait_gone(first)
        outcomes: list[str] = []
        after = []
        for _ in range(5):
            try:
                after = await store.append_calls(WS, [call(user_id="u1")])
            except Unavailable:
                outcomes.append("503")
                continue
            outcomes.append("200")
            break
        assert outcomes in (["200"], ["503", "200"]), outcomes
        assert store.writer.process_id not in (None, first)
        page = await store.list_events(WS, EventQuery())
        stored = {e.event_id for e in page.events}
        assert stored == {before[0].event_id, after[0].event_id}
    finally:
        await store.stop()


@pytest.mark.anyio
async def test_stop_commits_the_queue_and_ends_the_writer_process(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "opencdp.db"))
    await store.start()
    pid = store.writer.process_id
    assert pid is not None
    await store.append_calls(WS, [call(user_id=f"u{n}") for n in range(50)])
    await store.stop()
    assert _wait_gone(pid, seconds=1)
    again = SQLiteStore(str(tmp_path / "opencdp.db"))
    await again.start()
    try:
        assert (await again.list_events(WS, EventQuery())).total == 50
    finally:
        await again.stop()


@pytest.mark.slow
def test_the_writer_process_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    """Only the server gets SIGKILL: its writer process sees the socket close and exits."""
    db = f"sqlite:///{tmp_path / 'opencdp.db'}"
    server = ServerProcess(db, tmp_path / "server.log")
    server.start()
    try:
        assert server.proc is not None
        tasks = Path(f"/proc/{server.proc.pid}/task").glob("*/children")
        writers = [int(pid) for task in tasks for pid in task.read_text().split()]
        assert len(writers) == 1
        token = client_token(db, "shop", "write")
        body = {"userId": "u1", "event": "Order Completed", "timestamp": "2026-01-01T00:00:00Z"}
        answer = httpx.post(f"{server.url}/track/shop/web/uk/v1/track", json=body,
                            headers={"auth-token": token})
        assert answer.status_code == 200
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        assert _wait_gone(writers[0]), "the writer process outlived the server"
    finally:
        server.stop()


@pytest.mark.anyio
async def test_a_profile_written_by_another_process_is_read_again(tmp_path: Path) -> None:
    """Two servers on one file: each writer's profile cache must see the other's commits."""
    path = str(tmp_path / "opencdp.db")
    first, second = SQLiteStore(path), SQLiteStore(path)
    await first.start()
    await second.start()
    try:
        await first.append_calls(
            WS, [call("identify", user_id="u1", at=T0, traits={"plan": "free"})]
        )
        await second.append_calls(
            WS, [call("identify", user_id="u1", at=T0 + 1, traits={"plan": "pro"})]
        )
        await first.append_calls(
            WS, [call("identify", user_id="u1", at=T0 + 2, traits={"seats": 3})]
        )
        [profile] = await first.find_profiles(WS, ProfileRef("userId", "u1"))
        assert profile.traits == {"plan": "pro", "seats": 3}
    finally:
        await first.stop()
        await second.stop()


def test_writes_from_another_event_loop_are_refused_not_lost(tmp_path: Path) -> None:
    """The writer's stream lives on the loop that started the store: say so, never hang."""
    store = SQLiteStore(str(tmp_path / "opencdp.db"))
    with asyncio.Runner() as home, asyncio.Runner() as other:
        home.run(store.start())
        try:
            with pytest.raises(RuntimeError, match="event loop that started it"):
                other.run(store.append_calls(WS, [call(user_id="u1")]))
            home.run(store.append_calls(WS, [call(user_id="u1")]))
        finally:
            home.run(store.stop())


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_database_locked_past_the_busy_timeout_answers_503(tmp_path: Path) -> None:
    """Another connection holds the write lock (as an index build does): 503, then writes."""
    path = str(tmp_path / "opencdp.db")
    store = SQLiteStore(path)
    await store.start()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(Unavailable, match="busy"):
            await store.append_calls(WS, [call(user_id="u1")])
        holder.execute("ROLLBACK")
        [accepted] = await store.append_calls(WS, [call(user_id="u1")])
        page = await store.list_events(WS, EventQuery())
        assert [e.event_id for e in page.events] == [accepted.event_id]
    finally:
        holder.close()
        await store.stop()
