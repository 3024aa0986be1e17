"""PostgreSQL's SQL where it differs from SQLite's (see ``store.dialect``).

Statements are written with ``?`` marks and read with psycopg's ``%s``; a list of values
is one array parameter (``= ANY``), so a statement's text does not depend on the list's
length. The planner picks indexes itself. ``jsonb`` columns arrive decoded;
``jsonb_typeof`` names every number ``number``, and a number's text is in plain decimals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opencdp.store.dialect import Dialect, Statement, property_index

#: How much of a declared property's value an index keeps (see ``property_key``).
INDEXED_PREFIX = 256


class PostgresDialect(Dialect):
    join = "JOIN"
    number_types = "('number')"
    plain_numbers = True
    position = "position"  # seq is handed out before commit: migration 0006

    def statement(self, sql: str, params: Sequence[Any]) -> Statement:
        return sql.replace("?", "%s"), params

    @staticmethod
    def decode(value: Any) -> Any:
        """psycopg has already decoded ``jsonb`` columns."""
        return value

    def index(self, name: str) -> str:
        return ""

    def one_of(self, column: str, values: Sequence[Any], *, negate: bool) -> tuple[str, list[Any]]:
        return f"{'NOT ' if negate else ''}({column} = ANY(?))", [list(values)]

    def literal(self, text: str) -> str:
        """An ``E''`` string (read the same whatever ``standard_conforming_strings`` says)
        with ``?`` and ``%`` as hex escapes, so neither our ``?`` marks nor psycopg's
        ``%s`` can be found inside it."""
        escaped = text.replace("\\", "\\\\").replace("'", "''")
        return "E'" + escaped.replace("?", "\\x3f").replace("%", "\\x25") + "'"

    def property_value(self, column: str, dotted: str) -> str:
        return f"({column} #>> {self._path(dotted)})"

    def property_type(self, column: str, dotted: str) -> str:
        return f"jsonb_typeof({column} #> {self._path(dotted)})"

    def property_key(self, column: str, dotted: str) -> str:
        """The value's first ``INDEXED_PREFIX`` characters: an index entry holds about
        2,700 bytes (a longer value failed its whole insert)."""
        return f"left({self.property_value(column, dotted)}, {INDEXED_PREFIX})"

    def property_is(self, dotted: str, value: str) -> tuple[str, list[Any]]:
        """The shared match, after a term on ``property_key`` for the declared index."""
        texts, sql, params = self._property_match(dotted, value)
        prefixes = sorted({text[:INDEXED_PREFIX] for text in texts})
        key = f"{self.property_key('e.raw', dotted)} IN ({', '.join('?' * len(prefixes))})"
        return f"{key} AND {sql}", [*prefixes, *params]

    def property_index_sql(self, dotted: str) -> str:
        return (
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {property_index(dotted)} ON events"
            f" (workspace_id, {self.property_key('raw', dotted)}, event_time, received_time,"
            " event_id) INCLUDE (action)"
        )

    def _path(self, dotted: str) -> str:
        return f"ARRAY[{', '.join(map(self.literal, ['properties', *dotted.split('.')]))}]"


POSTGRES = PostgresDialect()
