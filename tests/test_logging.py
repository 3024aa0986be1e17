"""Logs are JSON lines carrying the request id; no token ever reaches a log or an answer."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.logs import JsonFormatter
from opencdp.models import Accepted, Call, Workspace
from opencdp.store.sqlite import SQLiteStore
from tests.conftest import TRACK, client_for

pytestmark = pytest.mark.anyio
INTERNAL = "sqlite3.OperationalError: disk I/O error at /srv/opencdp/secret.db"


class BrokenStore(SQLiteStore):
    """A real store whose writes fail with internal text (the 500 must not show it)."""

    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        if calls[0].user_id == "break":
            raise RuntimeError(INTERNAL)
        return await super().append_calls(workspace, calls)


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
        good, record = new_token("c1", None, None, ("read", "write"), now=now)
        other, other_record = new_token("elsewhere", None, None, ("read",), now=now)
        revoked, revoked_record = new_token("c1", None, None, ("write",), now=now)
        for each in (record, other_record, revoked_record):
            await store.add_token(each)
        await store.revoke_token(revoked_record.token_id, now)
        forged = good[:-4] + "AAAA"
        secrets = [good, other, revoked, forged, good.split("_")[-1]]
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
        for secret in secrets:
            assert secret not in text
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
