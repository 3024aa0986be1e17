"""Fixtures: a fresh real store per test (SQLite and PostgreSQL), the app, a client, tokens.

Async tests run on anyio's pytest plugin (``@pytest.mark.anyio``) with asyncio.
``httpx.ASGITransport`` runs no lifespan, so the ``store`` fixture starts and stops it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from starlette.applications import Starlette

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.store.base import Store
from tests.backends import STORES, make_store, store_url

CLIENT, ACCOUNT, BRAND = "c1", "a1", "b1"
TRACK = f"/track/{CLIENT}/{ACCOUNT}/{BRAND}/v1"


class MakeToken(Protocol):
    def __call__(
        self,
        scopes: Sequence[str] = ("write",),
        accounts: Sequence[str] | None = (ACCOUNT,),
        brands: Sequence[str] | None = (BRAND,),
        client: str = CLIENT,
    ) -> Awaitable[str]: ...


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=STORES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every store test runs on each back-end: SQLite, then PostgreSQL."""
    with store_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(db=db_url)


@pytest.fixture
async def store(anyio_backend: str, db_url: str) -> AsyncIterator[Store]:
    store = make_store(db_url)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


@pytest.fixture
def app(settings: Settings, store: Store) -> Starlette:
    return create_app(settings, store)


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(anyio_backend: str, app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@pytest.fixture
def make_token(store: Store) -> MakeToken:
    """``await make_token(scopes=..., accounts=..., brands=...)`` → a stored token's text."""

    async def make(
        scopes: Sequence[str] = ("write",),
        accounts: Sequence[str] | None = (ACCOUNT,),
        brands: Sequence[str] | None = (BRAND,),
        client: str = CLIENT,
    ) -> str:
        text, record = new_token(client, accounts, brands, scopes, now=time.time_ns() // 10**6)
        await store.add_token(record)
        return text

    return make
