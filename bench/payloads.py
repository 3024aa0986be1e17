"""Request bodies, shaped like the seeds' examples, split where wrk's Lua fills in ids.

``*_parts()`` return ``(head, middle, tail)``: the body is ``head + <id> + middle +
<messageId> + tail``. The id is the ``userId`` (track, identify) or the
``anonymousId`` (page); identify's ``middle`` begins right after the ``userId`` value,
so an ``anonymousId`` member can be spliced in there.
"""

from __future__ import annotations

from typing import Any

import msgspec

_ID, _MID = "@@ID@@", "@@MID@@"
TIMESTAMP = "2019-11-28T14:31:58.596Z"
_PAGE = {
    "path": "/simplygosimplygo-pure-inulin/p-19868604-44086200",
    "referrer": "https://www.google.com/",
    "search": "",
    "title": "Simplygo/simplygo-pure-inulin | Fruugo",
    "url": "https://www.fruugo.co.uk/simplygosimplygo-pure-inulin/p-19868604-44086200",
}
_CONTEXT = {
    "page": _PAGE,
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_4) AppleWebKit/537.36 (KHTML,"
    " like Gecko) Chrome/78.0.3904.108 Safari/537.36",
    "library": {"name": "analytics.js", "version": "2.11.1"},
    "locale": "en-GB",
    "timezone": "Europe/London",
    "campaign": {"name": "winter-sale", "source": "newsletter", "medium": "email"},
    "screen": {"width": 1440, "height": 900, "density": 2},
}


def track_body() -> dict[str, Any]:
    """The seeds' "Product Added" example (about 1 KB as compact JSON)."""
    return {
        "userId": _ID,
        "messageId": _MID,
        "event": "Product Added",
        "context": _CONTEXT,
        "properties": {
            "name": "Simplygo/simplygo-pure-inulin",
            "product_id": "p-19868604-44086200",
            "price": "£11.99",
            "cart_id": "1234",
            "image_url": "https://img.fruugo.com/product/3/55/98531553_max.jpg",
            "quantity": "1",
            "url": "https://www.fruugo.co.uk/simplygosimplygo-pure-inulin/p-19868604-44086200",
        },
        "timestamp": TIMESTAMP,
    }


def identify_body() -> dict[str, Any]:
    return {
        "userId": _ID,
        "messageId": _MID,
        "event": "identify",
        "traits": {
            "clientReference": "ABC/123", "email": "email@example.com", "title": "Mr",
            "firstName": "Fred", "lastName": "Flintsonte", "phone": "+44123456789",
            "address": {"houseNumberOrName": "56", "addressLine1": "A Road",
                        "postalCode": "CH1ABC"},
        },
        "context": {"ip": "24.5.68.47", "userAgent": _CONTEXT["userAgent"]},
        "timestamp": TIMESTAMP,
    }


def page_body() -> dict[str, Any]:
    return {
        "anonymousId": _ID,
        "messageId": _MID,
        "event": "page",
        "properties": _PAGE,
        "context": _CONTEXT,
        "timestamp": TIMESTAMP,
    }


def split(body: dict[str, Any]) -> tuple[str, str, str]:
    text = msgspec.json.encode(body).decode()
    head, rest = text.split(_ID)
    middle, tail = rest.split(_MID)
    return head, middle, tail


def track_parts(*, batch_item: bool = False) -> tuple[str, str, str]:
    body = track_body()
    if batch_item:
        body = {"type": "track", **body}
    return split(body)


def identify_parts() -> tuple[str, str, str]:
    return split(identify_body())


def page_parts() -> tuple[str, str, str]:
    return split(page_body())


def example(parts: tuple[str, str, str], some_id: str = "u1", message_id: str = "m1") -> bytes:
    """One concrete body from ``parts`` (tests, and sizing)."""
    return (parts[0] + some_id + parts[1] + message_id + parts[2]).encode()
