"""Opaque, tamper-evident scroll cursors (``scrollId``): encoded and decoded here only.

A cursor is ``base64url(msgpack(payload) + mac)`` without padding, where ``mac`` is the
first 16 bytes of ``HMAC-SHA256(key, context + 0x00 + msgpack(payload))``. The key is
the database's own (``Store.cursor_secret``), so every process on one database accepts
the others' cursors. ``context`` names where the cursor was issued (API, workspace,
profile): a cursor from another workspace or query fails the check as a forged one does.
The server keeps no state: the payload holds the query and the keyset position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, TypeVar

import msgspec

from opencdp.errors import ValidationFailed

T = TypeVar("T")

_MAC_SIZE = 16
_MAX_LENGTH = 4096


class InvalidCursor(ValidationFailed):
    def __init__(self) -> None:
        super().__init__("scrollId: not a scroll id issued for this query")


def encode(payload: Any, key: bytes, context: str) -> str:
    """The cursor for ``payload`` (anything msgspec encodes), bound to ``context``."""
    body = msgspec.msgpack.encode(payload)
    token = body + _mac(key, context, body)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def decode(text: str, kind: type[T], key: bytes, context: str) -> T:
    """The payload of a cursor made by ``encode`` with the same key and context.

    Raises ``InvalidCursor`` for anything else: garbled, altered, or issued elsewhere.
    """
    if not text or len(text) > _MAX_LENGTH:
        raise InvalidCursor()
    try:
        token = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor() from exc
    body, mac = token[:-_MAC_SIZE], token[-_MAC_SIZE:]
    if len(token) <= _MAC_SIZE or not hmac.compare_digest(mac, _mac(key, context, body)):
        raise InvalidCursor()
    try:
        return msgspec.msgpack.decode(body, type=kind)
    except msgspec.DecodeError as exc:  # signed by us, but for another payload type
        raise InvalidCursor() from exc


def _mac(key: bytes, context: str, body: bytes) -> bytes:
    message = context.encode("utf-8") + b"\x00" + body
    return hmac.new(key, message, hashlib.sha256).digest()[:_MAC_SIZE]
