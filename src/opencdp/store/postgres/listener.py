"""One ``LISTEN`` connection per server, for what other processes commit: token
revocations (the count the token cache trusts) and new events (the feed's wake-ups).

Every committed change to ``tokens`` (a revocation) sends a notification on channel
``opencdp_tokens`` (a trigger: migration 0005), delivered only at commit. Each server
keeps one connection of its own listening to it, opened at its first token check (a
CLI command, which checks none, opens none), and adds one to an in-memory count per
notification for its schema: reading the count is reading an attribute, so a known
token costs no query. A revocation by another process reaches this server's token
cache when its notification arrives, typically milliseconds after the commit; this
process's own revocations count at once (``bump``).

A notification can only be missed while the connection is down. So losing it adds one
to the count (every cached record is read again), and until the connection listens
again the count is ``None``, which the token verifier never trusts. A connection that
dies without the network saying so is found by a trivial query every ``PING_EVERY``
seconds that must answer within ``PING_TIMEOUT``: that bounds how late a revocation
takes effect then.

The same connection listens on ``opencdp_feed``, which every transaction that stores
events notifies (``postgres.append``) with ``schema:workspace id``: the change feed's
waiting readers of that workspace are woken (``on_feed``) in every process, within
milliseconds of the commit. While not listening, ``listening`` is False and the feed
falls back to polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("opencdp.store")

CHANNEL = "opencdp_tokens"
FEED_CHANNEL = "opencdp_feed"
PING_EVERY = 5.0
PING_TIMEOUT = 5.0
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0
_TOKENS_SCHEMA = (
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = 'tokens'::regclass"
)


class Listener:
    """One server's count of the revocations committed in its database schema, and the
    wake-ups of its feed readers (``on_feed``)."""

    def __init__(self, url: str, on_feed: Callable[[int], None] | None = None) -> None:
        self._url = url
        self._on_feed = on_feed
        self._count = 0
        self._listening = False
        #: How many times a connection has started listening (each may follow a loss).
        self.sessions = 0
        self._open = False
        self._schema: str | None = None
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        """Listen from the next ``value`` on (the store has started)."""
        self._open = True

    def value(self) -> int | None:
        """The count, or ``None`` while not listening (then it starts listening)."""
        if self._task is None and self._open:
            self._start()
        return self._count if self._listening else None

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (else the feed polls)."""
        return self._listening

    def ensure_started(self) -> None:
        """Listen now, without waiting for the first token check (a feed reader waits)."""
        if self._task is None and self._open:
            self._start()

    def bump(self) -> None:
        """This process committed a revocation: its cache need not wait for the notice."""
        self._count += 1

    async def close(self) -> None:
        """Stop listening (the store stops); ``open`` starts again."""
        self._open = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._forget()

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # asked outside the event loop: stay untrusted
        self._task = loop.create_task(self._run(), name="opencdp-listener")

    async def _run(self) -> None:
        delay = _RETRY_FIRST
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=max(2, int(PING_TIMEOUT))
                ) as conn:
                    await self._listen(conn)
                    delay = _RETRY_FIRST
                    await self._follow(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning(
                    "listener: no connection to PostgreSQL (%s); every token is read from"
                    " the database, and feed readers poll, until it is back",
                    exc.__class__.__name__,
                )
            except Exception:  # never stop listening: the cache would stay untrusted
                log.exception("listener: failed; starting it again")
            finally:
                self._forget()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _listen(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(_TOKENS_SCHEMA)
        row = await cursor.fetchone()
        self._schema = None if row is None else str(row[0])
        # Named for operators (pg_stat_activity) and for the test that cuts it.
        await conn.execute(
            "SELECT set_config('application_name', %s, false)", (f"{CHANNEL}:{self._schema}",)
        )
        await conn.execute(f"LISTEN {CHANNEL}")
        await conn.execute(f"LISTEN {FEED_CHANNEL}")
        self._listening = True
        self.sessions += 1

    async def _follow(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Count this schema's notifications; between waits, prove the connection lives."""
        while True:
            async for notice in conn.notifies(timeout=PING_EVERY):
                if notice.channel == FEED_CHANNEL:
                    self._feed(notice.payload)
                elif notice.payload == self._schema:
                    self._count += 1
            await asyncio.wait_for(conn.execute("SELECT 1"), PING_TIMEOUT)

    def _feed(self, payload: str) -> None:
        schema, _, workspace = payload.rpartition(":")
        if self._on_feed is not None and schema == self._schema and workspace.isdigit():
            self._on_feed(int(workspace))

    def _forget(self) -> None:
        """Listening stopped: notifications may be missed, so no cached record holds."""
        self._listening = False
        self._count += 1
