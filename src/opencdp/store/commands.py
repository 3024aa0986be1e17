"""Every write to a store is one command: a small typed record of what to change.

``Store.execute(command)`` is the one way in, and answers only once the command's
transaction has committed. A command is a msgspec ``Struct`` in one tagged union, so
the SQLite store can send it as it is to its writer process, and each declares the
type of its result (``Command[R]``), which ``execute`` returns. The group commit
(``store.group_commit``) commits consecutive ``AppendCalls`` together and every other
command alone, in arrival order.

To add a kind of write (``EraseProfile``, ``ImportRows``, a destination's admin write):
declare its class here, with its fields and result type, and write one apply function
per back-end, registered with ``@applies(TheCommand)`` in ``store.sqlite.apply`` and
``store.postgres.apply`` (a test checks that every command has both). Nothing else
changes: the wire protocol, the group commit and the observers carry any command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar, cast

import msgspec

from opencdp.models import Accepted, CallFacts, TokenRecord, Workspace

R = TypeVar("R")
C = TypeVar("C", bound=CallFacts)


class Command(msgspec.Struct, Generic[R], frozen=True, tag=True, array_like=True):
    """A write, whose committed result is an ``R``."""

    #: The type of the result (what the SQLite writer process's answer is decoded as).
    result_type: ClassVar[Any]
    #: Every command class, for the wire protocol's tagged union.
    kinds: ClassVar[list[type[Command[Any]]]] = []

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__(**options)
        Command.kinds.append(cls)

    @property
    def weight(self) -> int:
        """What the command counts for in the bounded write queue."""
        return 1


class AppendCalls(Command[list[Accepted]], Generic[C], frozen=True):
    """Store tracking calls (one event each), resolve identities, merge traits.

    The result has one ``Accepted`` per call, in order; a repeated ``messageId`` is
    answered with the first call's event id and ``duplicate=True``. ``C`` is ``Call``
    in the server and the writer process's own wire form on the way to it.
    """

    result_type: ClassVar[Any] = list[Accepted]

    workspace: Workspace
    calls: list[C]

    @property
    def weight(self) -> int:
        return len(self.calls)


class AddToken(Command[None], frozen=True):
    """Store a new API token (its secret only as a hash)."""

    result_type: ClassVar[Any] = None

    record: TokenRecord


class RevokeToken(Command[bool], frozen=True):
    """Mark a token revoked at ``when`` (ms); False when no unrevoked token has that id."""

    result_type: ClassVar[Any] = bool

    token_id: str
    when: int


class IndexProperty(Command[bool], frozen=True):
    """Index ``properties.<path>`` of every event; False when it already is.

    Slow on a big store: on SQLite, writes wait for it; PostgreSQL builds it
    concurrently beside them.
    """

    result_type: ClassVar[Any] = bool

    path: str


class DropPropertyIndex(Command[bool], frozen=True):
    """Drop the path's index (filters on it scan again); False when it had none."""

    result_type: ClassVar[Any] = bool

    path: str


A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])


class Appliers(Generic[A]):
    """One back-end's apply function of each kind of command (``A``: its own context)."""

    def __init__(self) -> None:
        self._by_kind: dict[type[Command[Any]], A] = {}

    def __call__(self, kind: type[Command[Any]]) -> Callable[[F], F]:
        """Decorator: register the function applying ``kind``."""

        def register(apply: F) -> F:
            self._by_kind[kind] = cast(A, apply)
            return apply

        return register

    def of(self, command: Command[Any]) -> A:
        return self._by_kind[type(command)]

    def __contains__(self, command: Command[Any]) -> bool:
        return type(command) in self._by_kind

    def kinds(self) -> set[type[Command[Any]]]:
        return set(self._by_kind)
