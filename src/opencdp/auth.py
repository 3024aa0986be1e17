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

from opencdp.errors import AuthenticationFailed
from opencdp.models import Principal, TokenRecord, Workspace
from opencdp.store.base import Store

PREFIX = "ocdp"
SCOPES = frozenset({"read", "write"})
#: A token's text: its id and its secret, as groups (``split_token``).
TOKEN_PATTERN = r"ocdp_([0-9a-f]{12})_([A-Za-z0-9_-]{16,128})"
_TOKEN = re.compile(TOKEN_PATTERN)
# Compared against when no record exists, so a miss costs what a hit costs.
_MISSING_HASH = hashlib.sha256(b"no such token").digest()
_MAX_CHECKED = 10_000


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


class CheckedTokens:
    """Valid tokens already checked against their stored record, so a repeat skips the
    parsing, the hash and building the principal (an app keeps one: ``Services.tokens``).

    An entry, keyed by the whole token text, holds while the store answers the very
    record object it was checked against: records are immutable, so checking again
    would come out the same. The store answers a new object once it reads the token
    again (on every revocation: ``store/token_cache.py``), and the token is checked
    afresh, so a revocation still takes effect at once. Only valid tokens are kept.
    """

    def __init__(self) -> None:
        self._checked: dict[str, tuple[TokenRecord, Principal]] = {}

    async def principal(self, store: Store, token: str) -> Principal | None:
        """The principal of a well-formed, known, unrevoked token; ``None`` for any other."""
        entry = self._checked.get(token)
        if entry is not None and await store.find_token(entry[0].token_id) is entry[0]:
            return entry[1]
        self._checked.pop(token, None)
        record = await _find_live_record(store, token)
        if record is None:
            return None
        if len(self._checked) >= _MAX_CHECKED:
            self._checked.clear()
        self._checked[token] = (record, principal_of(record))
        return self._checked[token][1]


async def authorize(
    store: Store,
    token: str | None,
    workspace: Workspace,
    scope: str,
    *,
    unknown_status: int,
    checked: CheckedTokens | None = None,
) -> Principal:
    """The principal of ``token`` if it may use ``scope`` in ``workspace``.

    A missing, malformed, unknown or revoked token fails with ``unknown_status``
    (403 on tracking calls, 401 on read calls); a valid token without access to the
    workspace or the scope fails with 403.
    """
    if not token:
        raise AuthenticationFailed("auth-token: missing", status=unknown_status)
    principal = await (checked or CheckedTokens()).principal(store, token)
    if principal is None:
        raise AuthenticationFailed("auth-token: unknown or revoked token", status=unknown_status)
    if not _covers(principal, workspace):
        raise AuthenticationFailed("auth-token: not authorised for this workspace", status=403)
    if scope not in principal.scopes:
        raise AuthenticationFailed(f"auth-token: not authorised for {scope} access", status=403)
    return principal


def _covers(principal: Principal, workspace: Workspace) -> bool:
    return (
        workspace.client_id == principal.client_id
        and (principal.accounts is None or workspace.account_id in principal.accounts)
        and (principal.brands is None or workspace.brand_id in principal.brands)
    )


async def _find_live_record(store: Store, token: str) -> TokenRecord | None:
    parts = split_token(token)
    if parts is None:
        return None
    token_id, secret = parts
    record = await store.find_token(token_id)
    if record is None:
        hmac.compare_digest(_MISSING_HASH, hash_secret(secret))
        return None
    if not secret_matches(record, secret) or record.revoked_time is not None:
        return None
    return record


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
        raise ValueError("scopes: give at least one of read, write")
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise ValueError(f"scopes: unknown scope {unknown[0]!r}; use read and/or write")
    return tuple(sorted(set(scopes)))
