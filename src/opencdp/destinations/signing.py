"""Standard Webhooks signatures: how a receiver knows a delivery came from us, unaltered.

A destination's secret is ``whsec_`` followed by the base64 of 32 random bytes; those
bytes are the HMAC-SHA256 key. Each attempt carries three headers: ``webhook-id`` (the
eventId, the same on every attempt so a receiver can drop repeats),
``webhook-timestamp`` (the attempt's Unix time in seconds, which receivers check
against replays) and ``webhook-signature``: ``v1,`` and the base64 of the HMAC of
``{webhook-id}.{webhook-timestamp}.{body}``. Any library of that standard verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
_KEY_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret, to be shown once to the destination's owner."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is base64 after its prefix") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value of one attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one attempt: the standard's three and the JSON content type."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, webhook_id, timestamp, body),
    }
