"""Databases for the benchmark: fresh ones for writes, cached loaded ones for reads.

A loaded read dataset is kept (SQLite file, PostgreSQL schema) under a name that
says its size, and reused by later runs; a marker is written only once a load has
finished, so an interrupted load is redone.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from bench import dataset
from opencdp.store import Store, open_store

PG_URL = os.environ.get("OPENCDP_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_schema_url(schema: str) -> str:
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def fresh_url(kind: str, workdir: Path) -> str:
    """A new, empty database of ``kind`` (sqlite or postgres)."""
    name = f"w_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return f"sqlite:///{workdir / (name + '.db')}"
    _pg_admin(f"CREATE SCHEMA {name}")
    return _pg_schema_url(name)


def drop(url: str) -> None:
    """Remove a database made by ``fresh_url``."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        return
    schema = url.rsplit("%3D", 1)[1]
    _pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def loaded(kind: str, size: dataset.DatasetSize, datadir: Path) -> tuple[str, float | None]:
    """A database holding the dataset of ``size``: (url, load seconds or None if cached)."""
    tag = f"{size.profiles}x{size.events_per_profile}"
    marker = datadir / f"{kind}-{tag}.loaded"
    if kind == "sqlite":
        url = f"sqlite:///{datadir / f'reads-{tag}.db'}"
    else:
        url = _pg_schema_url(f"bench_reads_{tag}")
    if marker.exists():
        return url, None
    datadir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        drop(url)
    else:
        _pg_admin(f"DROP SCHEMA IF EXISTS bench_reads_{tag} CASCADE")
        _pg_admin(f"CREATE SCHEMA bench_reads_{tag}")
    store = open_store(url)
    seconds = await dataset.load(store, size)
    marker.write_text(url + "\n")
    return url, seconds


def open_started(url: str) -> Store:
    return open_store(url)


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.encode())
