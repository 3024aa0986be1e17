"""Store-independent steps of a write batch: repeats, ids, and row shapes.

Both stores run the same plan: answer calls whose messageId is already stored, apply
the rest to the identity graph in arrival order, then save changed profiles, new
identity links, merges and events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import uuid_utils

from opencdp.identity import ANON, USER, IdentityGraph, IdentityKey, ProfileState
from opencdp.models import Accepted, Call, CallFacts, Workspace

log = logging.getLogger("opencdp.store")
_encode = msgspec.json.encode
C = TypeVar("C", bound=CallFacts)


def new_profile_id() -> str:
    return str(uuid_utils.uuid4())


def new_event_id() -> str:
    """Time-ordered (UUIDv7) ids keep the event-id index append-mostly."""
    return str(uuid_utils.uuid7())


@dataclass
class BatchPlan:
    """Which calls of a batch are new, and how the repeats will be answered."""

    calls: Sequence[CallFacts]
    accepted: dict[int, Accepted] = field(default_factory=dict)
    fresh: list[int] = field(default_factory=list)
    first_index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def make(cls, calls: Sequence[CallFacts], stored: dict[str, str]) -> BatchPlan:
        """``stored``: messageId → eventId of the batch's messageIds already in the store."""
        plan = cls(calls)
        for index, call in enumerate(calls):
            mid = call.message_id
            if mid is not None and mid in stored:
                plan.accepted[index] = Accepted(stored[mid], duplicate=True)
            elif mid is not None and mid in plan.first_index:
                continue  # a repeat inside the batch: answered with the first one's id
            else:
                if mid is not None:
                    plan.first_index[mid] = index
                plan.fresh.append(index)
        return plan

    def fresh_calls(self) -> list[CallFacts]:
        return [self.calls[i] for i in self.fresh]

    def answers(self) -> list[Accepted]:
        out = []
        for index, call in enumerate(self.calls):
            found = self.accepted.get(index)
            if found is None:
                first = self.accepted[self.first_index[call.message_id or ""]]
                found = Accepted(first.event_id, duplicate=True)
            out.append(found)
        return out


def message_ids(calls: Sequence[CallFacts]) -> list[str]:
    return [c.message_id for c in calls if c.message_id is not None]


def identity_keys(calls: Sequence[CallFacts]) -> list[IdentityKey]:
    """Every (kind, id) the calls name, sorted: what the batch must load (and lock)."""
    keys: set[IdentityKey] = set()
    for call in calls:
        if call.user_id is not None:
            keys.add((USER, call.user_id))
        if call.anonymous_id is not None:
            keys.add((ANON, call.anonymous_id))
        if call.previous_id is not None:
            keys.update([(USER, call.previous_id), (ANON, call.previous_id)])
    return sorted(keys)


def raw_fields(call: Call) -> tuple[str, str | None]:
    """The stored form of ``call.raw`` (JSON text) and the ``anonymousId`` it was sent with.

    That id is kept even where it cannot link (a placeholder beside a ``userId``).
    """
    anonymous_id = call.raw.get("anonymousId")
    sent = anonymous_id if isinstance(anonymous_id, str) else None
    return _encode(call.raw).decode(), sent


def event_row(
    call: CallFacts, event_id: str, profile_pk: int, raw: str, sent_anonymous_id: str | None
) -> list[Any]:
    """An events row; ``raw`` and ``sent_anonymous_id`` as ``raw_fields`` makes them."""
    return [
        event_id,
        call.message_id,
        profile_pk,
        call.event_action,
        call.event_time,
        call.received_time,
        call.user_id,
        sent_anonymous_id,
        raw,
    ]


def profile_row(p: ProfileState) -> list[Any]:
    email = p.traits.get("email")
    return [
        p.pk, p.id, p.external_id, email if isinstance(email, str) and email else None,
        p.traits, p.trait_stamps, p.anonymous_ids, p.audiences, p.created_by,
        p.created_time, p.first_events, p.last_events, p.last_activity, p.merged_into,
    ]


def profile_from_row(row: Sequence[Any]) -> ProfileState:
    return ProfileState(
        pk=row[0], id=row[1], external_id=row[2], traits=row[3], trait_stamps=row[4],
        anonymous_ids=row[5], audiences=row[6], created_by=row[7], created_time=row[8],
        first_events=row[9], last_events=row[10], last_activity=row[11], merged_into=row[12],
    )


def by_workspace(
    requests: Sequence[tuple[Workspace, Sequence[C]]],
) -> list[tuple[Workspace, list[int], list[C]]]:
    """Group commit: the calls of many requests, one list per workspace, arrival order kept.

    Each workspace's calls are then written as one batch (a few statements whatever
    the number of requests), and ``split_answers`` gives each request its own answers.
    Applying them in one batch is the same as applying them request after request: a
    ``messageId`` repeated in a later request is answered as a repeat either way.
    """
    groups: dict[Workspace, tuple[list[int], list[C]]] = {}
    for index, (workspace, calls) in enumerate(requests):
        indexes, merged = groups.setdefault(workspace, ([], []))
        indexes.append(index)
        merged.extend(calls)
    return [(workspace, indexes, merged) for workspace, (indexes, merged) in groups.items()]


def split_answers(
    answers: list[Accepted], indexes: list[int], sizes: Sequence[int], into: list[list[Accepted]]
) -> None:
    """Hand the answers of one merged batch back to the requests at ``indexes``."""
    start = 0
    for index in indexes:
        into[index] = answers[start : start + sizes[index]]
        start += sizes[index]


def report_refusals(
    graph: IdentityGraph, workspace_id: int, refused: Callable[[str], None]
) -> None:
    """Tell ``refused`` (the commit's refusal list) and the log of each link or merge a
    guardrail refused while applying a workspace's calls, with the reason and workspace."""
    for refusal in graph.refusals:
        refused(refusal.reason)
        log.warning(
            "identity link refused",
            extra={"reason": refusal.reason, "workspace_id": workspace_id},
        )
