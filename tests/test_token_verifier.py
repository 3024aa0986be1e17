"""The token verifier: a known token costs no query on either store, an unknown one is
never cached, and a revocation by any process reaches a server's cache (at once on
SQLite, within a notification's delivery on PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from opencdp.auth import TokenVerifier, new_token
from opencdp.errors import AuthenticationFailed
from opencdp.models import TokenRecord, Workspace
from opencdp.store.base import Store
from opencdp.store.postgres.listener import CHANNEL
from opencdp.store.postgres.store import PostgresStore
from opencdp.store.sqlite.store import SQLiteStore
from tests.backends import make_store
from tests.conftest import TRACK, MakeToken
from tests.read_fixtures import call
from tests.server_process import cli

pytestmark = pytest.mark.anyio
SHOP = Workspace("c1", "a1", "b1")
DEADLINE = 5.0  # seconds: far above a notification's delivery, far below a test timeout


def made() -> tuple[str, TokenRecord]:
    return new_token("c1", None, None, ("write",), now=int(time.time() * 1000))


def forged(text: str) -> str:
    return text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")


@pytest.fixture
async def other(db_url: str) -> AsyncIterator[Store]:
    """A second store on the same database: what another process (a CLI) would open."""
    store = make_store(db_url)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail after ``DEADLINE`` seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE} s: {what}")
        await asyncio.sleep(0.01)


async def refused(verifier: TokenVerifier, text: str) -> bool:
    try:
        await verifier.authorize(text, SHOP, "write", unknown_status=403)
    except AuthenticationFailed:
        return True
    return False


async def cached_token(
    store: Store, adder: Store | None = None
) -> tuple[TokenVerifier, str, TokenRecord]:
    """A verifier of ``store`` holding a token (stored through ``adder``, else ``store``)
    in its cache: checked again once the store's count is trusted."""
    verifier = TokenVerifier(store)
    text, record = made()
    await (adder or store).add_token(record)
    await verifier.authorize(text, SHOP, "write", unknown_status=403)
    await eventually(lambda: listening(store), "the store tells its revocation count")
    await verifier.authorize(text, SHOP, "write", unknown_status=403)
    return verifier, text, record


async def listening(store: Store) -> bool:
    return store.revocations() is not None


def token_reads(store: Store) -> Callable[[], int]:
    """How many times ``store`` goes to its database for a token (or anything) from now
    on: its token reads on SQLite (each runs ``SELECT … FROM tokens`` on a reader
    thread), connections taken from the pool on PostgreSQL (every query of the store
    takes one)."""
    if isinstance(store, SQLiteStore):
        calls = 0
        find_token = store.find_token

        async def counted(token_id: str) -> TokenRecord | None:
            nonlocal calls
            calls += 1
            return await find_token(token_id)

        store.find_token = counted  # type: ignore[method-assign]
        return lambda: calls
    assert isinstance(store, PostgresStore)
    pool = store.pool
    before = pool.get_stats().get("requests_num", 0)
    return lambda: int(pool.get_stats().get("requests_num", 0) - before)


async def test_a_known_token_costs_no_query(store: Store) -> None:
    verifier, text, record = await cached_token(store)
    reads = token_reads(store)
    for _ in range(100):
        principal = await verifier.authorize(text, SHOP, "write", unknown_status=403)
        assert principal.token_id == record.token_id
    assert reads() == 0
    for wrong in (forged(text), text[:-1] + "é", text + " "):  # still checked when cached
        with pytest.raises(AuthenticationFailed):
            await verifier.authorize(wrong, SHOP, "write", unknown_status=403)
    assert reads() == 0


async def test_writes_keep_the_cache(store: Store) -> None:
    verifier, text, record = await cached_token(store)
    await store.append_calls(SHOP, [call(user_id="u1")])
    reads = token_reads(store)
    await verifier.authorize(text, SHOP, "write", unknown_status=403)
    assert reads() == 0


async def test_an_unknown_token_is_never_cached(store: Store) -> None:
    verifier = TokenVerifier(store)
    text, record = made()
    with pytest.raises(AuthenticationFailed):
        await verifier.authorize(text, SHOP, "write", unknown_status=403)
    await store.add_token(record)  # a new token works at once
    assert (await verifier.authorize(text, SHOP, "write", unknown_status=403)).token_id == (
        record.token_id
    )


async def test_a_revocation_by_another_process_reaches_the_cache(
    store: Store, other: Store
) -> None:
    verifier, text, record = await cached_token(store, other)
    with pytest.raises(AuthenticationFailed):  # a cached token grants no other workspace
        await verifier.authorize(text, Workspace("c2", "a1", "b1"), "write", unknown_status=403)
    assert await other.revoke_token(record.token_id, int(time.time() * 1000))
    if isinstance(store, SQLiteStore):  # the shared count file: at once
        assert await refused(verifier, text)
    else:  # when the notification arrives
        await eventually(lambda: refused(verifier, text), "the revocation reaches the cache")
    for _ in range(2):
        assert await refused(verifier, text)


async def test_a_revocation_by_this_process_takes_effect_at_once(store: Store) -> None:
    verifier, text, record = await cached_token(store)
    assert await store.revoke_token(record.token_id, int(time.time() * 1000))
    assert await refused(verifier, text)


async def test_the_cache_is_bounded(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "t.db"))
    await store.start()
    try:
        verifier = TokenVerifier(store, max_entries=2)
        texts = []
        for _ in range(3):
            text, record = made()
            await store.add_token(record)
            texts.append(text)
        reads = token_reads(store)
        for text in texts:  # the third one drops the first
            await verifier.authorize(text, SHOP, "write", unknown_status=403)
        assert reads() == 3
        await verifier.authorize(texts[2], SHOP, "write", unknown_status=403)
        assert reads() == 3
        await verifier.authorize(texts[0], SHOP, "write", unknown_status=403)
        assert reads() == 4
    finally:
        await store.stop()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_lost_listener_forgets_the_cache_and_misses_no_revocation(
    store: Store, other: Store
) -> None:
    """A revocation committed while the server's LISTEN connection is cut (its
    notification is lost) still takes effect: losing the connection drops the cache."""
    assert isinstance(store, PostgresStore)
    verifier, text, record = await cached_token(store, other)
    await cut_listener(store)
    assert await other.revoke_token(record.token_id, int(time.time() * 1000))

    async def lost() -> bool:
        return not await listening(store)

    await eventually(lost, "the server notices the lost connection")
    await eventually(lambda: listening(store), "the listener connects again")
    assert await refused(verifier, text)  # asked only once it listens again


async def cut_listener(store: PostgresStore) -> None:
    """Terminate the backend of ``store``'s LISTEN connection, as a failover would."""
    async with store.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s || ':' || current_schema()",
            (CHANNEL,),
        )
        assert await cursor.fetchall() == [(True,)]


async def test_a_revocation_by_the_cli_reaches_a_server_that_cached_the_token(
    db_url: str, store: Store
) -> None:
    verifier, text, record = await cached_token(store)
    await asyncio.to_thread(cli, "tokens", "revoke", record.token_id, db=db_url)
    await eventually(lambda: refused(verifier, text), "the CLI's revocation reaches the cache")


async def test_the_request_guard_and_the_write_key_path_share_the_cache(
    store: Store, client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    """Answers that need nothing of the store past the token (a 403) read nothing once
    the app's one verifier knows the token, whichever way the token came."""
    token = await make_token(scopes=("write",), accounts=None)  # every account: no write key
    events, body = f"{TRACK}/events", {"writeKey": token, "userId": "u1", "event": "e"}
    assert (await client.get(events, headers={"auth-token": token})).status_code == 403
    await eventually(lambda: listening(store), "the store tells its revocation count")
    assert (await client.post("/v1/track", json=body)).status_code == 403
    reads = token_reads(store)
    for _ in range(20):
        guarded = await client.get(events, headers={"auth-token": token})
        assert guarded.json()["error"]["message"] == "auth-token: not authorised for read access"
        keyed = await client.post("/v1/track", json=body)
        assert keyed.status_code == 403 and "exactly one account" in keyed.json()["message"]
    assert reads() == 0
