"""What differs between the stores' SQL, as one small class per back-end.

The read plan (``read_plan``, ``event_walks``) writes each statement once, with ``?``
marks, and asks the store's dialect for every part that differs: its marks, index
hints, join order, lists of values, JSON columns and the expressions on
``rawData.properties``. ``sqlite.dialect`` and ``postgres.dialect`` implement it.

A property filter matches the same events on both stores (see ``property_is``); a
declared index uses the filter's own expression, since a planner only uses an
expression index for the identical expression.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeAlias

from opencdp.store.number_text import number_forms

#: One SQL statement in the store's own marks, and its parameters (a plain tuple: a
#: read makes several, on the hot path).
Statement: TypeAlias = tuple[str, Sequence[Any]]


class Dialect(ABC):
    """The SQL of one back-end, where it is not the same as the other's."""

    #: How events are joined to profiles (SQLite's CROSS JOIN keeps the written order).
    join: ClassVar[str]
    #: The ``property_type`` names of a JSON number.
    number_types: ClassVar[str]
    #: Whether the store prints a JSON number in plain decimals (else as it was written).
    plain_numbers: ClassVar[bool]
    #: The events column holding their change feed position.
    position: ClassVar[str]
    #: A JSON column's value as Python data.
    decode: Callable[[Any], Any]

    @abstractmethod
    def statement(self, sql: str, params: Sequence[Any]) -> Statement:
        """``sql`` written with ``?`` marks, in the store's own marks."""

    @abstractmethod
    def index(self, name: str) -> str:
        """The hint, after a table's alias, that makes the store walk index ``name``."""

    @abstractmethod
    def one_of(self, column: str, values: Sequence[Any], *, negate: bool) -> tuple[str, list[Any]]:
        """``column`` is (``negate``: is not) one of ``values``."""

    @abstractmethod
    def literal(self, text: str) -> str:
        """A SQL string literal holding ``text``, with no ``?`` mark readable inside it."""

    @abstractmethod
    def property_value(self, column: str, dotted: str) -> str:
        """``<column>.properties.<dotted>`` as text: a string's own text, any other JSON
        value its JSON text. The path is written in as literals, never bound, so that the
        filter's expression is the declared index's."""

    @abstractmethod
    def property_type(self, column: str, dotted: str) -> str:
        """The JSON type of ``<column>.properties.<dotted>``: both stores name ``null``,
        ``array`` and ``object`` alike; numbers are named by ``number_types``."""

    @abstractmethod
    def property_key(self, column: str, dotted: str) -> str:
        """What a declared index keeps of ``property_value``."""

    @abstractmethod
    def property_index_sql(self, dotted: str) -> str:
        """The statement that builds the index for filters on ``properties.<dotted>``: the
        events of a workspace with one value, in the sort order (and their action, so
        ``include``/``exclude`` and the total need no event rows)."""

    def property_is(self, dotted: str, value: str) -> tuple[str, list[Any]]:
        """``rawData.properties.<dotted>`` matches ``value``, the same on both stores:

        a string by its text, a boolean as ``true``/``false``, a number by its decimal
        text without exponent (``1e16`` = ``10000000000000000``, ``3`` ≠ ``3.0``); JSON
        ``null``, arrays and objects match nothing. The stores write a number's text
        differently (SQLite as sent, PostgreSQL in plain decimals), so a number whose
        forms differ is compared against each store's own forms of it.
        """
        _, sql, params = self._property_match(dotted, value)
        return sql, params

    def _property_match(self, dotted: str, value: str) -> tuple[list[str], str, list[Any]]:
        """The texts the value may have in the store, and the terms that match it."""
        text, kind = self.property_value("e.raw", dotted), self.property_type("e.raw", dotted)
        if value == "null" or value[:1] in ("[", "{"):
            return [value], f"{text} = ? AND {kind} NOT IN ('null', 'array', 'object')", [value]
        forms = number_forms(value, plain=self.plain_numbers)
        if forms is None or forms == [value]:
            return [value], f"{text} = ?", [value]
        marks = ", ".join("?" * len(forms))
        sql = (
            f"{text} IN (?, {marks}) AND CASE WHEN {kind} IN {self.number_types}"
            f" THEN {text} IN ({marks}) ELSE {text} = ? END"
        )
        return [value, *forms], sql, [value, *forms, *forms, value]


def property_index(dotted: str) -> str:
    """The name of the declared index on ``properties.<dotted>``: readable, and unique."""
    slug = re.sub(r"[^a-z0-9]+", "_", dotted.lower()).strip("_")[:24]
    return f"events_by_property_{slug}_{hashlib.sha256(dotted.encode()).hexdigest()[:8]}"
