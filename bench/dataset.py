"""The benchmark's synthetic workspace: N customers with M events each, deterministic.

Loaded through ``Store.bulk_load`` (not HTTP). Events are shaped like the seeds'
examples (track with ``properties`` and ``context``, page, identify), spread over one
year, so the read benchmark has realistic index shapes: actions of very different
frequency, a property present on every track event (``currency``) and one that picks
about 3% of all events (``category``). After the load both are declared as property
indexes, as an operator would (``opencdp properties index``); ``quantity`` (on every
track event too) is left undeclared, to measure a filter that scans.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opencdp.models import BulkEvent, BulkProfile, Workspace
from opencdp.store.base import Store

WORKSPACE = Workspace("bench", "web", "shop")
PREFIX = "/track/bench/web/shop/v1"  # the workspace's API paths
YEAR_MS = 365 * 24 * 3600 * 1000
END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: every generated event is before it
START_MS = END_MS - YEAR_MS
CATEGORIES = [f"cat-{n:02d}" for n in range(20)]
INDEXED_PROPERTIES = ("currency", "category")
# (call type, event name or None, weight)
ACTIONS: list[tuple[str, str | None, int]] = [
    ("track", "Product Viewed", 30),
    ("track", "Product Added", 15),
    ("track", "Email Opened", 10),
    ("track", "Order Completed", 5),
    ("page", None, 30),
    ("identify", None, 10),
]


def user_id(n: int) -> str:
    return f"user-{n:07d}/web"


def email(n: int) -> str:
    return f"customer{n}@example.com"


@dataclass(frozen=True)
class DatasetSize:
    profiles: int
    events_per_profile: int

    @property
    def events(self) -> int:
        return self.profiles * self.events_per_profile


def profiles(size: DatasetSize, seed: int = 7) -> Iterator[BulkProfile]:
    """The customers, in creation order; ``user_id(n)`` and ``email(n)`` name the n-th."""
    rng = random.Random(seed)
    weights = [w for _, _, w in ACTIONS]
    for n in range(size.profiles):
        created = START_MS + n * (YEAR_MS // (4 * max(size.profiles, 1)))
        uid = user_id(n)
        traits = {
            "email": email(n), "firstName": f"First{n}", "lastName": f"Last{n % 997}",
            "plan": ("free", "pro", "team")[n % 3], "city": f"City {n % 50}",
            "clientReference": uid,
        }
        anonymous_id = f"anon-{n:07d}-{rng.getrandbits(32):08x}"
        kinds = rng.choices(ACTIONS, weights, k=size.events_per_profile)
        times = sorted(rng.randrange(created, END_MS) for _ in kinds)
        events = [
            _event(rng, uid, anonymous_id, kind, name, when, traits)
            for (kind, name, _), when in zip(kinds, times, strict=True)
        ]
        yield BulkProfile(uid, traits, created, [anonymous_id], events)


def _event(
    rng: random.Random,
    uid: str,
    anonymous_id: str,
    kind: str,
    name: str | None,
    when: int,
    traits: dict[str, Any],
) -> BulkEvent:
    stamp = _iso(when)
    raw: dict[str, Any] = {"action": kind, "userId": uid, "anonymousId": anonymous_id}
    if kind == "identify":
        raw.update(event="identify", traits=traits)
        action = "identify"
    elif kind == "page":
        path = f"/products/p-{rng.randrange(100_000):05d}"
        raw.update(event="page", properties={"path": path, "title": "Product page"})
        action = "page"
    else:
        assert name is not None
        product = f"p-{rng.randrange(100_000):05d}"
        raw.update(event=name, properties={
            "product_id": product, "name": f"Product {product}", "price": "11.99",
            "currency": "GBP", "category": rng.choice(CATEGORIES), "quantity": "1",
        })
        action = name.lower().replace(" ", "_")
    raw["context"] = {"ip": "24.5.68.47", "userAgent": "Mozilla/5.0 (Macintosh) Chrome/78.0"}
    raw["timestamp"] = stamp
    return BulkEvent(action, when, when + rng.randrange(5000), raw)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


async def load(store: Store, size: DatasetSize) -> float:
    """Bulk-load the dataset into a store that is not started; seconds taken."""
    started = time.perf_counter()
    gc.disable()  # millions of young containers: collections would cost more than the load
    try:
        await store.bulk_load(WORKSPACE, profiles(size))
    finally:
        gc.enable()
    return time.perf_counter() - started


async def index_properties(store: Store) -> float | None:
    """Declare ``INDEXED_PROPERTIES``; seconds taken, None when all already were."""
    started = time.perf_counter()
    built = [await store.index_property(path) for path in INDEXED_PROPERTIES]
    return time.perf_counter() - started if any(built) else None
