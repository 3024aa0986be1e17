"""Pure rules for linking and merging customer ids (the merge guardrails live here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opencdp.models import JSON, CallFacts
from opencdp.traits import Stamps, fill_traits, merge_traits

PLACEHOLDER_IDS = frozenset(
    {"null", "undefined", "none", "nil", "nan", "0", "anonymous", "guest", "[object object]"}
)
MAX_ANONYMOUS_IDS = 1000


def is_placeholder(value: str) -> bool:
    """True for ids that must never link or merge profiles (``""``, ``"null"``, ``"guest"``…)."""
    stripped = value.strip()
    return stripped == "" or stripped.lower() in PLACEHOLDER_IDS


# -- the identity graph of one write batch -------------------------------------------

USER = "user"
ANON = "anon"

IdentityKey = tuple[str, str]  # (USER | ANON, id)
EventStamp = list[Any]  # [eventTime, receivedTime, eventId]


@dataclass(slots=True)
class ProfileState:
    """Everything the write path reads and changes about one profile."""

    pk: int
    id: str
    external_id: str = ""
    traits: JSON = field(default_factory=dict)
    trait_stamps: Stamps = field(default_factory=dict)
    anonymous_ids: list[str] = field(default_factory=list)
    audiences: list[str] = field(default_factory=list)
    created_by: JSON = field(default_factory=dict)
    created_time: int = 0
    first_events: dict[str, EventStamp] = field(default_factory=dict)
    last_events: dict[str, EventStamp] = field(default_factory=dict)
    last_activity: int | None = None
    merged_into: int | None = None


@dataclass(slots=True)
class Refusal:
    """A link or merge the guardrails refused, for the log and the metrics."""

    reason: str  # "identified_conflict" | "anonymous_id_cap"
    user_id: str
    anonymous_id: str


@dataclass
class IdentityGraph:
    """The profiles and ids one write batch touches, and the rules that change them.

    The store loads every identity the batch names (and the profiles behind them),
    calls ``apply`` once per call in arrival order, then saves ``changed`` profiles,
    ``links`` and ``merges``. No I/O happens here.
    """

    profiles: dict[int, ProfileState]
    identities: dict[IdentityKey, int]
    allocate_pk: Callable[[], int]
    new_profile_id: Callable[[], str]
    changed: dict[int, ProfileState] = field(default_factory=dict)
    links: dict[IdentityKey, int] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)  # (from pk, into pk)
    refusals: list[Refusal] = field(default_factory=list)

    def apply(self, call: CallFacts, event_id: str) -> int:
        """Resolve the call's profile, merge its traits, record its event; return the pk."""
        profile = self._resolve(call)
        if call.traits is not None:
            stamp = [call.event_time, call.received_time]
            merge_traits(profile.traits, profile.trait_stamps, call.traits, stamp)
        _record_event(profile, call, event_id)
        self.changed[profile.pk] = profile
        return profile.pk

    def _resolve(self, call: CallFacts) -> ProfileState:
        if (
            call.action == "alias"
            and call.user_id is not None
            and call.previous_id not in (None, call.user_id)
        ):
            assert call.previous_id is not None
            return self._alias(call.user_id, call.previous_id, call)
        if call.user_id is None:
            assert call.anonymous_id is not None, "validation guarantees one id"
            return self._find(ANON, call.anonymous_id) or self._create(call, anon=True)
        by_user = self._find(USER, call.user_id)
        if call.anonymous_id is not None:
            return self._link(call.user_id, by_user, call.anonymous_id, call)
        return by_user or self._create(call)

    # -- look-ups and creation ---------------------------------------------------------

    def _find(self, kind: str, value: str) -> ProfileState | None:
        pk = self.identities.get((kind, value))
        return None if pk is None else self.profiles[pk]

    def _bind(self, kind: str, value: str, profile: ProfileState) -> None:
        self.identities[(kind, value)] = profile.pk
        self.links[(kind, value)] = profile.pk
        if kind == ANON and value not in profile.anonymous_ids:
            profile.anonymous_ids.append(value)
        self.changed[profile.pk] = profile

    def _create(self, call: CallFacts, *, anon: bool = False) -> ProfileState:
        kind = "identify" if call.action == "identify" else "event"
        profile = ProfileState(
            pk=self.allocate_pk(),
            id=self.new_profile_id(),
            created_by={"type": kind, "createdTime": call.received_time},
            created_time=call.received_time,
        )
        self.profiles[profile.pk] = profile
        if anon and call.anonymous_id is not None:
            self._bind(ANON, call.anonymous_id, profile)
        elif call.user_id is not None:
            profile.external_id = call.user_id
            self._bind(USER, call.user_id, profile)
        self.changed[profile.pk] = profile
        return profile

    # -- linking and merging -----------------------------------------------------------

    def _link(
        self, user_id: str, by_user: ProfileState | None, anon_id: str, call: CallFacts
    ) -> ProfileState:
        by_anon = self._find(ANON, anon_id)
        if by_anon is None:
            profile = by_user or self._create(call)
            if len(profile.anonymous_ids) >= MAX_ANONYMOUS_IDS:
                self.refusals.append(Refusal("anonymous_id_cap", user_id, anon_id))
            else:
                self._bind(ANON, anon_id, profile)
            return profile
        if by_user is None and by_anon.external_id == "":
            by_anon.external_id = user_id
            self._bind(USER, user_id, by_anon)
            return by_anon
        if by_user is not None and by_user.pk == by_anon.pk:
            return by_user
        if by_user is not None and by_anon.external_id == "":
            self._merge(by_anon, by_user)
            return by_user
        self.refusals.append(Refusal("identified_conflict", user_id, anon_id))
        return by_user or self._create(call)

    def _alias(self, user_id: str, previous_id: str, call: CallFacts) -> ProfileState:
        target = self._find(USER, user_id)
        previous = self._find(USER, previous_id) or self._find(ANON, previous_id)
        if previous is None:
            profile = target or self._create(call)
            self._bind(USER, previous_id, profile)
            self._bind(ANON, previous_id, profile)
            return profile
        if target is None:
            target = self._create(call)
        if target.pk != previous.pk:
            self._merge(previous, target)
        return target

    def _merge(self, source: ProfileState, target: ProfileState) -> None:
        """Fold ``source`` into ``target``; ``source`` remains as a pointer to it."""
        for key, pk in self.identities.items():
            if pk == source.pk:
                self.identities[key] = target.pk
        for anon_id in source.anonymous_ids:
            if anon_id not in target.anonymous_ids:
                target.anonymous_ids.append(anon_id)
        target.audiences.extend(a for a in source.audiences if a not in target.audiences)
        fill_traits(target.traits, target.trait_stamps, source.traits, source.trait_stamps)
        for action, stamp in source.first_events.items():
            _keep(target.first_events, action, stamp, earliest=True)
        for action, stamp in source.last_events.items():
            _keep(target.last_events, action, stamp, earliest=False)
        target.last_activity = _latest(target.last_activity, source.last_activity)
        source.merged_into = target.pk
        source.anonymous_ids = []
        self.merges.append((source.pk, target.pk))
        self.changed[source.pk] = source
        self.changed[target.pk] = target


def _record_event(profile: ProfileState, call: CallFacts, event_id: str) -> None:
    stamp: EventStamp = [call.event_time, call.received_time, event_id]
    _keep(profile.first_events, call.event_action, stamp, earliest=True)
    _keep(profile.last_events, call.event_action, stamp, earliest=False)
    profile.last_activity = _latest(profile.last_activity, call.event_time)


def _keep(events: dict[str, EventStamp], action: str, stamp: EventStamp, *, earliest: bool) -> None:
    stored = events.get(action)
    if stored is None or (stamp < stored if earliest else stamp > stored):
        events[action] = stamp


def _latest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)
