"""Query parameters of the read APIs → typed queries. Pure: tested without HTTP.

Every problem is a ``ValidationFailed`` whose message names the parameter and why.
Unknown parameters, repeated ones, and ``scrollId`` beside anything else are refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, cast

from opencdp.errors import ValidationFailed
from opencdp.ingest import event_action_name
from opencdp.models import (
    ID_TYPES,
    MAX_TOTAL,
    EventQuery,
    ProfileQuery,
    ProfileRef,
    to_millis,
)

Params = Sequence[tuple[str, str]]

MAX_SIZE = 100
MAX_FEED_SIZE = 1000
MAX_FEED_WAIT = 30
MAX_ACTIONS = 50
MAX_PROPERTY_FILTERS = 20
PROPERTY_PREFIX = "properties."
PROFILE_ID_FORMAT = "ProfileID must be in format of id_type:id"

_EVENT_PARAMS = frozenset({"include", "exclude", "start", "end", "sort", "from", "size"})
_PROFILE_PARAMS = frozenset({"sort", "size"})
_FEED_PARAMS = frozenset({"after", "size", "wait", "include", "exclude"})
_INTEGER = re.compile(r"[0-9]{1,9}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True, slots=True)
class ScrollRequest:
    """The request continues a scroll: the query is inside the (still unchecked) cursor."""

    scroll_id: str


def parse_event_params(params: Params, *, user_id: bool = True) -> EventQuery | ScrollRequest:
    """The Events API's parameters (SPEC §5); ``user_id=False`` on a profile's events."""
    values = _single_values(params)
    if "scrollId" in values:
        return _scroll(values)
    allowed = _EVENT_PARAMS | {"userId"} if user_id else _EVENT_PARAMS
    for name in values:
        if name not in allowed and not name.startswith(PROPERTY_PREFIX):
            raise _invalid(name, "unknown parameter")
    query = EventQuery(
        include=_actions(values, "include"),
        exclude=_actions(values, "exclude"),
        start=_time(values, "start"),
        end=_time(values, "end"),
        sort=cast(Literal["asc", "desc"], _choice(values, "sort", ("asc", "desc"), "desc")),
        offset=_integer(values, "from", 0, MAX_TOTAL, 0),
        size=_integer(values, "size", 1, MAX_SIZE, MAX_SIZE),
        properties=_properties(values),
        user_id=_user_id(values),
    )
    _check_window(query)
    return query


@dataclass(frozen=True, slots=True)
class FeedRequest:
    """``GET …/v1/events/feed``: where to start (``after``: a cursor still to check, or
    None with ``now`` false for the oldest event), and the query's other parts."""

    after: str | None
    now: bool
    size: int
    wait: int
    include: tuple[str, ...]
    exclude: tuple[str, ...]


def parse_feed_params(params: Params) -> FeedRequest:
    """The change feed's parameters (SPEC §5): ``after`` (a ``next`` cursor or ``now``),
    ``size`` (1–1000), ``wait`` (0–30 seconds), ``include``, ``exclude``."""
    values = _single_values(params)
    for name in values:
        if name not in _FEED_PARAMS:
            raise _invalid(name, "unknown parameter")
    after = values.get("after")
    if after is not None and not after:
        raise _invalid("after", "must not be empty")
    return FeedRequest(
        after=None if after == "now" else after,
        now=after == "now",
        size=_integer(values, "size", 1, MAX_FEED_SIZE, 100),
        wait=_integer(values, "wait", 0, MAX_FEED_WAIT, 0),
        include=_actions(values, "include"),
        exclude=_actions(values, "exclude"),
    )


def parse_profile_list_params(params: Params) -> ProfileQuery | ScrollRequest:
    """``GET …/v1/profiles``: ``size``, ``sort`` (activity | created) or ``scrollId``."""
    values = _single_values(params)
    if "scrollId" in values:
        return _scroll(values)
    for name in values:
        if name not in _PROFILE_PARAMS:
            raise _invalid(name, "unknown parameter")
    sort = _choice(values, "sort", ("activity", "created"), "activity")
    return ProfileQuery(
        sort=cast(Literal["activity", "created"], sort),
        size=_integer(values, "size", 1, MAX_SIZE, MAX_SIZE),
    )


def parse_no_params(params: Params) -> None:
    """For routes that take no parameters: any parameter is unknown."""
    for name, _ in params:
        raise _invalid(name, "unknown parameter")


def parse_look_up_params(params: Params, ref: ProfileRef) -> ScrollRequest | None:
    """A profile look-up (traits, meta, audiences): no parameters, but an ``email:`` one
    may continue with ``scrollId`` (it answers its profiles a page at a time)."""
    if ref.id_type != "email":
        parse_no_params(params)
        return None
    values = _single_values(params)
    if "scrollId" in values:
        return _scroll(values)
    parse_no_params(params)
    return None


def parse_profile_ref(text: str) -> ProfileRef:
    """``userId:ABC/123`` → ``ProfileRef("userId", "ABC/123")`` (already percent-decoded)."""
    id_type, colon, value = text.partition(":")
    if not colon or not value or id_type not in ID_TYPES:
        raise ValidationFailed(PROFILE_ID_FORMAT)
    if "\x00" in value:  # no store can hold it, so no profile has it
        raise ValidationFailed(f"{id_type}: must not contain the NUL character")
    return ProfileRef(id_type, value)


def parse_time(name: str, text: str) -> int:
    """An ISO-8601 date (midnight UTC) or date-time (UTC when it has no zone), in ms."""
    try:
        if _DATE.fullmatch(text):
            return to_millis(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC))
        if not _DATE.match(text) or len(text) < 13:
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(name, "not an ISO-8601 date or date-time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_millis(moment)


def property_path(name: str) -> str:
    """``properties.a.b`` → ``a.b``: dot-separated keys, none empty or holding ``"``."""
    path = name.removeprefix(PROPERTY_PREFIX)
    if not name.startswith(PROPERTY_PREFIX) or any(
        key == "" or '"' in key for key in path.split(".")
    ):
        raise _invalid(name, "expected properties.<key> or properties.<key>.<key>…")
    return path


# -- the parts ---------------------------------------------------------------------------


def _single_values(params: Params) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        if name in values:
            raise _invalid(name, "given more than once")
        if "\x00" in name or "\x00" in value:
            raise _invalid(name.replace("\x00", "%00"), "must not contain the NUL character")
        values[name] = value
    return values


def _scroll(values: dict[str, str]) -> ScrollRequest:
    others = sorted(name for name in values if name != "scrollId")
    if others:
        listed = ", ".join(others)
        raise _invalid("scrollId", f"cannot be combined with other parameters ({listed})")
    if not values["scrollId"]:
        raise _invalid("scrollId", "must not be empty")
    return ScrollRequest(values["scrollId"])


def _actions(values: dict[str, str], name: str) -> tuple[str, ...]:
    text = values.get(name)
    if text is None:
        return ()
    actions: list[str] = []
    for part in text.split(","):
        action = event_action_name(part)
        if not action:
            raise _invalid(name, "expected comma-separated event actions, e.g. page,logged_in")
        if action not in actions:
            actions.append(action)
    if len(actions) > MAX_ACTIONS:
        raise _invalid(name, f"at most {MAX_ACTIONS} event actions")
    return tuple(actions)


def _time(values: dict[str, str], name: str) -> int | None:
    text = values.get(name)
    return None if text is None else parse_time(name, text)


def _check_window(query: EventQuery) -> None:
    if query.start is not None and query.end is not None and query.end <= query.start:
        raise _invalid("end", "must be later than start")
    if query.offset + query.size > MAX_TOTAL:
        raise _invalid(
            "from", f"from + size must be at most {MAX_TOTAL}; use scrollId to read further"
        )


def _choice(values: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    text = values.get(name)
    if text is None:
        return default
    if text.lower() not in choices:
        raise _invalid(name, f"must be one of {', '.join(choices)}")
    return text.lower()


def _integer(values: dict[str, str], name: str, low: int, high: int, default: int) -> int:
    text = values.get(name)
    if text is None:
        return default
    number = int(text) if _INTEGER.fullmatch(text) else None
    if number is None or not low <= number <= high:
        raise _invalid(name, f"must be an integer from {low} to {high}")
    return number


def _properties(values: dict[str, str]) -> tuple[tuple[str, str], ...]:
    found = []
    for name, value in values.items():
        if not name.startswith(PROPERTY_PREFIX):
            continue
        found.append((property_path(name), value))
    if len(found) > MAX_PROPERTY_FILTERS:
        raise _invalid("properties", f"at most {MAX_PROPERTY_FILTERS} property filters")
    return tuple(sorted(found))


def _user_id(values: dict[str, str]) -> str | None:
    user_id = values.get("userId")
    if user_id is not None and not user_id.strip():
        raise _invalid("userId", "must not be empty")
    return user_id


def _invalid(name: str, why: Any) -> ValidationFailed:
    return ValidationFailed(f"{name}: {why}")
