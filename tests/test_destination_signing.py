"""Deliveries are signed as Standard Webhooks; checked with the standard's own package."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from opencdp.destinations.signing import new_secret, secret_key, signed_headers

BODY = b'{"type":"event","timestamp":"2024-01-01T00:00:00.000Z","data":{"eventId":"e1"}}'


def test_a_receiver_using_the_standard_package_accepts_our_signature() -> None:
    secret = new_secret()
    headers = signed_headers(secret_key(secret), "0190-event", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, headers) == {
        "type": "event", "timestamp": "2024-01-01T00:00:00.000Z", "data": {"eventId": "e1"}
    }
    assert headers["webhook-id"] == "0190-event"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "change",
    [
        lambda h, b: (h, b.replace(b"e1", b"e2")),  # another body
        lambda h, b: ({**h, "webhook-id": "other"}, b),  # another event's id
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
    ],
)
def test_an_altered_delivery_fails_verification(change) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    headers, body = change(signed_headers(secret_key(secret), "id", int(time.time()), BODY), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_another_destinations_secret_does_not_verify() -> None:
    headers = signed_headers(secret_key(new_secret()), "id", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_secrets_are_random_32_byte_keys() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(secret_key(s)) == 32 for s in secrets)


@pytest.mark.parametrize(
    "bad",
    ["", "whsec_", "secret", "whsec_not base64!", "WHSEC_" + base64.b64encode(b"k").decode()],
)
def test_a_malformed_secret_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)
