"""The SQLite token cache: most requests run no token query, and a revocation made by
any process takes effect at once (the cache is keyed by the shared revocation count)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opencdp import auth
from opencdp.auth import new_token
from opencdp.errors import AuthenticationFailed
from opencdp.models import Workspace
from opencdp.store.sqlite.store import SQLiteStore
from opencdp.store.token_cache import TokenCache
from tests.read_fixtures import call

pytestmark = pytest.mark.anyio
SHOP = Workspace("c1", "a1", "b1")


def test_a_record_serves_only_its_own_database_version() -> None:
    cache = TokenCache()
    _, record = new_token("c1", None, None, ("write",), now=0)
    cache.put(record, version=3)
    assert cache.get(record.token_id, 3) is record
    assert cache.get(record.token_id, 4) is None
    cache.forget(record.token_id)
    assert cache.get(record.token_id, 3) is None


async def test_repeated_checks_read_the_token_once(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "t.db"))
    await store.start()
    try:
        text, record = new_token("c1", None, None, ("write",), now=int(time.time() * 1000))
        await store.add_token(record)
        statements: list[str] = []
        store.reader().set_trace_callback(statements.append)
        for n in range(3):
            await auth.authorize(store, text, SHOP, "write", unknown_status=403)
            await store.append_calls(SHOP, [call(user_id=f"u{n}")])  # writes keep the cache
        assert sum("FROM tokens" in s for s in statements) == 1
    finally:
        await store.stop()


async def test_a_revocation_by_another_process_takes_effect_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    server, cli = SQLiteStore(path), SQLiteStore(path)  # two processes on one database
    await server.start()
    try:
        text, record = new_token("c1", None, None, ("write",), now=int(time.time() * 1000))
        await cli.add_token(record)
        await auth.authorize(server, text, SHOP, "write", unknown_status=403)  # now cached
        assert await cli.revoke_token(record.token_id, int(time.time() * 1000))
        with pytest.raises(AuthenticationFailed):
            await auth.authorize(server, text, SHOP, "write", unknown_status=403)
    finally:
        await server.stop()


async def test_checked_tokens_answer_repeats_but_not_revoked_or_forged_ones(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "t.db")
    server, cli = SQLiteStore(path), SQLiteStore(path)  # two processes on one database
    await server.start()
    checked = auth.CheckedTokens()
    try:
        text, record = new_token("c1", None, None, ("write",), now=int(time.time() * 1000))
        await cli.add_token(record)
        first = await auth.authorize(server, text, SHOP, "write", unknown_status=403,
                                     checked=checked)
        again = await auth.authorize(server, text, SHOP, "write", unknown_status=403,
                                     checked=checked)
        assert again is first  # answered from the checked tokens
        forged = text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB")
        with pytest.raises(AuthenticationFailed):
            await auth.authorize(server, forged, SHOP, "write", unknown_status=403,
                                 checked=checked)
        with pytest.raises(AuthenticationFailed):  # a checked token grants no other workspace
            await auth.authorize(server, text, Workspace("c2", "a1", "b1"), "write",
                                 unknown_status=403, checked=checked)
        assert await cli.revoke_token(record.token_id, int(time.time() * 1000))
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                await auth.authorize(server, text, SHOP, "write", unknown_status=403,
                                     checked=checked)
    finally:
        await server.stop()
