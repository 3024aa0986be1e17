"""Real stores for tests: a fresh SQLite file, or a fresh schema in the local PostgreSQL.

With ``CI=true`` a PostgreSQL or Redis that cannot be reached fails the test; on a
machine without them, those tests skip and say why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from opencdp.store.base import Store, StoreObserver
from opencdp.store.postgres.store import PostgresStore
from opencdp.store.sqlite.store import SQLiteStore

PG_ADMIN_URL = os.environ.get("OPENCDP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OPENCDP_TEST_REDIS", "redis://127.0.0.1:6379/0")
STORES = ["sqlite", "postgres"]


def service_missing(what: str, error: Exception) -> None:
    """Fail under CI, skip elsewhere: a store test must never pass without its store."""
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI needs it")
    pytest.skip(f"{message}; start it to run this test")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose search_path is a new, empty schema (dropped afterwards)."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL at " + PG_ADMIN_URL, exc)
        raise
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'opencdp.db'}"
    else:
        with postgres_schema() as url:
            yield url


def make_store(url: str, observers: Sequence[StoreObserver] = ()) -> Store:
    if url.startswith("sqlite:"):
        return SQLiteStore(url.removeprefix("sqlite:///"), observers=observers)
    return PostgresStore(url, observers=observers)


def redis_or_skip() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing("Redis at " + REDIS_URL, exc)
    return REDIS_URL
