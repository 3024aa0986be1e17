"""``email:`` look-ups when many profiles share one email (more than SQLite's 500-arm
compound SELECT): pages of 100 profiles with a ``scrollId``, and every event found."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.models import BulkEvent, BulkProfile
from opencdp.store import Store, open_store
from tests.conftest import client_for
from tests.read_fixtures import T0, WS

pytestmark = pytest.mark.anyio
SHARED = "shared@x.com"
COUNT = 520
PATH = "/track/c1/a1/b1/v1/profiles"


def customers() -> list[BulkProfile]:
    shared = [
        BulkProfile(
            f"u{n}",
            {"email": SHARED, "n": n},
            T0 + n,
            [],
            [
                BulkEvent("page", T0 + 10 * n + i, T0 + 10 * n + i, {"action": "page", "n": n})
                for i in range(2)
            ],
        )
        for n in range(COUNT)
    ]
    alone = BulkProfile("alone", {"email": "alone@x.com"}, T0, [], [])
    return [*shared, alone]


@pytest.fixture
async def http(anyio_backend: str, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    store: Store = open_store(db_url)
    await store.bulk_load(WS, customers())
    await store.start()
    text, record = new_token("c1", ["a1"], ["b1"], ["read"], now=T0)
    await store.add_token(record)
    try:
        async with client_for(create_app(Settings(db=db_url), store)) as client:
            client.headers["auth-token"] = text
            yield client
    finally:
        await store.stop()


async def pages(http: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """Every page of an email look-up, following ``scrollId`` (at most 20 pages)."""
    answers: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    for _ in range(20):
        answer = await http.get(url, params=params)
        assert answer.status_code == 200, answer.text
        answers.append(answer.json())
        if "scrollId" not in answers[-1]:
            return answers
        params = {"scrollId": answers[-1]["scrollId"]}
    pytest.fail("the scroll did not end")


async def test_traits_come_a_hundred_profiles_at_a_time(http: httpx.AsyncClient) -> None:
    answers = await pages(http, f"{PATH}/email:{SHARED}/traits")
    assert [len(a["data"]) for a in answers] == [100] * 5 + [20]
    seen = [record["n"] for a in answers for record in a["data"]]
    assert seen == list(range(COUNT))  # each once, oldest first


async def test_meta_and_audiences_page_the_same_way(http: httpx.AsyncClient) -> None:
    meta = await pages(http, f"{PATH}/email:{SHARED}/meta")
    assert sum(len(a["data"]) for a in meta) == COUNT
    assert meta[0]["data"][0]["lastEvent"]["page"]["n"] == 0
    audiences = await pages(http, f"{PATH}/email:{SHARED}/audiences")
    assert len(audiences) == 6 and all(a["data"] == [] for a in audiences)


async def test_events_of_every_profile_sharing_the_email(http: httpx.AsyncClient) -> None:
    answer = await http.get(f"{PATH}/email:{SHARED}/events", params={"size": "100"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 2 * COUNT
    times = [event["eventTime"] for event in body["data"]]
    assert len(times) == 100 and times == sorted(times, reverse=True)
    assert body["data"][0]["rawData"]["n"] == COUNT - 1
    seen, params = len(body["data"]), {"scrollId": body["scrollId"]}
    for _ in range(20):
        page = (await http.get(f"{PATH}/email:{SHARED}/events", params=params)).json()
        if not page["data"]:
            break
        seen += len(page["data"])
        params = {"scrollId": page["scrollId"]}
    assert seen == 2 * COUNT


async def test_a_scroll_id_is_only_for_email_look_ups(http: httpx.AsyncClient) -> None:
    first = (await http.get(f"{PATH}/email:{SHARED}/traits")).json()
    scroll = {"scrollId": first["scrollId"]}
    answer = await http.get(f"{PATH}/userId:u1/traits", params=scroll)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith("scrollId:")
    other = await http.get(f"{PATH}/email:alone@x.com/traits", params=scroll)
    assert other.status_code == 400  # a cursor of another email is refused
    one = (await http.get(f"{PATH}/email:alone@x.com/traits")).json()
    assert len(one["data"]) == 1 and "scrollId" not in one
