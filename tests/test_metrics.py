"""GET /metrics: Prometheus text with requests by route template, latencies, events
accepted / deduplicated / rejected, commit sizes, guardrail refusals, rate limiting."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.metrics import Metrics
from opencdp.ratelimit import RedisRateLimiter, limiter_for
from opencdp.store.base import Store
from tests.backends import make_store
from tests.conftest import TRACK, client_for

pytestmark = pytest.mark.anyio
TEMPLATE = "/track/{clientId}/{accountId}/{brandId}/v1"
WHEN = "2020-01-01T00:00:00Z"


@pytest.fixture
async def observed(anyio_backend: str, db_url: str) -> AsyncIterator[tuple[Starlette, Store]]:
    """An app whose metrics observe a store made after them, which the test starts after
    ``create_app`` (as ``app_from_environment`` and the lifespan do in a server)."""
    settings = Settings(db=db_url, burst=40, rate=0.001)
    limiter = limiter_for(settings)
    metrics = Metrics(limiter)
    store = make_store(db_url, observers=[metrics])
    yield create_app(settings, store, limiter, metrics), store
    await store.stop()


async def token_for(store: Store) -> str:
    text, record = new_token("c1", None, None, ("read", "write"), now=time.time_ns() // 10**6)
    await store.add_token(record)
    return text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    """The sample's value; a sample that is not there fails (it never reads as 0)."""
    key = (name, tuple(sorted(labels.items())))
    assert key in metrics, f"no sample {name}{labels} among {sorted(metrics)}"
    return metrics[key]


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


async def test_metrics_count_requests_events_commits_and_refusals(
    observed: tuple[Starlette, Store],
) -> None:
    app, store = observed
    await store.start()
    token = await token_for(store)
    async with client_for(app) as client:
        client.headers["auth-token"] = token
        track = {"userId": "u1", "event": "Viewed", "timestamp": WHEN, "messageId": "m1"}
        for _ in range(2):  # the second is a repeat
            assert (await client.post(f"{TRACK}/track", json=track)).status_code == 200
        assert (await client.post(f"{TRACK}/track", json={"userId": "u1"})).status_code == 400
        batch = {"batch": [{**track, "type": "track", "messageId": "m2"}, {"type": "track"}]}
        assert (await client.post(f"{TRACK}/batch", json=batch)).status_code == 200
        for user in ("u1", "u2"):  # a1 is u1's; linking it to u2 too is refused
            call: dict[str, Any] = {"userId": user, "anonymousId": "a1", "traits": {},
                                    "timestamp": WHEN}
            assert (await client.post(f"{TRACK}/identify", json=call)).status_code == 200
        assert (await client.get(f"{TRACK}/profiles/userId:u1/traits")).status_code == 200
        statuses = [(await client.get(f"{TRACK}/events")).status_code for _ in range(40)]
        assert 429 in statuses
        metrics = await scrape(client)
        text = (await client.get("/metrics")).text
    assert value(metrics, "opencdp_http_requests_total", route=f"{TEMPLATE}/track",
                 method="POST", status="200") == 2
    assert value(metrics, "opencdp_http_requests_total", route=f"{TEMPLATE}/track",
                 method="POST", status="400") == 1
    assert value(metrics, "opencdp_http_requests_total",
                 route=f"{TEMPLATE}/profiles/{{profileRef}}/traits",
                 method="GET", status="200") == 1
    assert "/c1/a1/b1/" not in text and "userId:u1" not in text  # templates, not raw paths
    assert value(metrics, "opencdp_http_request_duration_seconds_count",
                 route=f"{TEMPLATE}/batch", method="POST") == 1
    assert value(metrics, "opencdp_events_accepted_total") == 4  # m1, m2, two identifies
    assert value(metrics, "opencdp_events_deduplicated_total") == 1
    assert value(metrics, "opencdp_events_rejected_total") == 2  # the 400 and a batch item
    assert value(metrics, "opencdp_commit_batch_calls_count") >= 4
    assert value(metrics, "opencdp_commit_batch_calls_sum") == 5
    refused = [v for (name, _), v in metrics.items()
               if name == "opencdp_identity_links_refused_total"]
    assert sum(refused) == 1
    assert value(metrics, "opencdp_rate_limit_rejections_total") == statuses.count(429)
    assert value(metrics, "opencdp_ratelimit_redis_failures_total") == 0


async def test_rejected_counts_the_refused_items_of_every_batch_route(
    db_url: str, store: Store
) -> None:
    app = create_app(Settings(db=db_url), store)
    text, record = new_token("c1", ["a1"], ["b1"], ("write",), now=time.time_ns() // 10**6)
    await store.add_token(record)
    good = {"type": "track", "userId": "u1", "event": "Viewed", "timestamp": WHEN}
    bad = {"type": "track"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"{text}:".encode()).decode()}
    async with client_for(app) as client:
        client.headers["auth-token"] = text
        assert (await client.post(f"{TRACK}/batch", json={"batch": [bad, bad]})).status_code == 400
        assert (await client.post(f"{TRACK}/batch", json={"batch": [good]})).status_code == 200
        segment = await client.post("/v1/batch", json={"batch": [good, bad]}, headers=basic)
        assert segment.status_code == 200
        unknown = await client.post(f"{TRACK}/batch", json={"batch": [bad]},
                                    headers={"auth-token": "ocdp_000000000000_nope-nope-nope-nope"})
        assert unknown.status_code == 403
        metrics = await scrape(client)
    assert value(metrics, "opencdp_events_rejected_total") == 3  # two, none, one; not the 403


async def test_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await client.get(f"/no/such/{n}")).status_code == 404
    metrics = await scrape(client)
    assert value(metrics, "opencdp_http_requests_total", route="unmatched", method="GET",
                 status="404") == 3


async def test_redis_failures_of_the_rate_limiter_are_counted(db_url: str, store: Store) -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 100, 500)
    app = create_app(Settings(db=db_url), store, limiter)
    token = await token_for(store)
    async with client_for(app) as client:
        for _ in range(3):  # fails open
            response = await client.get(f"{TRACK}/events", headers={"auth-token": token})
            assert response.status_code == 200
        metrics = await scrape(client)
    await limiter.close()
    assert value(metrics, "opencdp_ratelimit_redis_failures_total") == 3


async def test_each_app_has_its_own_registry(settings: Settings, store: Store) -> None:
    first, second = create_app(settings, store), create_app(settings, store)
    async with client_for(first) as one, client_for(second) as two:
        await one.get("/healthz")
        assert value(await scrape(one), "opencdp_http_requests_total", route="/healthz",
                     method="GET", status="200") == 1
        healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
        assert ("opencdp_http_requests_total", healthz) not in await scrape(two)
