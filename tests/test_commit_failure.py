"""No 200 without a commit: a write the database refuses is answered with an error and
leaves nothing behind, on both stores; and a server answering before its commit is caught.

The failure is real, injected in the database: a trigger that raises on every insert
into ``events`` (both stores), and on PostgreSQL a deferred constraint trigger, which
lets every statement succeed and fails the ``COMMIT`` itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.models import EventQuery, ProfileRef
from opencdp.store.base import Store
from opencdp.store.postgres.store import PostgresStore
from tests.conftest import TRACK, client_for
from tests.read_fixtures import WS

pytestmark = pytest.mark.anyio

CALL = {"userId": "u-1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z"}
IDENTIFY = {"type": "identify", "userId": "u-1", "traits": {"a": 1}, "timestamp": CALL["timestamp"]}
BATCH = {"batch": [{**CALL, "type": "track"}, IDENTIFY]}
REFUSE = """CREATE FUNCTION opencdp_refuse() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"""
PG_TRIGGERS = {
    "insert": "CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW {when}"
    " EXECUTE FUNCTION opencdp_refuse()",
    "commit": "CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON events"
    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW {when} EXECUTE FUNCTION opencdp_refuse()",
}
SQLITE_TRIGGER = "CREATE TRIGGER refuse BEFORE INSERT ON events {when}"
SQLITE_TRIGGER += " BEGIN SELECT RAISE(ABORT, 'injected'); END"


def refuse_writes(db_url: str, when: str, user_id: str | None = None) -> None:
    """Make inserts into ``events`` fail (every one, or those of ``user_id``), at the
    insert or (PostgreSQL) at COMMIT."""
    only = "" if user_id is None else f"WHEN (NEW.user_id = '{user_id}')"
    if db_url.startswith("sqlite:"):
        assert when == "insert", "SQLite checks every constraint at once"
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(SQLITE_TRIGGER.format(when=only))
        return
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(REFUSE)
        conn.execute(PG_TRIGGERS[when].format(when=only))


def allow_writes(db_url: str) -> None:
    if db_url.startswith("sqlite:"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute("DROP TRIGGER refuse")
        return
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON events")


async def write_token(store: Store) -> str:
    text, record = new_token("c1", ["a1"], ["b1"], ("write",), now=0)
    await store.add_token(record)
    return text


async def stored(store: Store) -> tuple[int, int]:
    """How many events, and profiles named ``u-1``, the workspace holds."""
    events = await store.list_events(WS, EventQuery())
    return events.total, len(await store.find_profiles(WS, ProfileRef("userId", "u-1")))


async def send_all(client: httpx.AsyncClient, token: str) -> list[httpx.Response]:
    headers = {"auth-token": token}
    return [
        await client.post(f"{TRACK}/track", json=CALL, headers=headers),
        await client.post(f"{TRACK}/batch", json=BATCH, headers=headers),
        await client.post("/v1/track", json={**CALL, "writeKey": token}),
    ]


def acknowledged(answers: list[httpx.Response]) -> list[str]:
    return [f"{a.request.url.path} {a.status_code}" for a in answers if a.status_code == 200]


@pytest.mark.parametrize("when", ["insert", "commit"])
async def test_no_200_when_the_database_refuses_the_write(
    db_url: str, store: Store, client: httpx.AsyncClient, when: str
) -> None:
    if when == "commit" and db_url.startswith("sqlite:"):
        pytest.skip("SQLite has no deferred check without foreign keys, which are off")
    token = await write_token(store)
    refuse_writes(db_url, when)
    answers = await send_all(client, token)
    assert acknowledged(answers) == []
    for answer in answers:
        assert answer.status_code >= 500, answer.text
        error = answer.json()["error"]
        assert error["code"] in {"internal_server_error", "service_unavailable"}, error
        assert "injected" not in answer.text
    assert await stored(store) == (0, 0)
    allow_writes(db_url)  # the failure left nothing behind that breaks a later write
    assert [a.status_code for a in await send_all(client, token)] == [200, 200, 200]
    assert await stored(store) == (4, 1)


@pytest.mark.parametrize("when", ["insert", "commit"])
async def test_a_refused_call_fails_only_its_own_request_in_a_group(
    db_url: str, store: Store, client: httpx.AsyncClient, when: str
) -> None:
    """Calls sent at once commit together; the one the database refuses is answered an
    error, and the group is committed again without it, so the others are stored."""
    if when == "commit" and db_url.startswith("sqlite:"):
        pytest.skip("SQLite has no deferred check without foreign keys, which are off")
    token = await write_token(store)
    refuse_writes(db_url, when, user_id="refused")
    users = [f"u{n}" for n in range(15)] + ["refused"] + [f"v{n}" for n in range(15)]
    answers = await asyncio.gather(*[
        client.post(f"{TRACK}/track", json={**CALL, "userId": user}, headers={"auth-token": token})
        for user in users
    ])  # fmt: skip
    statuses = {user: answer.status_code for user, answer in zip(users, answers, strict=True)}
    assert statuses.pop("refused") >= 500
    assert set(statuses.values()) == {200}, statuses
    assert (await store.list_events(WS, EventQuery())).total == len(users) - 1


@pytest.fixture
async def answers_early(anyio_backend: str, db_url: str) -> AsyncIterator[Store]:
    """A PostgreSQL store set to answer before committing (the test-only negative control)."""
    if db_url.startswith("sqlite:"):
        pytest.skip("the deferred failure this control needs is PostgreSQL's")
    store = PostgresStore(db_url, ack_before_commit=True)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


async def test_a_store_answering_before_its_commit_is_caught(
    db_url: str, answers_early: Store
) -> None:
    """What the test above catches: with a commit that fails, an early answer is a 200 for
    an event that was never stored, with no kill and no delay needed to see it."""
    app = create_app(Settings(db=db_url), answers_early)
    token = await write_token(answers_early)
    refuse_writes(db_url, "commit")
    async with client_for(app) as client:
        answers: list[Any] = await send_all(client, token)
    assert acknowledged(answers) != []
    assert await stored(answers_early) == (0, 0)
