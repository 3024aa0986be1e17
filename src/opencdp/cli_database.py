"""How a CLI command opens its database: which file, no surprise directories, one-line errors.

Every command names the SQLite file it uses on stderr (``./opencdp.db`` from another
directory is another database), refuses to create missing parent directories unless
``--create-dirs`` is given, and turns everyday failures (PostgreSQL unreachable or
refusing the role, a file that is not a database, a path it cannot write) into one
``Error:`` line and exit status 1 instead of a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import click

from opencdp.store import Store, open_store
from opencdp.store.sqlite.connection import sqlite_path

T = TypeVar("T")
CREATE_DIRS = "create_dirs"  # click's context meta key, set by the --create-dirs flag


class BadDatabaseURL(click.ClickException):
    """A ``--db`` that names no store we know: a usage error (2), in one line."""

    exit_code = 2


def remember_create_dirs(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[CREATE_DIRS] = value
    return value


def open_for_cli(url: str) -> Store:
    """The store for ``url``, its SQLite file named on stderr and its directory checked."""
    try:
        store = open_store(url)
    except (ValueError, NotImplementedError) as exc:
        hint = "" if "://" in url else f" (a file? --db sqlite:///{url})"
        raise BadDatabaseURL(f"--db: {exc}{hint}") from None
    if url.startswith("sqlite:"):
        _announce(Path(sqlite_path(url)))
    return store


def migrate(url: str) -> int:
    """Bring the schema at ``url`` up to date; its version."""
    store = open_for_cli(url)
    with database_errors(url):
        return store.migrate()


def run(url: str, work: Callable[[Store], Awaitable[T]]) -> T:
    """Start the store, do ``work``, stop the store (committing what it wrote)."""
    store = open_for_cli(url)

    async def session() -> T:
        await store.start()
        try:
            return await work(store)
        finally:
            await store.stop()

    with database_errors(url):
        return asyncio.run(session())


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """The failures a wrong ``--db`` causes, as one ``Error:`` line naming the database."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise click.ClickException(f"database {shown(url)}: {_reason(exc)}") from None
    except Exception as exc:
        psycopg = sys.modules.get("psycopg")  # loaded only if a PostgreSQL URL was opened
        if psycopg is None or not isinstance(exc, psycopg.Error):
            raise
        raise click.ClickException(f"database {shown(url)}: {_reason(exc)}") from None


def check_port_free(host: str, port: int) -> None:
    """Refuse, in one line, a host that does not resolve or an address already in use."""
    if port == 0:
        return
    where = f"cannot listen on {host}:{port}"
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise click.ClickException(f"{where}: {_reason(exc)} (check --host)") from None
    try:
        socket.create_server(address, family=family).close()
    except OSError as exc:
        busy = exc.errno == errno.EADDRINUSE
        hint = " (is opencdp already running? choose another --port)" if busy else ""
        raise click.ClickException(f"{where}: {_reason(exc)}{hint}") from None


def shown(url: str) -> str:
    """``url`` with any password hidden, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _announce(path: Path) -> None:
    where = path.resolve()
    if where.exists():
        if not where.is_file():
            raise click.ClickException(f"database {where}: not a file")
        click.echo(f"opencdp: database {where}", err=True)
        return
    parent = where.parent
    if parent.exists() and not parent.is_dir():
        raise click.ClickException(f"database {where}: {parent} is not a directory")
    if not parent.exists():
        if not click.get_current_context().meta.get(CREATE_DIRS):
            raise click.ClickException(
                f"database {where}: the directory {parent} does not exist "
                "(check --db, or pass --create-dirs to create it)"
            )
        try:
            parent.mkdir(parents=True)
        except OSError as exc:
            raise click.ClickException(f"cannot create {parent}: {_reason(exc)}") from None
    click.echo(f"opencdp: database {where} (new, empty)", err=True)


def _reason(exc: BaseException) -> str:
    """The first line of what went wrong, without the exception's class name."""
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()  # without the address the OS error repeats
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
