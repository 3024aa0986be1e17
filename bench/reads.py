"""Read latency at scale, measured in-process: the app and the store, through httpx.

Each request goes through the whole ASGI app (routing, token check, rate limit,
parsing, the store's query, JSON) via ``httpx.ASGITransport``, one at a time, so
the figures are the service's own latency without a network or a load generator.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from bench import dataset
from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from opencdp.store.base import Store

PREFIX = dataset.PREFIX
DAY_MS = 24 * 3600 * 1000
# A slow query stops after this long (with at least MIN_SAMPLES): the run stays bounded.
BUDGET_SECONDS = 20.0
MIN_SAMPLES = 3


@dataclass
class Latency:
    name: str
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarise(name: str, seconds: list[float]) -> Latency:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Latency(
        name, len(ordered), round(statistics.median(ordered) * 1000, 3),
        round(p99 * 1000, 3), round(ordered[-1] * 1000, 3),
    )


async def measure(
    store: Store,
    db_url: str,
    size: dataset.DatasetSize,
    samples: int,
    depth: int,
    budget: float = BUDGET_SECONDS,
) -> tuple[list[Latency], Following]:
    """Every read scenario against a started store holding ``dataset`` of ``size``, and
    how fast a consumer can follow its events."""
    text, record = new_token("bench", None, None, ("read",), now=int(time.time() * 1000))
    await store.add_token(record)
    app = create_app(Settings(db=db_url, rate=1e9, burst=10**9), store)
    transport = httpx.ASGITransport(app=app)
    headers = {"auth-token": text}
    client = httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers)
    async with client:
        latencies = await _scenarios(client, size, samples, depth, budget)
        return latencies, await following(client, budget)


async def _scenarios(
    client: httpx.AsyncClient,
    size: dataset.DatasetSize,
    samples: int,
    depth: int,
    budget: float,
) -> list[Latency]:
    rng = random.Random(11)

    def someone() -> int:
        return rng.randrange(size.profiles)

    def window() -> dict[str, str]:
        start = rng.randrange(dataset.START_MS, dataset.END_MS - DAY_MS)
        return {"start": _iso(start), "end": _iso(start + DAY_MS)}

    scenarios: list[tuple[str, Callable[[], tuple[str, dict[str, str]]]]] = [
        ("traits by userId", lambda: (_profile(dataset.user_id(someone()), "traits"), {})),
        ("traits by email", lambda: (_profile_email(dataset.email(someone()), "traits"), {})),
        ("profile's events", lambda: (_profile(dataset.user_id(someone()), "events"), {})),
        ("events feed", lambda: ("/events", {})),
        ("feed include=order_completed", lambda: ("/events", {"include": "order_completed"})),
        ("feed include two actions",
         lambda: ("/events", {"include": "order_completed,email_opened"})),
        ("feed exclude=product_viewed", lambda: ("/events", {"exclude": "product_viewed"})),
        ("feed time window (1 day)", lambda: ("/events", window())),
        ("feed properties.currency=GBP (indexed)",
         lambda: ("/events", {"properties.currency": "GBP"})),
        ("feed properties.category (3%, indexed)",
         lambda: ("/events", {"properties.category": rng.choice(dataset.CATEGORIES)})),
        ("feed properties.quantity=1 (not indexed)",
         lambda: ("/events", {"properties.quantity": "1"})),
    ]
    results = []
    for name, make in scenarios:
        results.append(await _timed(client, name, samples, budget, make))
    results += await _scroll(client, samples, depth, budget)
    return results


def _profile(user_id: str, what: str) -> str:
    return f"/profiles/userId:{httpx.URL(path=user_id).raw_path.decode()}/{what}"


def _profile_email(email: str, what: str) -> str:
    return f"/profiles/email:{email}/{what}"


async def _timed(
    client: httpx.AsyncClient,
    name: str,
    samples: int,
    budget: float,
    make: Callable[[], tuple[str, dict[str, str]]],
) -> Latency:
    seconds: list[float] = []
    for _ in range(min(20, samples // 10 + 1)):  # warm-up: not counted
        path, params = make()
        await _get(client, PREFIX + path, params)
    deadline = time.perf_counter() + budget
    while len(seconds) < samples and (len(seconds) < MIN_SAMPLES or time.perf_counter() < deadline):
        path, params = make()
        started = time.perf_counter()
        await _get(client, PREFIX + path, params)
        seconds.append(time.perf_counter() - started)
    return summarise(name, seconds)


async def _get(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> httpx.Response:
    response = await client.get(path, params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} {params}: {response.status_code} {response.text[:200]}")
    return response


async def _scroll(
    client: httpx.AsyncClient, samples: int, depth: int, budget: float
) -> list[Latency]:
    """A scroll page right after the first page, and one ``depth`` events further in."""
    first = (await _get(client, PREFIX + "/events", {"size": "100"})).json()
    shallow = first["scrollId"]
    cursor = shallow
    for _ in range(depth // 100):
        page = (await _get(client, PREFIX + "/events", {"scrollId": cursor})).json()
        if not page["data"]:
            raise RuntimeError(f"the scroll ended before depth {depth}")
        cursor = page["scrollId"]
    results = []
    named = [("scroll page at depth 1", shallow), (f"scroll page at depth {depth:,}", cursor)]
    for name, scroll_id in named:
        def same(scroll_id: str = scroll_id) -> tuple[str, dict[str, str]]:
            return "/events", {"scrollId": scroll_id}

        results.append(await _timed(client, name, samples, budget, same))
    return results


@dataclass
class Following:
    """How fast a consumer can follow the workspace's events from the oldest on."""

    feed_events_per_s: float  # the change feed, pages of FEED_PAGE
    scroll_events_per_s: float  # the same-run baseline: the Events API scroll, oldest first
    events: int  # read by each, at most

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


FEED_PAGE = 1000
#: The next request's parameters, from this one's and its answer.
Step = Callable[[dict[str, str], dict[str, object]], dict[str, str]]
#: Events each consumer reads (or fewer, when the budget ends first).
FOLLOW_EVENTS = 200_000


async def following(client: httpx.AsyncClient, budget: float) -> Following:
    """Events/s through the whole app for a consumer following the change feed, and for
    one paging the Events API oldest first with ``scrollId`` (what a consumer had
    before the feed), in the same run."""

    async def rate(path: str, first: dict[str, str], step: Step) -> float:
        params, read = first, 0
        started = time.perf_counter()
        while read < FOLLOW_EVENTS and time.perf_counter() - started < budget:
            page = (await _get(client, PREFIX + path, params)).json()
            if not page["data"]:
                break
            read += len(page["data"])
            params = step(params, page)
        return round(read / (time.perf_counter() - started))

    feed = await rate(
        "/events/feed", {"size": str(FEED_PAGE)},
        lambda params, page: {**params, "after": str(page["next"])},
    )
    scroll = await rate(
        "/events", {"sort": "asc", "size": "100"},
        lambda _, page: {"scrollId": str(page["scrollId"])},
    )
    return Following(feed, scroll, FOLLOW_EVENTS)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
