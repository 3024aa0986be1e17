"""Everyday CLI mistakes end in one ``Error:`` line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result

from opencdp.cli import main
from opencdp.config import Settings
from tests.backends import PG_ADMIN_URL

CLEAN_ENV: dict[str, str | None] = {f"OPENCDP_{f.name.upper()}": None for f in fields(Settings)}
TOKEN_ID = "0123456789ab"
# Every command that opens the database, with what it needs besides --db.
COMMANDS = [
    ["migrate"],
    ["serve", "--port", "0"],
    ["demo", "--customers", "1"],
    ["tokens", "create", "--client", "acme", "--all-accounts", "--all-brands", "--scope", "read"],
    ["tokens", "list"],
    ["tokens", "revoke", TOKEN_ID],
    ["properties", "index", "currency"],
    ["properties", "list"],
    ["properties", "drop", "currency"],
]
NAMES = [" ".join(c[:2]) for c in COMMANDS]


def run(*args: str, cwd: Path | None = None, **env: str) -> Result:
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, list(args), env={**CLEAN_ENV, **env})
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, list(args), env={**CLEAN_ENV, **env})
    finally:
        os.chdir(old)


def one_error_line(result: Result, status: int = 1) -> str:
    """The single ``Error:`` line of a failed command, after checking there is no traceback."""
    assert result.exit_code == status, (result.stdout, result.stderr)
    assert type(result.exception) is SystemExit, result.exception  # click's own exit, no crash
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert result.stdout == ""
    return errors[0]


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` must fail before it would start uvicorn."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("uvicorn started despite a bad database")

    monkeypatch.setattr(uvicorn, "run", refuse)


def with_user(url: str, user: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}@{rest.split('@', 1)[-1]}"


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
def test_postgres_unreachable(command: list[str]) -> None:
    line = one_error_line(run(*command, "--db", "postgresql://u:s3cret@127.0.0.1:1/none"))
    assert "127.0.0.1" in line and "s3cret" not in line and "u:***@" in line


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
def test_postgres_refuses_the_role(command: list[str]) -> None:
    line = one_error_line(run(*command, "--db", with_user(PG_ADMIN_URL, "no_such_role_ocdp")))
    assert "no_such_role_ocdp" in line


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
def test_a_file_that_is_not_a_database(command: list[str], tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 200)
    line = one_error_line(run(*command, "--db", f"sqlite:///{notes}"))
    assert "notes.txt" in line and "not a database" in line
    assert notes.read_text() == "shopping list\n" * 200  # left as it was


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
def test_a_path_that_cannot_be_written(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    line = one_error_line(run(*command, "--db", f"sqlite:///{tmp_path}/file/opencdp.db"))
    assert "is not a directory" in line
    line = one_error_line(run(*command, "--db", "sqlite:////proc/opencdp.db"))
    assert "/proc/opencdp.db" in line
    line = one_error_line(run(*command, "--db", f"sqlite:///{tmp_path}"))
    assert "not a file" in line


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
@pytest.mark.parametrize("url", ["sqlit:///x.db", "mysql://x", "opencdp.db", ""])
def test_a_typo_in_the_database_url(command: list[str], url: str, tmp_path: Path) -> None:
    line = one_error_line(run(*command, "--db", url, cwd=tmp_path), status=2)
    assert "--db" in line and "sqlite:///" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=NAMES)
def test_a_missing_directory_is_refused_unless_asked(command: list[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/opencdp.db"
    line = one_error_line(run(*command, "--db", url))
    assert f"{tmp_path}/data does not exist" in line and "--create-dirs" in line
    assert not (tmp_path / "data").exists()


def test_create_dirs_creates_them_by_flag_or_environment(tmp_path: Path) -> None:
    result = run("migrate", "--db", f"sqlite:///{tmp_path}/a/b/x.db", "--create-dirs")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "a" / "b" / "x.db").is_file()
    result = run("tokens", "list", "--db", f"sqlite:///{tmp_path}/c/x.db", OPENCDP_CREATE_DIRS="1")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "c" / "x.db").is_file()


def test_the_default_database_is_named_with_its_full_path(tmp_path: Path) -> None:
    first = run("migrate", cwd=tmp_path)
    assert first.exit_code == 0, first.stderr
    assert f"opencdp: database {tmp_path.resolve()}/opencdp.db (new, empty)" in first.stderr
    again = run("tokens", "list", cwd=tmp_path)
    assert again.exit_code == 0, again.stderr
    assert f"opencdp: database {tmp_path.resolve()}/opencdp.db\n" in again.stderr


def test_a_port_in_use_through_the_real_command(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "opencdp", "serve", "--port", str(port),
             "--db", f"sqlite:///{tmp_path}/x.db"],
            capture_output=True, text=True, timeout=60, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("OPENCDP_")},
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(is opencdp already running? choose another --port)"
    )
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_an_unresolvable_host(tmp_path: Path) -> None:
    result = run("serve", "--host", "no-such-host.invalid", "--port", "8999")
    assert "check --host" in one_error_line(result)
