"""The one write protocol: commands, the shared group commit, observers told of commits.

The group commit's own rules are checked with a back-end that commits in memory (it
decides which groups fail); everything else runs on both real stores.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from opencdp.auth import new_token
from opencdp.errors import Unavailable
from opencdp.models import Accepted, EventQuery, Workspace
from opencdp.store.base import Commit, Store
from opencdp.store.commands import (
    AddToken,
    AppendCalls,
    Command,
    IndexProperty,
    RevokeToken,
)
from opencdp.store.group_commit import AnswerEarly, Committed, GroupCommit
from opencdp.store.postgres import apply as postgres_apply
from opencdp.store.sqlite import apply as sqlite_apply
from opencdp.store.sqlite.store import SQLiteStore
from tests.backends import make_store
from tests.read_fixtures import WS, call

pytestmark = pytest.mark.anyio
OTHER = Workspace("c1", "a1", "b2")


class Recorder:
    def __init__(self) -> None:
        self.commits: list[Commit] = []

    def committed(self, commit: Commit) -> None:
        self.commits.append(commit)


class Raising:
    def committed(self, commit: Commit) -> None:
        raise RuntimeError("a broken observer")


@pytest.fixture
async def recorded(anyio_backend: str, db_url: str) -> AsyncIterator[tuple[Store, Recorder]]:
    """A started store whose observers are a raising one, then a recorder."""
    recorder = Recorder()
    store = make_store(db_url, observers=[Raising(), recorder])
    await store.start()
    try:
        yield store, recorder
    finally:
        await store.stop()


def test_every_command_has_an_apply_function_on_each_back_end() -> None:
    kinds = set(Command.kinds)
    assert sqlite_apply.applies.kinds() == kinds
    assert postgres_apply.applies.kinds() | postgres_apply.own_connection.kinds() == kinds


async def test_observers_are_told_of_each_commit_and_one_raising_fails_nothing(
    db_url: str, recorded: tuple[Store, Recorder]
) -> None:
    store, recorder = recorded
    calls = [call(user_id="u1"), call(user_id="u2"), call("identify", user_id="u1")]
    repeat = call(user_id="u3")
    repeat.message_id = "m1"
    first = await store.append_calls(WS, [*calls, repeat])
    again = await store.append_calls(WS, [repeat])
    assert again == [Accepted(first[3].event_id, duplicate=True)]
    _, record = new_token("c1", None, None, ("write",), now=0)
    await store.add_token(record)
    assert await store.revoke_token(record.token_id, 5) is True

    appended, repeated, added, revoked = recorder.commits
    assert appended.workspaces == {WS}
    assert (appended.calls, appended.duplicates, appended.events) == (4, 0, 4)
    assert (repeated.calls, repeated.duplicates, repeated.events) == (1, 1, 0)
    assert added.commands == (AddToken(record),) and added.calls == 0
    assert revoked.commands == (RevokeToken(record.token_id, 5),)
    assert [list(r) for r in appended.positions or ()] == [[1, 2, 3, 4]]
    assert repeated.positions == ()


async def test_a_refused_link_is_in_the_commit(recorded: tuple[Store, Recorder]) -> None:
    store, recorder = recorded
    await store.append_calls(WS, [call("identify", user_id="u1", anonymous_id="a1")])
    await store.append_calls(WS, [call("identify", user_id="u2", anonymous_id="a1")])
    assert [c.refusals for c in recorder.commits] == [(), ("identified_conflict",)]


async def test_a_refused_link_is_logged_with_its_reason_and_workspace(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, db_url: str
) -> None:
    """PostgreSQL applies calls in the server (the log record is here); SQLite in its
    writer process, whose JSON log lines go to the stderr it shares with the server
    (captured from before the store starts its writer)."""
    store = make_store(db_url)
    await store.start()
    try:
        await store.append_calls(WS, [call("identify", user_id="u1", anonymous_id="a1")])
        await store.append_calls(WS, [call("identify", user_id="u2", anonymous_id="a1")])
    finally:
        await store.stop()  # the writer process has written its lines
    logged = [
        {"reason": getattr(r, "reason", None), "workspace_id": getattr(r, "workspace_id", None)}
        for r in caplog.records
        if r.getMessage() == "identity link refused"
    ]
    for line in capfd.readouterr().err.splitlines():
        if "identity link refused" in line:
            fields = json.loads(line)
            logged.append({"reason": fields["reason"], "workspace_id": fields["workspace_id"]})
    assert len(logged) == 1, logged
    assert logged[0]["reason"] == "identified_conflict"
    assert isinstance(logged[0]["workspace_id"], int)


async def test_a_token_added_while_calls_are_written_commits_with_them(
    store: Store,
) -> None:
    calls = [store.append_calls(WS, [call(user_id=f"u{n}")]) for n in range(50)]
    _, record = new_token("c1", None, None, ("write",), now=0)
    answers, _ = await asyncio.gather(asyncio.gather(*calls), store.add_token(record))
    assert len({a[0].event_id for a in answers}) == 50
    assert await store.find_token(record.token_id) == record
    assert (await store.list_events(WS, EventQuery())).total == 50


async def test_a_sqlite_token_write_waiting_for_the_lock_leaves_the_loop_free(
    tmp_path: Path,
) -> None:
    """Another connection holds the write lock: the token's write waits in the writer
    process, while the event loop goes on answering (it would freeze for the wait)."""
    path = str(tmp_path / "opencdp.db")
    store = SQLiteStore(path)
    await store.start()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        _, record = new_token("c1", None, None, ("write",), now=0)
        adding = asyncio.create_task(store.add_token(record))
        started = time.monotonic()
        ticks = 0
        while time.monotonic() - started < 0.5:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 20, "the event loop was blocked"
        assert not adding.done()
        holder.execute("ROLLBACK")
        await adding
        assert await store.find_token(record.token_id) == record
    finally:
        holder.close()
        await store.stop()


async def test_an_unstarted_sqlite_store_commits_a_command_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "opencdp.db")
    recorder = Recorder()
    store = SQLiteStore(path, observers=[recorder])
    store.migrate()
    assert await store.execute(IndexProperty("cart.id")) is True
    assert await store.execute(IndexProperty("cart.id")) is False
    assert [c.commands for c in recorder.commits] == [(IndexProperty("cart.id"),)] * 2


# -- the group commit's rules, with a back-end committing in memory ----------------------


class Memory:
    """Commits in memory: each call gets its position; a group with a call of a
    ``failing`` user fails whole, and ``busy`` makes every group fail as busy."""

    def __init__(self) -> None:
        self.groups: list[list[Command[Any]]] = []
        self.failing: set[str] = set()
        self.busy = False
        self.gate: asyncio.Event | None = None

    @property
    def ready(self) -> bool:
        return True

    def commit(
        self, commands: list[Command[Any]], answer_early: AnswerEarly
    ) -> asyncio.Future[Committed]:
        self.groups.append(commands)
        return asyncio.ensure_future(self._commit(commands))

    async def _commit(self, commands: list[Command[Any]]) -> Committed:
        if self.gate is not None:
            await self.gate.wait()
        if self.busy:
            raise Unavailable("busy")
        results: list[Any] = []
        for command in commands:
            if isinstance(command, AppendCalls):
                if any(c.user_id in self.failing for c in command.calls):
                    raise ValueError("refused")
                results.append([Accepted(str(c.user_id)) for c in command.calls])
            else:
                results.append(True)
        return Committed(results)


def appends(*users: str, workspace: Workspace = WS) -> AppendCalls[Any]:
    return AppendCalls(workspace, [call(user_id=user) for user in users])


def kinds(groups: list[list[Command[Any]]]) -> list[list[str]]:
    """Each group as its commands: the users of an append, or the command's kind."""
    return [
        [",".join(str(c.user_id) for c in command.calls)
         if isinstance(command, AppendCalls) else type(command).__name__
         for command in group]
        for group in groups
    ]  # fmt: skip


async def committing(memory: Memory, groups: int) -> None:
    """Wait until the back-end has been handed ``groups`` groups."""
    while len(memory.groups) < groups:
        await asyncio.sleep(0)


async def held(memory: Memory, group_commit: GroupCommit, commands: list[Command[Any]]
               ) -> list[Any]:
    """Submit the first command, then the others while the back-end holds it, so they
    queue; then let it go."""
    memory.gate = asyncio.Event()
    tasks = [asyncio.create_task(group_commit.submit(commands[0]))]
    await committing(memory, 1)
    tasks += [asyncio.create_task(group_commit.submit(c)) for c in commands[1:]]
    await asyncio.sleep(0)
    memory.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_consecutive_appends_group_up_to_the_bound_and_others_go_alone() -> None:
    memory, recorder = Memory(), Recorder()
    group_commit = GroupCommit(memory, batch_max=3, queue_max=100, observers=[recorder])
    group_commit.start()
    commands: list[Command[Any]] = [
        appends("first"), appends("a"), appends("b", "c"), appends("d"), appends("e"),
        IndexProperty("x"), appends("f", workspace=OTHER), appends("g"),
    ]
    results = await held(memory, group_commit, commands)
    assert results[1] == [Accepted("a")] and results[5] is True
    assert kinds(memory.groups) == [
        ["first"], ["a", "b,c"], ["d", "e"], ["IndexProperty"], ["f", "g"]
    ]
    assert [c.calls for c in recorder.commits] == [1, 3, 2, 0, 2]
    assert recorder.commits[4].workspaces == {WS, OTHER}


async def test_a_failed_group_is_committed_again_one_by_one() -> None:
    memory, recorder = Memory(), Recorder()
    memory.failing = {"bad"}
    group_commit = GroupCommit(memory, batch_max=100, queue_max=100, observers=[recorder])
    group_commit.start()
    results = await held(memory, group_commit, [
        appends("first"), appends("a"), appends("bad"), appends("b")
    ])  # fmt: skip
    assert results[1] == [Accepted("a")] and results[3] == [Accepted("b")]
    assert isinstance(results[2], ValueError)
    assert kinds(memory.groups) == [["first"], ["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert [c.calls for c in recorder.commits] == [1, 1, 1]


async def test_unavailable_answers_the_whole_group_without_retries() -> None:
    memory = Memory()
    group_commit = GroupCommit(memory, batch_max=100, queue_max=100)
    group_commit.start()
    memory.busy = True
    results = await held(memory, group_commit, [appends("first"), appends("a"), appends("b")])
    assert all(isinstance(r, Unavailable) for r in results)
    assert kinds(memory.groups) == [["first"], ["a", "b"]]


async def test_a_full_queue_refuses_with_503_and_stop_drains_it() -> None:
    memory = Memory()
    memory.gate = asyncio.Event()
    group_commit = GroupCommit(memory, batch_max=100, queue_max=3)
    group_commit.start()
    waiting = [asyncio.create_task(group_commit.submit(appends("a", "b")))]
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="queue is full"):
        await group_commit.submit(appends("c", "d"))
    waiting.append(asyncio.create_task(group_commit.submit(appends("e"))))
    gave_up = asyncio.create_task(group_commit.submit(appends("f")))  # over the bound: 503
    await asyncio.sleep(0)
    memory.gate.set()
    await group_commit.drain()
    assert [t.result() for t in waiting] == [[Accepted("a"), Accepted("b")], [Accepted("e")]]
    assert isinstance(gave_up.exception(), Unavailable)


async def test_a_request_that_gave_up_is_skipped() -> None:
    memory = Memory()
    memory.gate = asyncio.Event()
    group_commit = GroupCommit(memory, batch_max=100, queue_max=100)
    group_commit.start()
    first = asyncio.create_task(group_commit.submit(appends("first")))
    await committing(memory, 1)
    abandoned = asyncio.create_task(group_commit.submit(appends("a")))
    kept = asyncio.create_task(group_commit.submit(appends("b")))
    await asyncio.sleep(0)
    abandoned.cancel()
    memory.gate.set()
    assert await kept == [Accepted("b")] and await first == [Accepted("first")]
    await group_commit.drain()
    assert kinds(memory.groups) == [["first"], ["a", "b"]]


async def test_requests_ready_at_once_commit_together() -> None:
    memory = Memory()
    group_commit = GroupCommit(memory, batch_max=100, queue_max=100)
    group_commit.start()
    results = await asyncio.gather(*[group_commit.submit(appends(user)) for user in "abc"])
    assert results == [[Accepted("a")], [Accepted("b")], [Accepted("c")]]
    assert kinds(memory.groups) == [["a", "b", "c"]]
