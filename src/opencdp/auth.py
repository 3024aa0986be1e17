"""Tokens: their format, hashing, and the check that a request may use a workspace.

A token reads ``ocdp_<token_id>_<secret>``: ``token_id`` is 12 lower-case hex
characters that name the stored record (safe to log), ``secret`` is a URL-safe random
string of 192 bits. The store keeps only the SHA-256 of the secret; the secret is
shown once, when the token is created. Token texts never appear in messages or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from opencdp.errors import AuthenticationFailed
from opencdp.models import Principal, TokenRecord, Workspace
from opencdp.store.base import Store

PREFIX = "ocdp"
#: ``write``: tracking calls; ``read``: the read APIs; ``admin``: managing the client's
#: tokens (``/admin/v1/tokens``) and, later, its workspaces' destinations.
Scope = Literal["read", "write", "admin"]
SCOPES = frozenset(get_args(Scope))
#: A token's id: what names its record (``ocdp_<id>_…``), safe to show and log.
TOKEN_ID = "[0-9a-f]{12}"
#: A token's text: its id and its secret, as groups (``split_token``).
TOKEN_PATTERN = rf"ocdp_({TOKEN_ID})_([A-Za-z0-9_-]{{16,128}})"
_TOKEN = re.compile(TOKEN_PATTERN)
_TOKEN_ID = slice(len(PREFIX) + 1, len(PREFIX) + 13)  # where a token's id stands in its text
# Compared against when no record exists, so a miss costs what a hit costs.
_MISSING_HASH = hashlib.sha256(b"no such token").digest()
_MAX_ENTRIES = 10_000


def new_token(
    client_id: str,
    accounts: Sequence[str] | None,
    brands: Sequence[str] | None,
    scopes: Sequence[str],
    now: int,
    name: str = "",
) -> tuple[str, TokenRecord]:
    """A fresh token: its plaintext (show it once) and the record to store.

    ``accounts`` / ``brands`` of ``None`` mean every account / brand of the client.
    Raises ``ValueError`` naming the first bad argument.
    """
    _check_part("client", client_id)
    record_accounts = _check_parts("account", accounts)
    record_brands = _check_parts("brand", brands)
    record_scopes = _check_scopes(scopes)
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    record = TokenRecord(
        token_id=token_id,
        secret_hash=hash_secret(secret),
        client_id=client_id,
        accounts=record_accounts,
        brands=record_brands,
        scopes=record_scopes,
        created_time=now,
        name=name,
    )
    return f"{PREFIX}_{token_id}_{secret}", record


def parse_scopes(text: str) -> tuple[str, ...]:
    """``"read,write"`` → ``("read", "write")``; raises ``ValueError`` for unknown scopes."""
    return _check_scopes([part.strip() for part in text.split(",") if part.strip()])


def split_token(text: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token text, else ``None``."""
    match = _TOKEN.fullmatch(text)
    if match is None:
        return None
    return match.group(1), match.group(2)


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(record: TokenRecord, secret: str) -> bool:
    """Constant-time comparison of ``secret`` with the record's stored hash."""
    return hmac.compare_digest(record.secret_hash, hash_secret(secret))


def principal_of(record: TokenRecord) -> Principal:
    return Principal(
        token_id=record.token_id,
        client_id=record.client_id,
        accounts=None if record.accounts is None else frozenset(record.accounts),
        brands=None if record.brands is None else frozenset(record.brands),
        scopes=frozenset(record.scopes),
    )


@dataclass(slots=True)
class _Entry:
    """A stored record as read at revocation count ``count``, and the one token text
    last verified against it (``None`` until one is)."""

    count: int | None
    record: TokenRecord
    principal: Principal
    text: str | None = None

    def holds(self, count: int | None) -> bool:
        """Whether the record is still current: read at this very (trusted) count."""
        return count is not None and self.count == count

    def verified(self, token: str) -> bool:
        """Whether ``token`` is the text already verified against the record."""
        return self.text is not None and token.isascii() and hmac.compare_digest(self.text, token)


class TokenVerifier:
    """Turns the token text of a request into its principal, with one cache for every
    store (an app keeps one: ``Services.tokens``), so a known token costs no query.

    Records are cached by token id together with the store's revocation count read
    *before* the record was read; an entry serves only while the count is unchanged.
    A token can change in one way only, by being revoked, and the store changes the
    count after every committed revocation (by any process): so an entry served is
    what the store would answer now, up to the store's bound on seeing another
    process's revocation (``Store.revocations``). A count of ``None`` (the store
    cannot tell yet) is never trusted. Unknown token ids are never cached, so a new
    token works at once and made-up ids cannot fill the cache; the cache holds at
    most ``max_entries`` records, the oldest dropped first. Every request proves its
    secret in constant time: against the record's hash, or, for the very text that
    last passed that check, by comparing the whole text (no parsing, no hashing).
    """

    def __init__(self, store: Store, max_entries: int = _MAX_ENTRIES) -> None:
        self._store = store
        self._max_entries = max_entries
        self._records: dict[str, _Entry] = {}

    async def principal(
        self, token: str, *, name: str = "auth-token", status: int = 401
    ) -> Principal:
        """The principal of a well-formed, known, unrevoked ``token``; any other fails
        with ``status`` and a message naming where the token came from (``name``)."""
        count = self._store.revocations()
        entry = self._records.get(token[_TOKEN_ID])
        if entry is not None and entry.holds(count) and entry.verified(token):
            return entry.principal
        parts = split_token(token)
        entry = None if parts is None else await self._entry(parts[0], count)
        if parts is None or entry is None:
            if parts is not None:  # a miss costs what a hit costs
                hmac.compare_digest(_MISSING_HASH, hash_secret(parts[1]))
            raise AuthenticationFailed(f"{name}: unknown or revoked token", status=status)
        if not secret_matches(entry.record, parts[1]) or entry.record.revoked_time is not None:
            raise AuthenticationFailed(f"{name}: unknown or revoked token", status=status)
        entry.text = token
        return entry.principal

    async def authorize(
        self, token: str | None, workspace: Workspace | None, scope: str, *, unknown_status: int
    ) -> Principal:
        """The principal of ``token`` if it may use ``scope`` in ``workspace``.

        ``workspace`` is ``None`` for a call about the token's client as a whole (the
        admin API): then only the scope is checked. A missing, malformed, unknown or
        revoked token fails with ``unknown_status`` (403 on tracking calls, 401 on read
        and admin calls); a valid token without access to the workspace or the scope
        fails with 403.
        """
        if not token:
            raise AuthenticationFailed("auth-token: missing", status=unknown_status)
        principal = await self.principal(token, status=unknown_status)
        check_access(principal, workspace, scope)
        return principal

    async def _entry(self, token_id: str, count: int | None) -> _Entry | None:
        """The stored record of ``token_id``: from the cache while it was read at
        ``count`` (read before this call), else from the store."""
        cached = self._records.get(token_id)
        if cached is not None and cached.holds(count):
            return cached
        record = await self._store.find_token(token_id)
        if record is None:
            return None
        entry = _Entry(count, record, principal_of(record))
        self._records.pop(token_id, None)
        if count is not None:
            if len(self._records) >= self._max_entries:
                del self._records[next(iter(self._records))]
            self._records[token_id] = entry
        return entry


def check_access(principal: Principal, workspace: Workspace | None, scope: str) -> None:
    """403 unless ``principal`` covers ``workspace`` (if one is named) and holds ``scope``."""
    if workspace is not None and not _covers(principal, workspace):
        raise AuthenticationFailed("auth-token: not authorised for this workspace", status=403)
    if scope not in principal.scopes:
        raise AuthenticationFailed(f"auth-token: not authorised for {scope} access", status=403)


def beyond_reach(
    principal: Principal, accounts: Sequence[str] | None, brands: Sequence[str] | None
) -> str | None:
    """``"accounts"`` or ``"brands"`` if a token naming these (``None``: all) would reach
    further than ``principal`` does, else ``None``: what an admin token may hand out or
    take away is bounded by its own reach."""
    for kind, own, wanted in (
        ("accounts", principal.accounts, accounts),
        ("brands", principal.brands, brands),
    ):
        if own is not None and (wanted is None or not own.issuperset(wanted)):
            return kind
    return None


def _covers(principal: Principal, workspace: Workspace) -> bool:
    return (
        workspace.client_id == principal.client_id
        and (principal.accounts is None or workspace.account_id in principal.accounts)
        and (principal.brands is None or workspace.brand_id in principal.brands)
    )


def _check_part(kind: str, value: str) -> None:
    if not Workspace.is_valid_part(value):
        raise ValueError(f"{kind} id {value!r}: must be 1-64 characters of [A-Za-z0-9_.-]")


def _check_parts(kind: str, values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise ValueError(f"{kind} ids: give a list of ids, not one string")
    if not values:
        raise ValueError(f"{kind} ids: give at least one, or all {kind}s")
    for value in values:
        _check_part(kind, value)
    return tuple(dict.fromkeys(values))


def _check_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise ValueError("scopes: give a list of scopes, not one string")
    if not scopes:
        raise ValueError("scopes: give at least one of read, write, admin")
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValueError(f"scopes: unknown scope {unknown[0]!r}; use read, write, admin")
    return tuple(sorted(set(scopes)))
