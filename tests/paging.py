"""Scroll loops in tests end: a cursor that never advances fails the test, never hangs it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from opencdp.models import MAX_TOTAL

SCROLL_SIZE = 100  # the largest page the Events API gives


def pages(items: int, size: int, slack: int = 2) -> Iterator[int]:
    """Page numbers for a loop scrolling ``items`` in pages of ``size``.

    It yields one number for each expected page, one for the empty page that ends the
    scroll, and ``slack`` more (for items written while scrolling); one more fails.
    """
    limit = -(-items // max(size, 1)) + 1 + slack
    yield from range(limit)
    raise AssertionError(
        f"the scroll did not end within {limit} pages of {size} for {items} items:"
        " its cursor does not advance"
    )


def scroll_events(client: httpx.Client, path: str, most: int = 0) -> list[dict[str, Any]]:
    """Every event of the workspace at ``path`` (``/track/c/a/b/v1``), oldest first, by
    scrolling the Events API. The first page's total bounds the scroll; past the capped
    total (``MAX_TOTAL``), ``most`` must bound it: how many events could be stored."""
    body = _get(client, f"{path}/events", {"sort": "asc", "size": SCROLL_SIZE})
    total = body["total"]
    if total >= MAX_TOTAL:
        assert most >= total, f"{total}+ events: pass how many could be stored"
        total = most
    found: list[dict[str, Any]] = []
    for _ in pages(total, SCROLL_SIZE):
        if not body["data"]:
            break
        found += body["data"]
        body = _get(client, f"{path}/events", {"scrollId": body["scrollId"]})
    return found


def _get(client: httpx.Client, url: str, params: dict[str, Any]) -> dict[str, Any]:
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
