"""The ``opencdp`` command, run in-process against a fresh SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result

from opencdp.auth import TokenVerifier
from opencdp.cli import main
from opencdp.config import Settings
from opencdp.demo import DEMO_WORKSPACE
from opencdp.models import EventQuery, ProfileQuery
from opencdp.store import open_store

TOKEN_LINE = re.compile(r"ocdp_([0-9a-f]{12})_[A-Za-z0-9_-]{32}\n")
# Every OPENCDP_* variable unset while a command runs, and restored afterwards.
CLEAN_ENV: dict[str, str | None] = {f"OPENCDP_{f.name.upper()}": None for f in fields(Settings)}


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})


def create(db: str, *args: str) -> tuple[str, str]:
    """Create a token; return its text and its id."""
    result = run("tokens", "create", "--client", "acme", *args, "--db", db)
    assert result.exit_code == 0, result.output
    match = TOKEN_LINE.fullmatch(result.stdout)
    assert match, result.stdout
    return result.stdout.strip(), match.group(1)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["tokens"],
        ["tokens", "create"],
        ["tokens", "list"],
        ["tokens", "revoke"],
        ["properties"],
        ["properties", "index"],
        ["properties", "list"],
        ["properties", "drop"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = run(*command, flag)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.stdout


def test_help_names_the_environment_variables() -> None:
    result = run("serve", "--help")
    for name in (
        "OPENCDP_DB",
        "OPENCDP_PORT",
        "OPENCDP_RATE",
        "OPENCDP_BURST",
        "OPENCDP_REDIS_URL",
    ):
        assert name in result.stdout


def test_help_names_every_setting() -> None:
    text = " ".join(run("serve", "--help").stdout.split())
    for f in fields(Settings):
        if f.repr:
            assert f"OPENCDP_{f.name.upper()}" in text, f.name


def test_migrate_prints_the_schema_version(db: str) -> None:
    result = run("migrate", "--db", db)
    assert result.exit_code == 0, result.output
    assert int(result.stdout) >= 1


def test_create_prints_the_token_alone(db: str) -> None:
    create(db, "--all-accounts", "--all-brands", "--scope", "read,write")


def test_list_shows_the_token_without_its_secret(db: str) -> None:
    token, token_id = create(db, "--account", "web", "--brand", "shop", "--scope", "write")
    secret = token.split("_", 2)[2]
    result = run("tokens", "list", "--db", db)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "CLIENT",
        "ACCOUNTS",
        "BRANDS",
        "SCOPES",
        "CREATED",
        "REVOKED",
        "NAME",
    ]
    assert row.split()[:5] == [token_id, "acme", "web", "shop", "write"]
    assert row.split()[6] == "-"
    assert secret not in result.output


def test_list_as_json(db: str) -> None:
    token, token_id = create(
        db, "--account", "web,app", "--all-brands", "--scope", "read", "--name", "reports"
    )
    result = run("tokens", "list", "--json", "--db", db)
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    assert listed["id"] == token_id
    assert listed["client"] == "acme"
    assert listed["accounts"] == ["web", "app"]
    assert listed["brands"] is None
    assert listed["scopes"] == ["read"]
    assert listed["name"] == "reports"
    assert listed["revoked"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", listed["created"])
    assert token.split("_", 2)[2] not in result.stdout


def test_an_admin_token_can_be_created(db: str) -> None:
    _, token_id = create(db, "--account", "web", "--all-brands", "--scope", "admin,read")
    [listed] = json.loads(run("tokens", "list", "--json", "--db", db).stdout)
    assert (listed["id"], listed["scopes"]) == (token_id, ["admin", "read"])


def test_list_of_no_tokens(db: str) -> None:
    assert json.loads(run("tokens", "list", "--json", "--db", db).stdout) == []


def test_revoke(db: str) -> None:
    _, token_id = create(db, "--all-accounts", "--all-brands", "--scope", "write")
    result = run("tokens", "revoke", token_id, "--db", db)
    assert result.exit_code == 0, result.output
    [listed] = json.loads(run("tokens", "list", "--json", "--db", db).stdout)
    assert listed["revoked"] is not None
    again = run("tokens", "revoke", token_id, "--db", db)
    assert again.exit_code == 1


def test_revoking_an_unknown_token_fails_on_stderr(db: str) -> None:
    result = run("tokens", "revoke", "0123456789ab", "--db", db)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no active token" in result.stderr


def test_property_indexes_round_trip(db: str) -> None:
    def ok(*args: str) -> str:
        result = run("properties", *args, "--db", db)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert ok("index", "cart.coupon") == "indexed properties.cart.coupon\n"
    assert "already indexed" in ok("index", "cart.coupon")
    ok("index", "currency")
    listed = [line.split("\t") for line in ok("list").splitlines()]
    assert [path for path, _ in listed] == ["cart.coupon", "currency"]
    assert all(created.endswith("Z") for _, created in listed)
    assert ok("drop", "cart.coupon") == "dropped the index of properties.cart.coupon\n"
    again = run("properties", "drop", "cart.coupon", "--db", db)
    assert again.exit_code == 1 and "properties.cart.coupon is not indexed" in again.stderr
    assert ok("list").split("\t")[0] == "currency"


@pytest.mark.parametrize("path", ["a..b", "", ".a", 'a"b'])
def test_a_bad_property_path_is_a_usage_error(db: str, path: str) -> None:
    result = run("properties", "index", path, "--db", db)
    assert result.exit_code == 2
    assert f"properties.{path}: expected properties.<key>" in result.stderr


def test_the_database_comes_from_opencdp_db(db: str) -> None:
    result = run(
        "tokens",
        "create",
        "--client",
        "acme",
        "--all-accounts",
        "--all-brands",
        "--scope",
        "read",
        env={"OPENCDP_DB": db},
    )
    assert result.exit_code == 0, result.output
    assert len(json.loads(run("tokens", "list", "--json", "--db", db).stdout)) == 1


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--all-brands", "--scope", "read"], "--all-accounts"),
        (
            ["--account", "web", "--all-accounts", "--all-brands", "--scope", "read"],
            "--all-accounts",
        ),
        (["--all-accounts", "--scope", "read"], "--all-brands"),
        (["--all-accounts", "--brand", "b", "--all-brands", "--scope", "read"], "--all-brands"),
        (["--all-accounts", "--all-brands", "--scope", "root"], "root"),
        (["--all-accounts", "--all-brands"], "--scope"),
        (["--account", "bad/id", "--all-brands", "--scope", "read"], "account id"),
    ],
)
def test_bad_flags_are_usage_errors(db: str, args: list[str], complaint: str) -> None:
    result = run("tokens", "create", "--client", "acme", *args, "--db", db)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert complaint in result.stderr
    assert json.loads(run("tokens", "list", "--json", "--db", db).stdout) == []


def test_a_bad_client_id_is_a_usage_error(db: str) -> None:
    result = run(
        "tokens",
        "create",
        "--client",
        "a c",
        "--all-accounts",
        "--all-brands",
        "--scope",
        "read",
        "--db",
        db,
    )
    assert result.exit_code == 2
    assert "client id" in result.stderr


def test_an_unknown_database_url_is_a_usage_error() -> None:
    result = run("tokens", "list", "--db", "mysql://x")
    assert result.exit_code == 2
    assert "--db" in result.stderr


class UvicornRun:
    """Stands in for ``uvicorn.run``: records its arguments and the OPENCDP_* environment."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.env: dict[str, str] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))
        self.env = {k: v for k, v in os.environ.items() if k.startswith("OPENCDP_")}


@pytest.fixture
def uvicorn_run(monkeypatch: pytest.MonkeyPatch) -> UvicornRun:
    fake = UvicornRun()
    monkeypatch.setattr(uvicorn, "run", fake)
    return fake


def test_serve_migrates_exports_settings_and_runs_uvicorn(
    db: str, tmp_path: Path, uvicorn_run: UvicornRun
) -> None:
    result = run(
        "serve",
        "--db",
        db,
        "--port",
        "9123",
        "--workers",
        "2",
        "--burst",
        "50",
        env={"OPENCDP_RATE": "7.5", "OPENCDP_PORT": "9999"},
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.db").exists()  # migrated before serving
    [(args, kwargs)] = uvicorn_run.calls
    assert args == ("opencdp.app:app_from_environment",)
    assert kwargs["factory"] is True
    assert (kwargs["host"], kwargs["port"], kwargs["workers"]) == ("127.0.0.1", 9123, 2)
    assert kwargs["loop"] == "uvloop"
    assert kwargs["http"] == "opencdp.server:GuardedHttpProtocol"  # httptools, with limits
    assert kwargs["lifespan"] == "on"
    assert kwargs["access_log"] is False
    assert kwargs["timeout_graceful_shutdown"] == 10
    exported = Settings.from_env(uvicorn_run.env)
    assert (exported.db, exported.port, exported.workers) == (db, 9123, 2)
    assert (exported.rate, exported.burst, exported.redis_url) == (7.5, 50, None)


def test_serve_exports_the_abuse_limits(db: str, uvicorn_run: UvicornRun) -> None:
    limits = ["--read-timeout-ms", "750", "--header-timeout", "2.5", "--max-connections", "9"]
    assert run("serve", "--db", db, *limits).exit_code == 0
    exported = Settings.from_env(uvicorn_run.env)
    assert (exported.read_timeout_ms, exported.header_timeout, exported.max_connections) == (
        750, 2.5, 9
    )
    assert (exported.workspace_reads, exported.header_limit) == (2, 65536)  # defaults
    for flags in (["--read-timeout-ms", "0"], ["--header-timeout", "0"]):
        assert run("serve", "--db", db, *flags).exit_code == 2, flags


def test_serve_refuses_nonsense_settings(db: str, uvicorn_run: UvicornRun) -> None:
    for flags in (["--workers", "0"], ["--rate", "0"], ["--burst", "0"], ["--port", "x"]):
        result = run("serve", "--db", db, *flags)
        assert result.exit_code == 2, flags
    assert uvicorn_run.calls == []


def test_serve_leaves_the_environment_as_it_was(
    db: str, uvicorn_run: UvicornRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in this process, as an embedding program would (``CliRunner`` would hide it)."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENCDP_PORT", "8001")
    before = dict(os.environ)
    main.main(["serve", "--db", db, "--port", "9124", "--workers", "2"], standalone_mode=False)
    assert (uvicorn_run.env["OPENCDP_PORT"], uvicorn_run.env["OPENCDP_WORKERS"]) == ("9124", "2")
    assert dict(os.environ) == before


def test_demo_loads_a_workspace_a_token_can_read(db: str) -> None:
    result = run("demo", "--customers", "12", "--db", db)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()

    async def read() -> tuple[int, int]:
        store = open_store(db)
        await store.start()
        try:
            await TokenVerifier(store).authorize(token, DEMO_WORKSPACE, "read", unknown_status=401)
            profiles = await store.list_profiles(DEMO_WORKSPACE, ProfileQuery(size=100))
            events = await store.list_events(DEMO_WORKSPACE, EventQuery())
            return len(profiles.profiles), events.total
        finally:
            await store.stop()

    profiles, events = asyncio.run(read())
    assert profiles == 12  # every anonymous visitor was merged into the customer
    assert events >= 12 * 2  # at least one page and one identify each
