"""The tracking calls (SPEC §4) and their answers: one msgspec Struct per call type.

Each Struct is its call's only definition. ``ingest`` validates a body with it (msgspec
checks types, required fields, lengths and RFC 3339 times; ``shape_errors`` names the
field that breaks it), the OpenAPI document describes the route with it, and the
Segment-compatible shapes (SPEC §8) are derived from it, so a rule changed here changes
all three. What a type cannot say is checked by ``ingest``: one of ``userId`` or
``anonymousId``, placeholder ids, event names with a letter or digit, times in range.

Unknown fields are allowed (they are kept in ``rawData``), and a ``null`` on an
optional field counts as not sent: SDKs send ``"userId": null`` for anonymous visitors.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import msgspec

from opencdp.errors import ErrorDetail
from opencdp.models import Accepted, BatchItemError, Call

MAX_BATCH_ITEMS = 1000
#: The longest value the stores index (userId, anonymousId, previousId, event name,
#: traits.email): 512 characters, at most 2,048 bytes, fits any PostgreSQL index row.
MAX_INDEXED_LENGTH = 512
MAX_MESSAGE_ID_LENGTH = 200

_RFC3339 = "RFC 3339 date-time with a zone or Z, e.g. 2019-11-18T13:30:11.444Z"
Time = Annotated[datetime, msgspec.Meta(tz=True, description=_RFC3339)]
SentAt = Annotated[
    datetime,
    msgspec.Meta(tz=True, description="When the client sent the call; corrects its clock skew"),
]
Id = Annotated[str, msgspec.Meta(max_length=MAX_INDEXED_LENGTH)]
MessageId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_MESSAGE_ID_LENGTH,
        description="Idempotency key: a repeat answers the first call's eventId",
    ),
]
EventName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_INDEXED_LENGTH)]
Object = dict[str, Any]
T = TypeVar("T")


class Shape(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of every shape here: camelCase on the wire; unknown fields allowed."""


class Context(Shape, kw_only=True):
    """Free-form; ``ip`` is filled from the connection when not sent."""

    ip: str | None = None


class Channel(Shape, kw_only=True):
    channel: str
    subscribed: bool | msgspec.UnsetType = msgspec.UNSET


class MarketingPreferences(Shape, kw_only=True):
    """Merged channel by channel: a channel not sent keeps its stored value (not null)."""

    channels: list[Channel] | msgspec.UnsetType = msgspec.UNSET


class Traits(Shape, kw_only=True):
    """Free-form; each top-level key replaces the stored one (``email`` is indexed)."""

    marketing_preferences: MarketingPreferences | msgspec.UnsetType = msgspec.UNSET


class CallBody(Shape, kw_only=True):
    """What every call may carry; each call type adds its own fields."""

    timestamp: Time
    sent_at: SentAt | None = None
    message_id: MessageId | None = None
    context: Context | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    event: Any = None  # each call type narrows it


class IdentifyCall(CallBody, kw_only=True):
    """Creates the customer's profile if needed and merges ``traits`` into it."""

    user_id: Id
    traits: Traits
    event: Literal["identify"] | None = None


class TrackCall(CallBody, kw_only=True):
    """Records an event. ``userId`` or ``anonymousId`` is required."""

    event: EventName
    properties: Object | None = None


class PageCall(CallBody, kw_only=True):
    """Records a page view. ``userId`` or ``anonymousId`` is required."""

    event: Literal["page"] | None = None
    name: str | None = None
    properties: Object | None = None


class ScreenCall(CallBody, kw_only=True):
    """Records a screen view in an app. ``userId`` or ``anonymousId`` is required."""

    event: Literal["screen"] | None = None
    name: str | None = None
    properties: Object | None = None


class AliasCall(CallBody, kw_only=True):
    """Merges ``previousId``'s profile into ``userId``'s."""

    user_id: Id
    previous_id: Id
    event: Literal["alias"] | None = None


class GroupCall(CallBody, kw_only=True):
    """Records that the customer belongs to ``groupId``; ``traits`` (the group's) stay on
    the event, not the profile. ``userId`` or ``anonymousId`` is required."""

    group_id: str
    traits: Object | None = None
    event: Literal["group"] | None = None


#: Every call type, by the name used in paths, in ``batch`` items' ``type`` and as ``action``.
CALLS: dict[str, type[CallBody]] = {
    "identify": IdentifyCall,
    "track": TrackCall,
    "page": PageCall,
    "screen": ScreenCall,
    "alias": AliasCall,
    "group": GroupCall,
}
CALL_TYPES = tuple(CALLS)


class Batch(Shape, Generic[T], kw_only=True):
    """A ``batch`` body, ``T`` its list of items: ``list[Any]`` to validate (each item is
    then validated alone, so a bad one refuses only itself), the tagged call shapes to
    document (``BatchCall``)."""

    batch: T
    sent_at: SentAt | None = None


class BatchEnvelope(Batch[list[Any]]):
    """A batch as ``ingest`` converts it (a class, not an alias: msgspec keeps its
    compiled form); its items are validated one by one afterwards."""


def batch_items(calls: dict[str, type[Shape]], prefix: str = "") -> Any:
    """The documented item list of a batch: each call type's shape, tagged by ``type``."""
    tagged = [
        msgspec.defstruct(
            f"{prefix}{kind.capitalize()}Item",
            [],
            bases=(shape,),
            namespace={"__doc__": shape.__doc__},
            tag_field="type",
            tag=kind,
        )
        for kind, shape in calls.items()
    ]
    items: Any = Union.__getitem__(tuple(tagged))  # a union built at run time
    return Annotated[list[items], msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


class BatchCall(Batch[batch_items(CALLS)]):  # type: ignore[misc]
    """Up to 1000 calls, each a call's body with its ``type``; ``sentAt`` applies to the
    items that carry none. Every valid item is stored; see ``errors`` for the others."""


# -- answers -----------------------------------------------------------------------------


class CallAccepted(msgspec.Struct):
    """The call is committed; a repeat of a ``messageId`` answers the first ``eventId``."""

    success: Literal[True]
    eventId: str

    @classmethod
    def of(cls, accepted: Accepted) -> CallAccepted:
        return cls(True, accepted.event_id)


class BatchAccepted(msgspec.Struct):
    """Every valid call is committed; ``eventIds`` holds ``null`` where a call was rejected."""

    success: Literal[True]
    eventIds: list[str | None]
    errors: list[BatchItemError]

    @classmethod
    def of(
        cls, calls: list[Call | None], accepted: list[Accepted], problems: list[BatchItemError]
    ) -> BatchAccepted:
        """``eventIds`` in input order: ``accepted`` holds one answer per call, in order."""
        answers = iter(accepted)
        return cls(True, [None if c is None else next(answers).event_id for c in calls], problems)


class BatchRejected(msgspec.Struct):
    """No call of the batch was valid (or the body was unusable)."""

    success: Literal[False]
    message: str
    error: ErrorDetail
    errors: list[BatchItemError] | msgspec.UnsetType = msgspec.UNSET
