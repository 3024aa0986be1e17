"""Scroll cursors: round trip, and every kind of forgery or misuse is refused."""

from __future__ import annotations

import base64

import pytest

from opencdp import cursor
from opencdp.cursor import InvalidCursor
from opencdp.models import EventKey, EventQuery, ProfileKey, ProfileQuery, ProfileRef

KEY = b"k" * 32
QUERY = EventQuery(
    include=("page",),
    start=1,
    sort="asc",
    size=10,
    properties=(("a.b", "x"),),
    profile=ProfileRef("userId", "ABC/123"),
    after=EventKey(5, 6, "e-1"),
)


def test_round_trip() -> None:
    text = cursor.encode(QUERY, KEY, "events")
    assert cursor.decode(text, EventQuery, KEY, "events") == QUERY
    profiles = ProfileQuery("created", 5, ProfileKey(None, 7))
    assert cursor.decode(cursor.encode(profiles, KEY, "p"), ProfileQuery, KEY, "p") == profiles


def test_url_safe_and_opaque() -> None:
    text = cursor.encode(QUERY, KEY, "events")
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert "ABC/123" not in text


def test_every_flipped_byte_is_detected() -> None:
    token = bytearray(base64.urlsafe_b64decode(cursor.encode(QUERY, KEY, "c") + "=="))
    for index in range(len(token)):
        forged = bytearray(token)
        forged[index] ^= 0x01
        text = base64.urlsafe_b64encode(bytes(forged)).decode().rstrip("=")
        with pytest.raises(InvalidCursor):
            cursor.decode(text, EventQuery, KEY, "c")


@pytest.mark.parametrize("text", ["", "!!!", "abc", "A" * 5000, "a" * 40])
def test_garbage(text: str) -> None:
    with pytest.raises(InvalidCursor) as caught:
        cursor.decode(text, EventQuery, KEY, "c")
    assert caught.value.message.startswith("scrollId: ")
    assert caught.value.status == 400 and caught.value.code == "validation_error"


def test_other_context_or_key_or_type() -> None:
    text = cursor.encode(QUERY, KEY, "events\x00c1/a1/b1")
    with pytest.raises(InvalidCursor):
        cursor.decode(text, EventQuery, KEY, "events\x00c1/a1/b2")
    with pytest.raises(InvalidCursor):
        cursor.decode(text, EventQuery, b"x" * 32, "events\x00c1/a1/b1")
    with pytest.raises(InvalidCursor):
        cursor.decode(text, ProfileQuery, KEY, "events\x00c1/a1/b1")
