"""Logs are JSON lines carrying the request id; no token ever reaches a log or an answer."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import msgspec
import pytest

from opencdp.app import create_app
from opencdp.auth import hash_secret, new_token
from opencdp.config import Settings
from opencdp.logs import JsonFormatter
from opencdp.models import Accepted, Call, TokenRecord, Workspace
from opencdp.store.sqlite.store import SQLiteStore
from tests.conftest import TRACK, client_for
from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio
INTERNAL = "sqlite3.OperationalError: disk I/O error at /srv/opencdp/secret.db"


class BrokenStore(SQLiteStore):
    """A real store whose writes fail with internal text (the 500 must not show it)."""

    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        if calls[0].user_id == "break":
            raise RuntimeError(INTERNAL)
        return await super().append_calls(workspace, calls)


# Secrets whose every part (between ``_`` and ``-``) is long and distinctive: finding
# any part in a log is a leak, never chance.
SECRETS = [
    "Qz7vRw2mXpLk-Hn4tYc8kLsWq_Bf6jWd3gNa9eTy",
    "Vb5nMc1xZaSd_Fg7hJk2LpOi-Uy3tRe4WqAsDfGh",
    "Pl9oKi8uJy7h-Gt6fRd5eSw4_Aq3zXc2vBn1MmKk",
    "Wd3sFr4eGt5y_Hu6jIk7oLp8-ZaQ1xSw2cDe3vFr",
    "Nh6bGv5cFx4d_Se3aWq2zXs1-EdCrFvTgByHnUjM",
]


def known_token(
    n: int, scopes: Sequence[str], client: str = "c1",
    accounts: tuple[str, ...] | None = None, brands: tuple[str, ...] | None = None,
    secret: str | None = None,
) -> tuple[str, TokenRecord]:
    """Token number ``n`` (id ``c0ffee00000n``, secret ``SECRETS[n]``) and its record."""
    token_id, secret = f"c0ffee{n:06d}", SECRETS[n] if secret is None else secret
    record = TokenRecord(token_id, hash_secret(secret), client, accounts, brands,
                         tuple(scopes), created_time=0)
    return f"ocdp_{token_id}_{secret}", record


def leaked(text: str, tokens: Sequence[str]) -> list[str]:
    """Which of each token's whole text, id, secret and parts of its secret ``text`` holds."""
    found = []
    for token in tokens:
        _, token_id, secret = token.split("_", 2)
        basic = base64.b64encode(f"{token}:".encode()).decode()
        for piece in [token, token_id, secret, basic, *re.split("[_-]", secret)]:
            if piece in text:
                found.append(piece)
    return found


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the ``opencdp`` loggers write, debug included, as the server formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("opencdp")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_no_token_in_logs_or_answers_and_no_internal_text_in_a_500(
    anyio_backend: str, tmp_path: Path, log_lines: io.StringIO
) -> None:
    store = BrokenStore(str(tmp_path / "opencdp.db"))
    settings = Settings(db=f"sqlite:///{tmp_path / 'opencdp.db'}", burst=30, rate=0.001)
    app = create_app(settings, store)
    await store.start()
    try:
        now = time.time_ns() // 10**6
        good, record = known_token(0, ("read", "write"))
        other, other_record = known_token(1, ("read",), client="elsewhere")
        revoked, revoked_record = known_token(2, ("write",))
        for each in (record, other_record, revoked_record):
            await store.add_token(each)
        await store.revoke_token(revoked_record.token_id, now)
        forged = known_token(0, (), secret=SECRETS[3])[0]  # a known id, another secret
        call = {"userId": "u1", "event": "E", "timestamp": "2020-01-01T00:00:00Z"}
        answers = []
        async with client_for(app) as client:
            for token in (good, other, revoked, forged, "ocdp_" + "x" * 40, good + " "):
                for path, body in ((f"{TRACK}/track", call), (f"{TRACK}/track", {"a": 1}),
                                   (f"{TRACK}/track", {**call, "userId": "break"})):
                    answers.append(await client.post(path, json=body,
                                                     headers={"auth-token": token}))
                answers.append(await client.get(f"{TRACK}/events", params={"auth-token": token},
                                                headers={"auth-token": token}))
                answers.append(await client.get(f"{TRACK}/profiles/userId:u1/meta",
                                                headers={"auth-token": token}))
            for _ in range(30):  # past the burst: 429s
                answers.append(await client.get(f"{TRACK}/events", headers={"auth-token": good}))
    finally:
        await store.stop()
    statuses = {a.status_code for a in answers}
    assert {200, 400, 401, 403, 429, 500} <= statuses, statuses
    logged = log_lines.getvalue()
    for text in [logged] + [a.text + str(a.headers) for a in answers]:
        assert not leaked(text, [good, other, revoked, forged])
    for answer in answers:
        if answer.status_code == 500:
            assert answer.json()["error"] == {"code": "internal_server_error",
                                              "message": "internal error"}
            assert "secret.db" not in answer.text and "sqlite3" not in answer.text
    assert INTERNAL in logged  # the operator still sees what went wrong


async def test_log_lines_are_json_with_the_request_id(
    anyio_backend: str, tmp_path: Path, log_lines: io.StringIO
) -> None:
    store = BrokenStore(str(tmp_path / "opencdp.db"))
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'opencdp.db'}"), store)
    await store.start()
    try:
        text, record = new_token("c1", None, None, ("write",), now=0)
        await store.add_token(record)
        call = {"userId": "break", "event": "E", "timestamp": "2020-01-01T00:00:00Z"}
        async with client_for(app) as client:
            failed = await client.post(f"{TRACK}/track", json=call,
                                       headers={"auth-token": text, "x-request-id": "req-42"})
            ok = await client.get("/healthz")
    finally:
        await store.stop()
    assert failed.status_code == 500
    entries = [msgspec.json.decode(line) for line in log_lines.getvalue().splitlines()]
    mine = [e for e in entries if e.get("requestId") == "req-42"]
    assert {e["level"] for e in mine} >= {"error", "debug"}  # the failure and the access line
    assert any("exception" in e and INTERNAL in e["exception"] for e in mine)
    access = [e for e in entries if e["logger"] == "opencdp.access"]
    assert any(e["requestId"] == ok.headers["x-request-id"] and "/healthz 200" in e["message"]
               for e in access)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)


LEVELS = ["trace", "debug", "info", "warning", "error", "critical"]


def add_tokens(db_path: Path, records: Sequence[TokenRecord], revoke: str) -> None:
    async def add() -> None:
        store = SQLiteStore(str(db_path))
        await store.start()
        try:
            for record in records:
                await store.add_token(record)
            await store.revoke_token(revoke, 1)
        finally:
            await store.stop()

    asyncio.run(add())


def send_every_token_shape(url: str, tokens: Sequence[str]) -> list[int]:
    """Each token where a client may put one: path, query, headers, Basic, body."""
    call = {"userId": "u1", "event": "E", "timestamp": "2020-01-01T00:00:00Z"}
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for token in tokens:
            basic = {"authorization": "Basic " + base64.b64encode(f"{token}:".encode()).decode()}
            answers = [
                client.get(f"/v1/projects/{token}/settings"),
                client.get(f"/v1/projects/%6F{token[1:]}/settings?x=%6F{token[1:]}"),
                client.get(f"{TRACK}/events", params={"auth-token": token},
                           headers={"auth-token": token}),
                client.get(f"{TRACK}/profiles/userId:{token}/traits",
                           headers={"auth-token": token}),
                client.post(f"{TRACK}/track", json=call, headers={"auth-token": token}),
                client.post("/v1/track", json=call, headers=basic),
                client.post("/v1/track", json={**call, "writeKey": token}),
                client.post("/v1/batch", json={"batch": [call], "writeKey": token},
                            headers={"authorization": f"Bearer {token}"}),
            ]
            statuses += [a.status_code for a in answers]
    return statuses


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_no_token_secret_in_a_real_servers_log_at_any_level(tmp_path: Path, level: str) -> None:
    segment, segment_record = known_token(0, ("write",), accounts=("a1",), brands=("b1",))
    reader, reader_record = known_token(1, ("read", "write"))
    revoked, revoked_record = known_token(2, ("write",), accounts=("a1",), brands=("b1",))
    tokens = [
        segment, reader, revoked,
        known_token(0, (), secret=SECRETS[3])[0],  # forged: a known id, another secret
        known_token(4, ())[0],  # well formed, unknown
        "ocdp_" + SECRETS[4][::-1],  # no id
        f"ocdp_c0ffee000001_{SECRETS[1][:12]}.{SECRETS[1][13:]}",  # a character no token has
    ]  # fmt: skip
    add_tokens(tmp_path / "opencdp.db", [segment_record, reader_record, revoked_record],
               revoked_record.token_id)
    log = tmp_path / "server.log"
    server = ServerProcess(f"sqlite:///{tmp_path / 'opencdp.db'}", log, OPENCDP_LOG_LEVEL=level)
    try:
        server.start()
        statuses = send_every_token_shape(server.url, tokens)
        assert server.terminate() == 0
    finally:
        server.stop()
    assert {200, 400, 401, 403} <= set(statuses), statuses
    logged = log.read_text()
    assert not leaked(logged, tokens)
    if level in ("trace", "debug"):  # the lines that held secrets are there, redacted
        assert "GET /v1/projects/[redacted]/settings 200" in logged
        assert f"GET {TRACK}/profiles/userId:[redacted]/traits 404" in logged
    if level == "trace":  # each request's raw path and query string
        assert "'raw_path': b'/v1/projects/[redacted]/settings'" in logged
        assert "'query_string': b'x=[redacted]'" in logged
        assert "'query_string': b'auth-token=[redacted]'" in logged


def test_extra_fields_are_written_and_redacted(log_lines: io.StringIO) -> None:
    token = known_token(0, ("write",))[0]
    logging.getLogger("opencdp.test").warning(
        "refused %s", token,
        extra={"reason": f"writeKey={token}", "headers": {"auth-token": token}, "count": 3},
    )  # fmt: skip
    [entry] = [msgspec.json.decode(line) for line in log_lines.getvalue().splitlines()]
    assert entry["message"] == "refused [redacted]" and entry["count"] == 3
    assert entry["reason"] == "writeKey=[redacted]"
    assert entry["headers"] == "{'auth-token': '[redacted]'}"
    assert not leaked(log_lines.getvalue(), [token])
