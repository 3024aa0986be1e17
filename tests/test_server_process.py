"""The real server process: kill -9 durability, graceful SIGTERM, the CLI token round trip."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.paging import scroll_events
from tests.server_process import ServerProcess, cli, client_token

pytestmark = pytest.mark.slow

WORKSPACE = "/track/shop/web/uk/v1"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'opencdp.db'}"


@pytest.fixture
def token(db: str) -> str:
    return client_token(db, "shop")


@pytest.fixture
def server(db: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(db, tmp_path / "server.log")
    process.start()
    yield process
    process.stop()


def track_body(message_id: str) -> dict[str, Any]:
    return {
        "userId": f"user-{message_id.split('-')[0]}",
        "event": "Product Added",
        "properties": {"sku": message_id},
        "timestamp": "2026-01-02T03:04:05.678Z",
        "messageId": message_id,
    }


class Sender:
    """Threads that send track calls until stopped, recording what was acknowledged."""

    def __init__(self, url: str, token: str, threads: int = 4) -> None:
        self.url, self.token = url, token
        self.acked: dict[str, str] = {}
        self.unanswered: list[str] = []
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Sender:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def wait_for(self, acks: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < acks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.acked) >= acks, f"only {len(self.acked)} acknowledged"

    def _run(self, thread: int) -> None:
        with httpx.Client(base_url=self.url, headers={"auth-token": self.token}) as client:
            for n in itertools.count():
                if self.stopped.is_set():
                    return
                message_id = f"{thread}-{n}"
                try:
                    response = client.post(f"{WORKSPACE}/track", json=track_body(message_id))
                except httpx.TransportError:
                    with self._lock:
                        self.unanswered.append(message_id)
                    time.sleep(0.02)
                    continue
                if response.status_code == 200:
                    with self._lock:
                        self.acked[message_id] = response.json()["eventId"]


def stored_message_ids(url: str, token: str) -> list[str]:
    """Every stored event's messageId, by scrolling the whole events feed."""
    with httpx.Client(base_url=url, headers={"auth-token": token}) as client:
        return [event["rawData"]["messageId"] for event in scroll_events(client, WORKSPACE)]


def assert_stored_exactly_once(server: ServerProcess, token: str, acked: dict[str, str]) -> None:
    stored = stored_message_ids(server.url, token)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events were lost"
    with httpx.Client(base_url=server.url, headers={"auth-token": token}) as client:
        for message_id, event_id in list(acked.items())[:50]:
            event = client.get(f"{WORKSPACE}/events/{event_id}").json()
            assert event["rawData"]["messageId"] == message_id


def test_kill_9_loses_no_acknowledged_event(server: ServerProcess, token: str) -> None:
    with Sender(server.url, token) as sender:
        sender.wait_for(300)
        server.kill()
    acked = dict(sender.acked)
    server.start()
    assert_stored_exactly_once(server, token, acked)
    with httpx.Client(base_url=server.url, headers={"auth-token": token}) as client:
        for message_id in sender.unanswered + list(acked)[:20]:
            retried = client.post(f"{WORKSPACE}/track", json=track_body(message_id))
            assert retried.status_code == 200
            if message_id in acked:
                assert retried.json()["eventId"] == acked[message_id]
    stored = stored_message_ids(server.url, token)
    assert len(stored) == len(set(stored))


def test_sigterm_answers_in_flight_requests_and_exits_zero(
    server: ServerProcess, token: str
) -> None:
    with Sender(server.url, token) as sender:
        sender.wait_for(200)
        started = time.monotonic()
        assert server.terminate(timeout=15) == 0
        assert time.monotonic() - started < 15
    server.start()
    assert_stored_exactly_once(server, token, dict(sender.acked))


def test_cli_token_round_trip(server: ServerProcess, db: str) -> None:
    token = cli("tokens", "create", "--client", "shop", "--account", "web", "--brand", "uk",
                "--scope", "write", db=db).strip()
    body = {"userId": "ABC/123", "traits": {"email": "a@example.com"},
            "timestamp": "2019-11-18T13:30:11.444Z"}
    url = f"{server.url}{WORKSPACE}/identify"
    accepted = httpx.post(url, json=body, headers={"auth-token": token})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["success"] is True
    listed = cli("tokens", "list", db=db)
    token_id = token.split("_")[1]
    assert token_id in listed and token not in listed
    cli("tokens", "revoke", token_id, db=db)
    refused = httpx.post(url, json=body, headers={"auth-token": token})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "authentication_error"
