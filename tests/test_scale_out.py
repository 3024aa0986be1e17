"""Two real server processes on one database behave as one service."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencdp.traits import merge_traits
from tests.backends import STORES, postgres_schema, redis_or_skip, store_url
from tests.server_process import ServerProcess, client_token

pytestmark = pytest.mark.slow

WORKSPACE = "/track/shop/web/uk/v1"
USERS = [f"user-{n}" for n in range(8)]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def start_two(url: str, tmp_path: Path, **env: str) -> list[ServerProcess]:
    servers = [ServerProcess(url, tmp_path / f"server-{n}.log", **env) for n in range(2)]
    for server in servers:
        server.start()
    return servers


def workload(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Identifies with conflicting traits, anonymous pages, merging identifies, tracks."""
    rnd = random.Random(seed)
    calls: list[tuple[str, dict[str, Any]]] = []
    for n, user in enumerate(USERS):
        for k in range(6):
            calls.append(("identify", {
                "userId": user,
                "traits": {"plan": rnd.choice(["free", "pro", "team"]), f"k{k}": k,
                           "email": f"{user}@example.com"},
                "timestamp": f"2026-01-01T00:{n:02d}:{rnd.randrange(60):02d}.{k:03d}Z",
            }))
        for a in range(3):
            anon = f"anon-{n}-{a}"
            calls.append(("page", {"anonymousId": anon, "timestamp": "2026-01-02T00:00:00Z"}))
            calls.append(("identify", {"userId": user, "anonymousId": anon, "traits": {},
                                       "timestamp": "2026-01-02T00:00:01Z"}))
        calls += [("track", {"userId": user, "event": "Order Completed",
                             "timestamp": f"2026-01-03T00:00:{t:02d}Z"}) for t in range(4)]
    rnd.shuffle(calls)
    for index, (_, body) in enumerate(calls):
        body["messageId"] = f"m-{index}"
    return calls


def expected_traits(calls: list[tuple[str, dict[str, Any]]], user: str) -> dict[str, Any]:
    traits: dict[str, Any] = {}
    stamps: dict[str, list[int]] = {}
    mine = [b for a, b in calls if a == "identify" and b["userId"] == user]
    for body in sorted(mine, key=lambda b: str(b["timestamp"])):
        merge_traits(traits, stamps, body["traits"], [0, 0])
    return traits


def send_all(servers: list[ServerProcess], token: str, calls: list[tuple[str, Any]]) -> None:
    """Four threads send every call, each to a random server; a fifth of them to both."""
    rnd = random.Random(7)
    plan = [(action, body, rnd.random() < 0.2, rnd.randrange(2)) for action, body in calls]
    errors: list[str] = []

    def run(part: list[tuple[str, dict[str, Any], bool, int]]) -> None:
        clients = [httpx.Client(base_url=s.url, headers={"auth-token": token}) for s in servers]
        for action, body, twice, first in part:
            targets = [clients[first], clients[1 - first]] if twice else [clients[first]]
            for client in targets:
                response = client.post(f"{WORKSPACE}/{action}", json=body)
                if response.status_code != 200:
                    errors.append(response.text)
        for client in clients:
            client.close()

    threads = [threading.Thread(target=run, args=(plan[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:3]


@pytest.fixture(params=STORES)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as url:
        yield url


def test_two_processes_on_one_database_act_as_one(shared_url: str, tmp_path: Path) -> None:
    """Two processes on one PostgreSQL (or, slower but correct, one SQLite file)."""
    token = client_token(shared_url, "shop")
    servers = start_two(shared_url, tmp_path)
    try:
        calls = workload(seed=3)
        send_all(servers, token, calls)
        reader = httpx.Client(base_url=servers[0].url, headers={"auth-token": token})
        feed = reader.get(f"{WORKSPACE}/events", params={"size": 1}).json()
        assert feed["total"] == len(calls)
        listed = reader.get(f"{WORKSPACE}/profiles", params={"size": 100}).json()["data"]
        assert sorted(p["externalId"] for p in listed) == sorted(USERS)
        for n, user in enumerate(USERS):
            traits = reader.get(f"{WORKSPACE}/profiles/userId:{user}/traits").json()
            assert {k: v for k, v in traits.items() if k not in ("id", "externalId")} == (
                expected_traits(calls, user)
            )
            meta = reader.get(f"{WORKSPACE}/profiles/userId:{user}/meta").json()
            assert sorted(meta["anonymousIds"]) == [f"anon-{n}-{a}" for a in range(3)]
            events = reader.get(f"{WORKSPACE}/profiles/userId:{user}/events").json()
            assert events["total"] == 6 + 3 + 3 + 4
        reader.close()
    finally:
        for server in servers:
            server.stop()


def test_redis_bucket_limits_the_sum_of_two_processes(pg_url: str, tmp_path: Path) -> None:
    redis_url = redis_or_skip()
    token = client_token(pg_url, "shop", "write")
    servers = start_two(
        pg_url, tmp_path, OPENCDP_REDIS_URL=redis_url, OPENCDP_RATE="1", OPENCDP_BURST="10"
    )
    try:
        statuses = []
        body = {"userId": "u", "event": "Ping", "timestamp": "2026-01-01T00:00:00Z"}
        for n in range(30):
            url = f"{servers[n % 2].url}{WORKSPACE}/track"
            statuses.append(httpx.post(url, json=body, headers={"auth-token": token}).status_code)
        accepted = statuses.count(200)
        assert 10 <= accepted <= 13, statuses  # the burst, plus at most a few refilled
        assert statuses.count(429) == 30 - accepted
    finally:
        for server in servers:
            server.stop()
