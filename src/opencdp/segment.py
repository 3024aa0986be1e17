"""Segment's message rules (SPEC §8), as pure functions: a Segment message → a ``Call``.

Segment's and RudderStack's clients send messages that differ from the native
tracking calls (SPEC §4) in a few ways. Each message is first translated into the
native call shape (``to_native``), then validated by ``ingest`` like any other call,
so both APIs share one set of field rules, messages and idempotency (``messageId``).

What the translation does, following Segment's spec:

- ``writeKey`` (the token) is dropped: it never reaches ``rawData``.
- ``timestamp`` is optional. Without it, ``originalTimestamp`` (some clients send
  only that) is the call's time, and is skew-corrected with ``sentAt`` like any
  timestamp (Segment's ``receivedAt − (sentAt − originalTimestamp)``). Without
  either, the call happened when it was sent: its ``sentAt`` (or the batch's), which
  the skew correction turns into the receive time; with no ``sentAt`` either, the
  receive time. The time used is written to ``rawData.timestamp``.
- An identify's traits are ``context.traits`` merged with top-level ``traits``
  (top-level wins; RudderStack's SDK sends only ``context.traits``); neither is
  required. An identify may name only an ``anonymousId``: its traits go to that
  anonymous profile.
- ``traits`` / ``properties`` are optional on every call; ``group`` calls become
  events (eventAction ``group``) whose traits stay on the event.

The shapes the OpenAPI document shows for these paths (``MESSAGES``, ``SegmentBatch``)
are the native calls' (``opencdp.calls``) with those differences, derived, not rewritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec

from opencdp import ingest
from opencdp.calls import CALL_TYPES, CALLS, Batch, CallBody, Id, Object, Time, Traits, batch_items
from opencdp.identity import is_placeholder
from opencdp.models import BatchItemError, Call, format_millis

#: ``/v1/<letter>``: the short paths analytics.js posts single calls to.
SHORT_PATHS = {
    "i": "identify",
    "t": "track",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
}
_BORROWED = "opencdp.borrowed"  # marks an anonymous identify while ingest validates it


def parse_message(
    kind: str, body: dict[str, Any], *, received_time: int, client_ip: str | None
) -> Call:
    """Validate one Segment message of type ``kind`` (``/v1/track`` and friends)."""
    message = _borrow_user_id(kind, to_native(kind, body, received_time=received_time))
    call = ingest.parse_call(kind, message, received_time=received_time, client_ip=client_ip)
    return _give_back(call, message)


def parse_messages(
    body: dict[str, Any], *, received_time: int, client_ip: str | None
) -> tuple[list[Call | None], list[BatchItemError]]:
    """Validate a Segment ``batch`` body: one ``Call`` or ``None`` (and an error) per item."""
    native = {key: value for key, value in body.items() if key != "writeKey"}
    items = body.get("batch")
    if isinstance(items, list):
        sent_at = body.get("sentAt")
        native["batch"] = [_native_item(item, received_time, sent_at) for item in items]
    calls, problems = ingest.parse_batch(native, received_time=received_time, client_ip=client_ip)
    messages = native.get("batch") or []
    given = [None if c is None else _give_back(c, m) for c, m in zip(calls, messages, strict=True)]
    return given, problems


def to_native(
    kind: str, message: dict[str, Any], *, received_time: int, batch_sent_at: Any = None
) -> dict[str, Any]:
    """The native call body for a Segment message (a copy; the message is not changed)."""
    native = {key: value for key, value in message.items() if key != "writeKey"}
    if native.get("timestamp") is None:
        native["timestamp"] = _default_timestamp(native, received_time, batch_sent_at)
    if kind == "identify":
        traits = _identify_traits(native)
        if traits is not None:
            native["traits"] = traits
    return native


def project_settings(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """What analytics.js loads from ``{cdnURL}/v1/projects/{writeKey}/settings``.

    Only the ``Segment.io`` destination (opencdp itself): no device-mode integrations,
    no remote plugins, and no metrics reporting to Segment (``sampleRate`` 0).
    """
    return {
        "integrations": {
            "Segment.io": {"apiKey": write_key, "apiHost": f"{api_host}/v1", "protocol": protocol}
        },
        "plan": {},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def _native_item(item: Any, received_time: int, batch_sent_at: Any) -> Any:
    """A batch item in native shape; anything that is not a typed object is left to ingest."""
    if not isinstance(item, dict) or item.get("type") not in CALL_TYPES:
        return item
    kind = item["type"]
    native = to_native(kind, item, received_time=received_time, batch_sent_at=batch_sent_at)
    return _borrow_user_id(kind, native)


def _default_timestamp(message: dict[str, Any], received_time: int, batch_sent_at: Any) -> Any:
    original = message.get("originalTimestamp")
    if original is not None:
        return original
    sent_at = message.get("sentAt") or batch_sent_at
    return sent_at if isinstance(sent_at, str) else format_millis(received_time)


def _identify_traits(message: dict[str, Any]) -> dict[str, Any] | None:
    """``context.traits`` with top-level ``traits`` on top; None leaves a bad value for ingest."""
    traits = message.get("traits")
    if traits is not None and not isinstance(traits, dict):
        return None
    context = message.get("context")
    from_context = context.get("traits") if isinstance(context, dict) else None
    return {**(from_context if isinstance(from_context, dict) else {}), **(traits or {})}


def _borrow_user_id(kind: str, message: dict[str, Any]) -> dict[str, Any]:
    """An identify naming only a usable ``anonymousId``, shaped so ingest accepts it.

    The native identify requires ``userId``; Segment's does not. The anonymous id
    stands in as ``userId`` while ingest validates the call, and ``_give_back``
    removes it again, so the call is stored as the anonymous visitor's.
    """
    anonymous_id = message.get("anonymousId")
    if kind != "identify" or message.get("userId") is not None:
        return message
    if not isinstance(anonymous_id, str) or is_placeholder(anonymous_id):
        return message
    return {**message, "userId": anonymous_id, _BORROWED: "userId" in message}


def _give_back(call: Call, message: Any) -> Call:
    """Undo ``_borrow_user_id`` on the validated call: no userId, raw as it was sent."""
    if not isinstance(message, dict) or _BORROWED not in message:
        return call
    raw = {key: value for key, value in call.raw.items() if key not in ("userId", _BORROWED)}
    if message[_BORROWED]:
        raw["userId"] = None
    return dataclasses.replace(call, user_id=None, raw=raw)


# -- the shapes of Segment's messages, for the OpenAPI document ---------------------------

_SEGMENT_FIELDS: list[tuple[str, Any, Any]] = [
    ("timestamp", Time | None, None),
    ("original_timestamp", Time | None, None),
    ("integrations", Object | None, None),
    ("write_key", str | None, None),
]
_ANONYMOUS_IDENTIFY: list[tuple[str, Any, Any]] = [
    ("user_id", Id | None, None),
    ("traits", Traits | None, None),
]


def _message(kind: str, call: type[CallBody]) -> type[msgspec.Struct]:
    more = _ANONYMOUS_IDENTIFY if kind == "identify" else []
    doc = f"{call.__doc__} As Segment's ``{kind}``: ``timestamp`` optional (see SPEC §8)."
    return msgspec.defstruct(
        f"Segment{call.__name__}",
        _SEGMENT_FIELDS + more,
        bases=(call,),
        kw_only=True,
        namespace={"__doc__": doc},
    )


#: Each call type's Segment message: the native call, with Segment's differences.
MESSAGES: dict[str, type[msgspec.Struct]] = {kind: _message(kind, CALLS[kind]) for kind in CALLS}


class SegmentBatch(Batch[batch_items(MESSAGES, "Segment")]):  # type: ignore[misc]
    """Up to 1000 messages, each with its ``type``; ``sentAt`` applies to those without
    their own."""

    write_key: str | None = None
