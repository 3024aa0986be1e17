"""Validate and normalise a tracking call into a ``Call``: pure, no I/O (SPEC §4).

msgspec checks the shape of each call type (``opencdp.calls``: types, required fields,
fixed ``event`` names, RFC 3339 times); the domain rules follow by hand: placeholder
ids, snake-case event actions, clock-skew correction and the ``rawData`` additions.

Every rejection is ``ValidationFailed("<field>: <why>")`` where ``<field>`` is a path
such as ``context.ip`` or ``traits.marketingPreferences.channels[1].channel``; a body
that is not a JSON object at all is ``InvalidRequest``. A ``null`` on an optional field
counts as not sent (SDKs send ``"userId": null`` for anonymous visitors). Messages of
``batch`` items carry the item's position in front: ``batch[3].timestamp: required``.
"""

from __future__ import annotations

import functools
import re
from typing import Any, TypeVar

import msgspec

from opencdp import errors
from opencdp.calls import (
    CALL_TYPES,
    CALLS,
    MAX_BATCH_ITEMS,
    MAX_INDEXED_LENGTH,
    AliasCall,
    BatchEnvelope,
    CallBody,
)
from opencdp.identity import is_placeholder
from opencdp.models import MAX_MILLIS, MIN_MILLIS, BatchItemError, Call, format_millis, to_millis
from opencdp.shape_errors import first_problem
from opencdp.shape_errors import json_kind as _json_kind

MAX_FUTURE_MS = 24 * 60 * 60 * 1000  # a skew-corrected time further ahead is clamped
S = TypeVar("S", bound=msgspec.Struct)
_NOT_SNAKE = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=4096)  # pure, and an app sends the same few names again and again
def event_action_name(name: str) -> str:
    """The snake-case ``eventAction`` of an event name: ``"Email Opened"`` → ``email_opened``."""
    return _NOT_SNAKE.sub("_", name.lower()).strip("_")


def parse_call(
    action: str, body: dict[str, Any], *, received_time: int, client_ip: str | None
) -> Call:
    """Validate one call of type ``action``; ``client_ip`` fills ``context.ip`` if unsent.

    An ``action`` that is not a call type (``batch`` included) raises ``NotFound``.
    """
    return _parse(action, body, received_time, client_ip, None)


def parse_batch(
    body: dict[str, Any], *, received_time: int, client_ip: str | None
) -> tuple[list[Call | None], list[BatchItemError]]:
    """Validate a ``batch`` body: one ``Call`` per good item, ``None`` and an error per bad one.

    The batch's own ``sentAt`` applies to items that carry none; nothing else is inherited.
    A batch with no valid item raises ``BatchRefused`` (400 listing every item's error).
    """
    shape = _convert(BatchEnvelope, body)
    _check_batch_size(shape.batch)
    sent_at = None if shape.sent_at is None else to_millis(shape.sent_at)
    calls: list[Call | None] = []
    problems: list[BatchItemError] = []
    for index, item in enumerate(shape.batch):
        try:
            calls.append(_parse_item(index, item, received_time, client_ip, sent_at))
        except errors.ValidationFailed as exc:
            calls.append(None)
            problems.append(BatchItemError(index, exc.code, exc.message))
    if len(problems) == len(calls):
        raise errors.BatchRefused(problems)
    return calls, problems


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object, else ``InvalidRequest``.

    No store keeps U+0000 (NUL) in text. A NUL in an item of a ``batch`` list refuses
    that item only (``parse_batch`` reports it at its index); anywhere else it refuses
    the body (``ValidationFailed`` naming the field).
    """
    value = _decode_json(body)
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"body: must be a JSON object (got {_json_kind(value)})")
    if b"\\u0000" in body:  # the only way JSON spells NUL, so most bodies skip the walk
        _set_aside_nul(value)
    return value


class _Unstorable:
    """A ``batch`` item that holds a NUL, in place of the item: why it is refused."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _set_aside_nul(body: dict[str, Any]) -> None:
    items: list[Any] = body["batch"] if isinstance(body.get("batch"), list) else []
    reason = _nul_in({key: value for key, value in body.items() if value is not items}, "")
    if reason is not None:
        raise errors.ValidationFailed(reason)
    for index, item in enumerate(items):
        reason = _nul_in(item, "") if isinstance(item, dict) else None
        if reason is not None:
            items[index] = _Unstorable(reason)


def _nul_in(value: Any, path: str) -> str | None:
    """Why ``value`` cannot be stored: its first string or key holding NUL; None if none."""
    if isinstance(value, str) and "\x00" in value:
        return f"{path}: must not contain the NUL character (\\u0000)"
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if "\x00" in key:
                shown = where.replace("\x00", "\\u0000")
                return f"{shown}: a key must not contain NUL (\\u0000)"
            found = _nul_in(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _parse(
    action: str,
    body: dict[str, Any],
    received_time: int,
    client_ip: str | None,
    batch_sent_at: int | None,
) -> Call:
    shape = _convert(_shape_of(action), body)
    user_id, anonymous_id = _linkable_ids(shape)
    return Call(
        action=action,
        event_action=_event_action(action, shape),
        user_id=user_id,
        anonymous_id=anonymous_id,
        event_time=_event_time(shape, received_time, batch_sent_at),
        received_time=received_time,
        raw=_raw(action, body, client_ip),
        message_id=shape.message_id,
        traits=_profile_traits(body) if action == "identify" else None,
        previous_id=_previous_id(shape),
    )


def _profile_traits(body: dict[str, Any]) -> dict[str, Any]:
    """An identify's traits; a string ``email`` is indexed, so its length is limited."""
    traits: dict[str, Any] = body["traits"]
    email = traits.get("email")
    if isinstance(email, str) and len(email) > MAX_INDEXED_LENGTH:
        raise _invalid("traits.email", f"must be at most {MAX_INDEXED_LENGTH} characters")
    return traits


def _shape_of(action: str) -> type[CallBody]:
    shape = CALLS.get(action)
    if shape is None:
        raise errors.NotFound(f"unknown tracking action {action!r}")
    return shape


def _convert(shape: type[S], body: Any) -> S:
    try:
        return msgspec.convert(body, shape)
    except msgspec.ValidationError:
        raise errors.ValidationFailed(first_problem(shape, body)) from None


def _invalid(field: str, why: str) -> errors.ValidationFailed:
    return errors.ValidationFailed(f"{field}: {why}")


def _linkable_ids(shape: CallBody) -> tuple[str | None, str | None]:
    """``userId`` and ``anonymousId`` as they may link; a placeholder beside a userId drops."""
    user_id, anonymous_id = shape.user_id, shape.anonymous_id
    if user_id is not None and is_placeholder(user_id):
        raise _invalid("userId", "placeholder id not allowed")
    if anonymous_id is not None and is_placeholder(anonymous_id):
        if user_id is None:
            raise _invalid("anonymousId", "placeholder id not allowed as the only id")
        anonymous_id = None
    if user_id is None and anonymous_id is None:
        raise _invalid("userId or anonymousId", "one is required")
    return user_id, anonymous_id


def _previous_id(shape: CallBody) -> str | None:
    if not isinstance(shape, AliasCall):
        return None
    if is_placeholder(shape.previous_id):
        raise _invalid("previousId", "placeholder id not allowed")
    return shape.previous_id


def _event_action(action: str, shape: CallBody) -> str:
    """A track's snake-case event name; any other call's type (its shape fixed ``event``)."""
    if action != "track":
        return action
    name = event_action_name(shape.event)
    if not name:
        raise _invalid("event", "must contain a letter or digit")
    return name


def _event_time(shape: CallBody, received_time: int, batch_sent_at: int | None) -> int:
    """The call's timestamp, corrected for the client's clock skew when ``sentAt`` is known.

    The timestamp must lie in years 0001..9999 once in UTC. The correction never leaves
    that range: more than 24 h ahead becomes ``received_time`` (SPEC §4), before year
    0001 becomes its first moment.
    """
    timestamp = to_millis(shape.timestamp)
    if not MIN_MILLIS <= timestamp <= MAX_MILLIS:
        raise _invalid("timestamp", f"must be from {_FIRST} to {_LAST} once in UTC")
    sent_at = batch_sent_at if shape.sent_at is None else to_millis(shape.sent_at)
    if sent_at is None:
        return timestamp
    corrected = timestamp + (received_time - sent_at)
    if corrected > received_time + MAX_FUTURE_MS:
        return received_time
    return max(corrected, MIN_MILLIS)


_FIRST, _LAST = format_millis(MIN_MILLIS), format_millis(MAX_MILLIS)


def _raw(action: str, body: dict[str, Any], client_ip: str | None) -> dict[str, Any]:
    """The call as sent plus ``action`` and, unless sent, ``context.ip`` (copies, no mutation)."""
    raw = {"action": action, **body}
    raw["action"] = action
    context = body.get("context")
    if client_ip is not None and (context is None or context.get("ip") is None):
        raw["context"] = {**(context or {}), "ip": client_ip}
    return raw


def _check_batch_size(items: list[Any]) -> None:
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise _invalid("batch", f"must hold 1 to {MAX_BATCH_ITEMS} calls (got {len(items)})")


def _parse_item(
    index: int, item: Any, received_time: int, client_ip: str | None, sent_at: int | None
) -> Call:
    if isinstance(item, _Unstorable):
        raise errors.ValidationFailed(f"batch[{index}].{item.reason}")
    if not isinstance(item, dict):
        raise _invalid(f"batch[{index}]", f"must be an object (got {_json_kind(item)})")
    try:
        return _parse(_item_type(item), item, received_time, client_ip, sent_at)
    except errors.ValidationFailed as exc:
        raise errors.ValidationFailed(f"batch[{index}].{exc.message}") from None


def _item_type(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind is None:
        raise _invalid("type", "required")
    if not isinstance(kind, str) or kind not in CALL_TYPES:
        got = f'"{kind}"' if isinstance(kind, str) else _json_kind(kind)
        raise _invalid("type", f"must be one of {', '.join(CALL_TYPES)} (got {got})")
    return kind


# --- JSON bodies ----------------------------------------------------------------------

# A \u escape of half a UTF-16 pair without its other half (JSON text cannot hold it).
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise errors.InvalidRequest("body: must be a JSON object (got an empty body)")
    try:
        return msgspec.json.decode(body)
    except RecursionError:
        raise errors.InvalidRequest("body: JSON nested too deeply") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError: 1e400
        raise errors.InvalidRequest(f"body: {_decode_problem(exc, body)}") from None


def _decode_problem(exc: Exception, body: bytes) -> str:
    """Why ``body`` is not JSON, found by our own checks; msgspec's text is only a detail."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    if _LONE_SURROGATE.search(body):
        return "malformed JSON (invalid utf-16 surrogate pair)"
    detail = str(exc).removeprefix("JSON is malformed: ").split(" - at `")[0]
    return f"malformed JSON ({detail[:1].lower()}{detail[1:]})"
