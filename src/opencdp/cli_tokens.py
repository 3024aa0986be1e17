"""How ``opencdp tokens list`` shows tokens: a table, or JSON; never a secret."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opencdp.models import TokenRecord, format_millis


def token_json(record: TokenRecord) -> dict[str, Any]:
    return {
        "id": record.token_id,
        "client": record.client_id,
        "accounts": None if record.accounts is None else list(record.accounts),
        "brands": None if record.brands is None else list(record.brands),
        "scopes": list(record.scopes),
        "name": record.name,
        "created": format_millis(record.created_time),
        "revoked": None if record.revoked_time is None else format_millis(record.revoked_time),
    }


def token_table(records: Sequence[TokenRecord]) -> str:
    header = ("ID", "CLIENT", "ACCOUNTS", "BRANDS", "SCOPES", "CREATED", "REVOKED", "NAME")
    rows = [header] + [_token_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
    return "".join(line.rstrip() + "\n" for line in lines)


def _token_row(record: TokenRecord) -> tuple[str, ...]:
    def ids(values: tuple[str, ...] | None) -> str:
        return "*" if values is None else ",".join(values)

    revoked = "-" if record.revoked_time is None else format_millis(record.revoked_time)
    return (
        record.token_id,
        record.client_id,
        ids(record.accounts),
        ids(record.brands),
        ",".join(record.scopes),
        format_millis(record.created_time),
        revoked,
        record.name,
    )
