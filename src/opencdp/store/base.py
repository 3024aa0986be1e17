"""The store contract, in the domain's words. Only our own typed data crosses it.

Two implementations satisfy it: ``SQLiteStore`` (embedded, the default) and
``PostgresStore`` (scale-out). Every store test runs against each.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from opencdp.models import Accepted, Call, TokenRecord, Workspace


class Store(ABC):
    """Durable home of events, profiles and tokens.

    ``append_calls`` answers only after the transaction holding the calls has
    committed to disk: the caller may then acknowledge them.
    """

    @abstractmethod
    async def start(self) -> None:
        """Open connections (and the writer); apply pending migrations."""

    @abstractmethod
    async def stop(self) -> None:
        """Finish every queued write, commit, and close."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    @abstractmethod
    def migrate(self) -> int:
        """Bring the schema up to date; return the schema version now in force."""

    # -- ingestion ---------------------------------------------------------------

    @abstractmethod
    async def append_calls(self, workspace: Workspace, calls: Sequence[Call]) -> list[Accepted]:
        """Store the calls (one event each), resolve identities, merge traits.

        Returns one ``Accepted`` per call, in order. A call whose ``message_id`` the
        workspace has already accepted is not stored again: its ``Accepted`` carries
        the first call's event id and ``duplicate=True``.
        """

    # -- tokens ------------------------------------------------------------------

    @abstractmethod
    async def add_token(self, token: TokenRecord) -> None: ...

    @abstractmethod
    async def find_token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    async def list_tokens(self) -> list[TokenRecord]: ...

    @abstractmethod
    async def revoke_token(self, token_id: str, when: int) -> bool:
        """Mark the token revoked; False when no such (unrevoked) token exists."""


def open_store(url: str) -> Store:
    """The store for a database URL: ``sqlite:///path`` or ``postgresql://…``."""
    if url.startswith("sqlite:"):
        from opencdp.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if url.startswith(("postgresql:", "postgres:")):
        from opencdp.store.postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://…")


def sqlite_path(url: str) -> str:
    """``sqlite:///./x.db`` → ``./x.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("///"):
        return rest[3:]
    if rest.startswith("//"):
        return rest[2:]
    return rest
