"""A realistic sample workspace: shoppers who browse anonymously, sign up, buy, read email.

Everything goes through the same validation and store path as real tracking calls,
so the demo data behaves exactly like data sent over HTTP.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from opencdp.ingest import parse_call
from opencdp.models import Call, Workspace, format_millis

DEMO_WORKSPACE = Workspace("demo", "web", "shop")
DAY_MS = 86_400_000

_FIRST = ["Ada", "Ben", "Cleo", "Dev", "Esme", "Finn", "Gia", "Hal", "Isla", "Jon", "Kai", "Lena"]
_LAST = ["Smith", "Jones", "Patel", "Khan", "Brown", "Garcia", "Chen", "Novak", "Okafor"]
_PRODUCTS = [
    ("p-1001", "Trail running shoes", 89.0),
    ("p-1002", "Rain jacket", 120.0),
    ("p-1003", "Merino socks", 14.5),
    ("p-1004", "Headlamp", 32.0),
    ("p-1005", "Water bottle", 18.0),
]
_PAGES = ["/", "/new", "/sale", "/running", "/hiking", "/about"]
_CHANNELS = ["email", "sms", "push"]


def demo_calls(customers: int, *, now: int, seed: int = 7) -> Iterator[tuple[str, Call]]:
    """(action, call) for ``customers`` shoppers over the 30 days up to ``now``, none later.

    The calls and their ``messageId`` depend only on ``seed`` and the customer's number,
    not on ``now``: loading the demo again stores nothing twice (idempotency).
    """
    rnd = random.Random(seed)
    for n in range(customers):
        steps = list(_shopper(rnd, n))
        span = steps[-1][2]  # a week at most: the whole visit fits in the 30 days
        start = now - span - rnd.randrange(max(1, 30 * DAY_MS - span))
        for i, (action, body, offset) in enumerate(steps):
            body["timestamp"] = format_millis(start + offset)
            body["messageId"] = f"demo-{seed}-{n:06d}-{i:02d}"
            yield action, parse_call(action, body, received_time=now, client_ip="127.0.0.1")


def _shopper(rnd: random.Random, n: int) -> Iterator[tuple[str, dict[str, Any], int]]:
    """(action, body, milliseconds after the shopper's first visit) in time order."""
    user_id = f"cust-{n:06d}"
    anonymous_id = f"anon-{rnd.getrandbits(64):016x}"
    at = 0
    for _ in range(rnd.randrange(1, 5)):
        yield "page", _page(anonymous_id, rnd.choice(_PAGES)), at
        at += rnd.randrange(10_000, 600_000)
    yield "identify", _identify(rnd, n, user_id, anonymous_id), at
    for _ in range(rnd.randrange(0, 4)):
        at += rnd.randrange(60_000, DAY_MS)
        yield "track", _track(rnd, user_id), at
    if rnd.random() < 0.6:
        at += rnd.randrange(60_000, 3 * DAY_MS)
        yield "track", _email_opened(user_id), at


def _page(anonymous_id: str, path: str) -> dict[str, Any]:
    return {
        "anonymousId": anonymous_id,
        "name": path,
        "properties": {"path": path, "url": f"https://shop.example.com{path}"},
    }


def _identify(rnd: random.Random, n: int, user_id: str, anonymous_id: str) -> dict[str, Any]:
    first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
    channels = [{"channel": c, "subscribed": rnd.random() < 0.7} for c in _CHANNELS]
    return {
        "userId": user_id,
        "anonymousId": anonymous_id,
        "traits": {
            "firstName": first,
            "lastName": last,
            "email": f"{first}.{last}.{n}@example.com".lower(),
            "marketingPreferences": {"channels": channels},
        },
    }


def _track(rnd: random.Random, user_id: str) -> dict[str, Any]:
    sku, name, price = rnd.choice(_PRODUCTS)
    event = rnd.choice(["Product Viewed", "Product Added", "Order Completed"])
    return {
        "userId": user_id,
        "event": event,
        "properties": {"product_id": sku, "name": name, "price": price, "currency": "GBP"},
    }


def _email_opened(user_id: str) -> dict[str, Any]:
    return {
        "userId": user_id,
        "event": "Email Opened",
        "properties": {"campaign_id": "WELCOME", "email_subject": "Welcome to the shop"},
    }
