"""The benchmark's pieces, in a tiny mode: they keep working, without timing anything.

``make bench`` is the measure (BENCHMARKS.md); these tests only check that its data
generator, bulk load, read scenarios, wrk scripts and table still run and agree with
the API.
"""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest

from bench import dataset, payloads, reads, run, wrk
from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.ingest import parse_batch, parse_call
from opencdp.store.base import Store
from tests.backends import make_store

pytestmark = pytest.mark.anyio
TINY = dataset.DatasetSize(profiles=300, events_per_profile=4)


async def test_bulk_load_then_every_read_scenario(db_url: str) -> None:
    store = make_store(db_url)
    await dataset.load(store, TINY)
    assert await dataset.index_properties(store) is not None
    assert await dataset.index_properties(store) is None  # already declared
    await store.start()
    try:
        latencies, follow = await reads.measure(store, db_url, TINY, samples=3, depth=500)
        assert follow.feed_events_per_s > 0 and follow.scroll_events_per_s > 0
        names = [latency.name for latency in latencies]
        assert "traits by email" in names and "scroll page at depth 500" in names
        assert all(x.samples == 3 and x.p99_ms >= x.p50_ms for x in latencies)
        await _check_loaded_data(store, db_url)
    finally:
        await store.stop()


async def _check_loaded_data(store: Store, db_url: str) -> None:
    """What the bulk load stored reads back through the API like tracked data."""
    text, record = new_token("bench", None, None, ("read",), now=int(time.time() * 1000))
    await store.add_token(record)
    app = create_app(Settings(db=db_url), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"auth-token": text}
    ) as client:
        user = dataset.user_id(7)
        path = f"{dataset.PREFIX}/profiles/userId:{user.replace('/', '%2F')}"
        traits = (await client.get(f"{path}/traits")).json()
        assert traits["email"] == dataset.email(7) and traits["externalId"] == user
        events = (await client.get(f"{path}/events")).json()
        assert events["total"] == TINY.events_per_profile
        assert {e["userId"] for e in events["data"]} == {user}
        meta = (await client.get(f"{path}/meta")).json()
        assert meta["lastActivityTime"] == max(e["eventTime"] for e in events["data"])
        feed = (await client.get(f"{dataset.PREFIX}/events", params={"size": "100"})).json()
        assert feed["total"] == TINY.events
        # bulk-loaded events have change feed positions too, each its own
        followed: list[str] = []
        params = {"size": "1000"}
        while True:
            page = (await client.get(f"{dataset.PREFIX}/events/feed", params=params)).json()
            if not page["data"]:
                break
            followed += [e["eventId"] for e in page["data"]]
            params["after"] = page["next"]
        assert len(set(followed)) == len(followed) == TINY.events


def test_wrk_bodies_are_valid_calls() -> None:
    track = msgspec.json.decode(payloads.example(payloads.track_parts()))
    assert 900 <= len(payloads.example(payloads.track_parts())) <= 1100  # ~1 KB, as specified
    assert parse_call("track", track, received_time=0, client_ip=None).message_id == "m1"
    page = msgspec.json.decode(payloads.example(payloads.page_parts()))
    assert parse_call("page", page, received_time=0, client_ip=None).anonymous_id == "u1"
    head, middle, tail = payloads.identify_parts()
    linked = (head + "u1" + '","anonymousId":"a1' + middle + "m1" + tail).encode()
    call = parse_call("identify", msgspec.json.decode(linked), received_time=0, client_ip=None)
    assert (call.user_id, call.anonymous_id) == ("u1", "a1")
    item = msgspec.json.decode(payloads.example(payloads.track_parts(batch_item=True)))
    calls, problems = parse_batch({"batch": [item]}, received_time=0, client_ip=None)
    assert problems == [] and calls[0] is not None


@pytest.mark.parametrize("kind", ["track", "batch", "mix"])
def test_wrk_scripts_are_made(kind: str) -> None:
    script = wrk.script(kind, dataset.PREFIX)
    assert "function request()" in script and "function done(" in script


def test_the_table_renders() -> None:
    timing = {"requests_per_s": 100.0, "events_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0,
              "wrk_cpu_percent": 10.0, "ratio": 0.5}
    results = {
        "writes": [{"scenario": "track", "connections": 64, "baseline": timing, "sqlite": timing}],
        "reads": {"sqlite": {"profiles": 1, "events": 2, "load_seconds": 1.0,
                             "load_events_per_s": 2,
                             "latencies": [{"name": "q", "p50_ms": 1.0, "p99_ms": 2.0,
                                            "samples": 5}]}},
    }
    text = run.table(results)
    assert "0.50×" in text and "| q | 1.00 | 2.00 | 5 |" in text


def test_a_write_figure_is_the_median_round_and_keeps_every_round() -> None:
    rounds = [{"requests_per_s": rps, "p99_ms": float(rps)} for rps in (300.0, 100.0, 200.0)]
    median = run._median(rounds)
    assert median["requests_per_s"] == 200.0 and median["p99_ms"] == 200.0
    assert median["rounds"] == [300.0, 100.0, 200.0]


def test_the_table_shows_each_rounds_ratio() -> None:
    timing = {"requests_per_s": 100.0, "events_per_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0,
              "wrk_cpu_percent": 10.0, "ratio": 0.5, "round_ratios": [0.4, 0.5, 0.6]}
    results = {"writes": [{"scenario": "track", "connections": 64, "baseline": timing,
                           "sqlite": timing}], "reads": {}}
    assert "0.50× (0.40, 0.50, 0.60)" in run.table(results)
