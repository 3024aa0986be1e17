"""The ``opencdp`` command: serve, migrate, tokens, property indexes.

Each command is a thin call into the library.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import click

from opencdp import auth
from opencdp.cli_database import check_port_free, remember_create_dirs
from opencdp.cli_database import migrate as migrate_db
from opencdp.cli_database import run as run_on
from opencdp.cli_tokens import token_json, token_table
from opencdp.config import Settings
from opencdp.errors import ValidationFailed
from opencdp.models import format_millis
from opencdp.queries import PROPERTY_PREFIX, property_path
from opencdp.store.base import Store

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = Settings()
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def setting(flag: str, help: str, **attrs: Any) -> Callable[[F], F]:
    """An option that also reads ``OPENCDP_<NAME>``, defaulting to the ``Settings`` default."""
    name = flag.removeprefix("--").replace("-", "_")
    return click.option(
        flag,
        envvar=f"OPENCDP_{name.upper()}",
        default=getattr(_DEFAULTS, name),
        show_default=True,
        show_envvar=True,
        help=help,
        **attrs,
    )


_COUNT = click.IntRange(min=1)
_POSITIVE = click.FloatRange(min=0, min_open=True)


def db_option(command: F) -> F:
    """``--db`` and ``--create-dirs``: every command that opens the database takes both."""
    command = setting(
        "--create-dirs",
        "Create the SQLite file's missing parent directories (else refused).",
        is_flag=True,
        expose_value=False,
        callback=remember_create_dirs,
    )(command)
    return setting("--db", "Database URL: sqlite:///PATH or postgresql://…")(command)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="opencdp")
def main() -> None:
    """opencdp: an open-source Customer Data Platform."""


# -- serve and migrate -----------------------------------------------------------------


def _environment_epilog() -> str:
    """Every ``OPENCDP_*`` setting without a flag here, and its default."""
    flagged = {"host", "port", "db", "workers", "rate", "burst", "redis_url", "create_dirs"}
    listed = [
        f"OPENCDP_{f.name.upper()} (default: {_shown_default(getattr(_DEFAULTS, f.name))})"
        for f in fields(Settings)
        if f.repr and f.name not in flagged
    ]
    return "\b\nAlso read from the environment (README, Configuration):\n  " + "\n  ".join(listed)


def _shown_default(value: Any) -> str:
    if value in (None, ()):
        return "unset"
    return str(value)


@main.command(context_settings=CONTEXT, epilog=_environment_epilog())
@setting("--host", "Address to listen on.")
@setting("--port", "Port to listen on.", type=click.IntRange(0, 65535))
@db_option
@setting("--workers", "Server processes.", type=click.IntRange(min=1))
@setting(
    "--rate",
    "Requests a second each token may make, refilling.",
    type=click.FloatRange(min=0, min_open=True),
)
@setting(
    "--burst", "Requests a token may make at once (its bucket size).", type=click.IntRange(min=1)
)
@setting("--redis-url", "Redis URL, for one rate limit shared by every process and host.")
@setting("--read-timeout-ms", "A read's time budget; past it, 503 naming the cure.", type=_COUNT)
@setting("--workspace-reads", "Reads one workspace runs at once; more wait.", type=_COUNT)
@setting("--preauth-inflations", "gzip bodies with no Basic auth inflated at once.", type=_COUNT)
@setting("--anonymous-rate", "Failed anonymous /v1 calls a second per address.", type=_POSITIVE)
@setting("--header-limit", "Bytes of request line and headers (more: 431).", type=_COUNT)
@setting("--header-timeout", "Seconds a client has to finish its headers.", type=_POSITIVE)
@setting("--max-connections", "Open connections per process; more are closed.", type=_COUNT)
def serve(**chosen: Any) -> None:
    """Migrate the database, then serve the HTTP APIs until SIGTERM or Ctrl-C."""
    import uvicorn

    from opencdp.logs import uvicorn_logging
    from opencdp.server import PROTOCOL

    settings = _settings(chosen)
    check_port_free(settings.host, settings.port)
    version = migrate_db(settings.db)
    click.echo(f"opencdp: schema version {version}; serving {served_at(settings)}", err=True)
    _export(chosen)
    # uvicorn finishes in-flight requests and runs the shutdown (which commits the
    # write queue), then re-raises the signal: a stop asked for by SIGTERM exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "opencdp.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=PROTOCOL,  # httptools, with header and connection limits
        lifespan="on",
        access_log=False,
        # The client's address comes from OPENCDP_TRUSTED_PROXIES alone (ClientAddress),
        # and no answer names the server software.
        proxy_headers=False,
        server_header=False,
        log_level=settings.log_level,
        log_config=uvicorn_logging(settings.log_level),
        timeout_graceful_shutdown=10,
    )


@main.command(context_settings=CONTEXT)
@db_option
def migrate(db: str) -> None:
    """Bring the database schema up to date and print its version."""
    click.echo(str(migrate_db(db)))


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _settings(chosen: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(**chosen)
    except (TypeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def _export(chosen: dict[str, Any]) -> None:
    """Hand the chosen settings to worker processes, which build theirs from the environment,
    while the command runs: the environment is as it was once it returns."""
    context = click.get_current_context()
    for name, value in chosen.items():
        if value is not None:
            key = f"OPENCDP_{name.upper()}"
            context.call_on_close(functools.partial(_restore, key, os.environ.get(key)))
            os.environ[key] = str(value)


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


@main.command(context_settings=CONTEXT)
@click.option(
    "--customers", default=2000, show_default=True, type=click.IntRange(min=1),
    help="How many sample customers to create.",
)
@setting("--host", "The address opencdp serve listens on (for the example printed).")
@setting("--port", "The port opencdp serve listens on (for the example printed).", type=int)
@db_option
def demo(customers: int, host: str, port: int, db: str) -> None:
    """Load a sample workspace (demo/web/shop) and print a read,write token for it.

    Safe to run again: every sample call carries a fixed messageId, so a second run
    stores nothing twice. Every event lies in the 30 days before now.
    """
    from opencdp.demo import DEMO_WORKSPACE, demo_calls

    settings = _settings({"host": host, "port": port, "db": db})
    ws = DEMO_WORKSPACE
    token, record = auth.new_token(
        ws.client_id, [ws.account_id], [ws.brand_id], ["read", "write"], _now(), "demo"
    )

    async def load(store: Store) -> tuple[int, int]:
        calls = [call for _, call in demo_calls(customers, now=_now())]
        stored = 0
        for start in range(0, len(calls), 1000):
            accepted = await store.append_calls(ws, calls[start : start + 1000])
            stored += sum(not a.duplicate for a in accepted)
        await store.add_token(record)
        return stored, len(calls)

    stored, count = run_on(settings.db, load)
    click.echo(
        f"opencdp: {stored} new events for {customers} customers in {ws} "
        f"({count - stored} were already there)",
        err=True,
    )
    click.echo(
        f"try: curl -H \"auth-token: $TOKEN\" '{served_at(settings)}/track/{ws}/v1/events?size=5'",
        err=True,
    )
    click.echo(token)


def served_at(settings: Settings) -> str:
    """The base URL a client on this machine reaches ``opencdp serve`` at."""
    if settings.public_url is not None:
        return settings.public_url
    anywhere = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    host = anywhere.get(settings.host, settings.host)
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{settings.port}"


# -- tokens ----------------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
def tokens() -> None:
    """Create, list and revoke API tokens."""


@tokens.command("create", context_settings=CONTEXT)
@click.option("--client", required=True, help="The clientId the token belongs to.")
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="ID",
    help="An accountId the token may use (repeat, or separate with commas).",
)
@click.option("--all-accounts", is_flag=True, help="The token may use every account.")
@click.option(
    "--brand",
    "brands",
    multiple=True,
    metavar="ID",
    help="A brandId the token may use (repeat, or separate with commas).",
)
@click.option("--all-brands", is_flag=True, help="The token may use every brand.")
@click.option(
    "--scope",
    "scopes",
    required=True,
    multiple=True,
    metavar="SCOPES",
    help="read (Events and Profiles APIs), write (tracking), admin (the client's tokens "
    "over HTTP), or several: read,write.",
)
@click.option("--name", default="", help="A note to recognise the token by.")
@db_option
def create_token(
    client: str,
    accounts: tuple[str, ...],
    all_accounts: bool,
    brands: tuple[str, ...],
    all_brands: bool,
    scopes: tuple[str, ...],
    name: str,
    db: str,
) -> None:
    """Create a token and print it, alone, on stdout. It is shown only this once."""
    chosen_accounts = _either("account", _split(accounts), all_accounts)
    chosen_brands = _either("brand", _split(brands), all_brands)
    try:
        token, record = auth.new_token(
            client, chosen_accounts, chosen_brands, _split(scopes), _now(), name
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    run_on(db, lambda store: store.add_token(record))
    click.echo(token)


@tokens.command("list", context_settings=CONTEXT)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON array; null accounts or brands mean all."
)
@db_option
def list_tokens(as_json: bool, db: str) -> None:
    """List every token (never its secret)."""
    records = run_on(db, lambda store: store.list_tokens())
    if as_json:
        click.echo(json.dumps([token_json(r) for r in records], indent=2))
    else:
        click.echo(token_table(records), nl=False)


@tokens.command("revoke", context_settings=CONTEXT)
@click.argument("token_id", metavar="ID")
@db_option
def revoke_token(token_id: str, db: str) -> None:
    """Revoke a token at once, by its id (the hex part after ``ocdp_``)."""
    if not run_on(db, lambda store: store.revoke_token(token_id, _now())):
        raise click.ClickException(f"no active token with id {token_id!r}")
    click.echo(f"revoked {token_id}")


def _either(kind: str, ids: list[str], every: bool) -> list[str] | None:
    if bool(ids) == every:
        raise click.UsageError(f"give exactly one of --{kind} ID ... or --all-{kind}s")
    return None if every else ids


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


# -- property indexes ------------------------------------------------------------------


@main.group(context_settings=CONTEXT)
def properties() -> None:
    """Index the event properties customers filter on (properties.<path>=value).

    A filter on an indexed path reads only the matching events; any other path scans
    events, checking each. Every index costs each stored event a little more.
    """


@properties.command("index", context_settings=CONTEXT)
@click.argument("path")
@db_option
def index_property(path: str, db: str) -> None:
    """Index properties.PATH (e.g. currency, or cart.coupon for a nested key).

    The index covers every stored event, so on a large database it takes a while; on
    SQLite, writes wait until it is built.
    """
    checked = _property_path(path)
    if run_on(db, lambda store: store.index_property(checked)):
        click.echo(f"indexed properties.{checked}")
    else:
        click.echo(f"properties.{checked} is already indexed: nothing to do")


@properties.command("list", context_settings=CONTEXT)
@db_option
def list_property_indexes(db: str) -> None:
    """List the indexed property paths and when each was indexed."""
    for index in run_on(db, lambda store: store.list_property_indexes()):
        click.echo(f"{index.path}\t{format_millis(index.created_time)}")


@properties.command("drop", context_settings=CONTEXT)
@click.argument("path")
@db_option
def drop_property_index(path: str, db: str) -> None:
    """Drop the index of properties.PATH: filters on it scan events again."""
    checked = _property_path(path)
    if not run_on(db, lambda store: store.drop_property_index(checked)):
        raise click.ClickException(f"properties.{checked} is not indexed")
    click.echo(f"dropped the index of properties.{checked}")


def _property_path(path: str) -> str:
    """The path as the Events API's ``properties.<path>`` parameter accepts it."""
    try:
        return property_path(PROPERTY_PREFIX + path)
    except ValidationFailed as exc:
        raise click.BadParameter(exc.message, param_hint="PATH") from exc


# -- helpers ---------------------------------------------------------------------------


def _now() -> int:
    return time.time_ns() // 1_000_000
