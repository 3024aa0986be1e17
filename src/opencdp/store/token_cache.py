"""Token records cached per database version, so most requests run no token query.

Without it every request runs a token query; on SQLite that query runs on the event
loop and hands the GIL to the writer thread, which can keep it for a whole switch
interval. A cached record is used only while the database is unchanged by any other
connection since it was read (SQLite's ``PRAGMA data_version``, which is cheap: no
table is read). Any commit elsewhere (a revocation by ``opencdp tokens revoke``, by
another server process, or this process's own event writes) makes the next request
read the token again, so a revocation takes effect at once, and under write load the
token is read about once per group commit instead of once per request.
"""

from __future__ import annotations

from opencdp.models import TokenRecord

_MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self) -> None:
        self._records: dict[str, tuple[int, TokenRecord]] = {}

    def get(self, token_id: str, version: int) -> TokenRecord | None:
        """The record read at database ``version``, if that is still the version."""
        entry = self._records.get(token_id)
        if entry is None or entry[0] != version:
            return None
        return entry[1]

    def put(self, record: TokenRecord, version: int) -> None:
        if len(self._records) >= _MAX_ENTRIES:
            self._records.clear()
        self._records[record.token_id] = (version, record)

    def forget(self, token_id: str) -> None:
        self._records.pop(token_id, None)
