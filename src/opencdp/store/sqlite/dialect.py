"""SQLite's SQL where it differs from PostgreSQL's (see ``store.dialect``).

Statements keep our ``?`` marks; lists of values are one mark each. A read names the
index it walks (``INDEXED BY``) and joins with ``CROSS JOIN``, which SQLite's planner
never reorders, so every query shape keeps the plan ``tests/test_query_plans.py`` pins.
JSON columns are text, decoded here; ``json_type`` names a number ``integer`` or
``real``, and a number's text is kept as it was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from opencdp.store.dialect import Dialect, Statement, property_index


class SQLiteDialect(Dialect):
    join = "CROSS JOIN"
    number_types = "('integer', 'real')"
    plain_numbers = False
    position = "seq"  # one writer at a time: seq is already in commit order
    #: JSON columns are text.
    decode = msgspec.json.Decoder().decode

    def statement(self, sql: str, params: Sequence[Any]) -> Statement:
        return sql, params

    def index(self, name: str) -> str:
        return f"INDEXED BY {name}"

    def one_of(self, column: str, values: Sequence[Any], *, negate: bool) -> tuple[str, list[Any]]:
        marks = ", ".join("?" * len(values))
        return f"{column} {'NOT IN' if negate else 'IN'} ({marks})", list(values)

    def literal(self, text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    def property_value(self, column: str, dotted: str) -> str:
        path = self._path(dotted)
        return (
            f"(CASE json_type({column}, {path}) WHEN 'text' THEN {column} ->> {path}"
            f" ELSE {column} -> {path} END)"
        )

    def property_type(self, column: str, dotted: str) -> str:
        return f"json_type({column}, {self._path(dotted)})"

    def property_key(self, column: str, dotted: str) -> str:
        """All of the value: SQLite's index entries have no size limit."""
        return self.property_value(column, dotted)

    def property_index_sql(self, dotted: str) -> str:
        return (
            f"CREATE INDEX IF NOT EXISTS {property_index(dotted)} ON events (workspace_id,"
            f" {self.property_key('raw', dotted)}, event_time, received_time, event_id, action)"
        )

    def _path(self, dotted: str) -> str:
        return self.literal("$.properties" + "".join(f'."{key}"' for key in dotted.split(".")))


SQLITE = SQLiteDialect()
