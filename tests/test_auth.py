"""Tokens: format, hashing, parsing, and ``authorize`` against a real SQLite store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pytest

from opencdp import auth
from opencdp.errors import AuthenticationFailed
from opencdp.models import Principal, TokenRecord, Workspace
from opencdp.store import Store, open_store

T = TypeVar("T")
NOW = 1_700_000_000_000
SHOP = Workspace("acme", "web", "shop")
TOKEN_TEXT = re.compile(r"ocdp_[0-9a-f]{12}_[A-Za-z0-9_-]{32}")


def make(
    accounts: Sequence[str] | None = None,
    brands: Sequence[str] | None = None,
    scopes: Sequence[str] = ("read", "write"),
    client: str = "acme",
) -> tuple[str, TokenRecord]:
    return auth.new_token(client, accounts, brands, scopes, NOW)


# -- format and hashing ----------------------------------------------------------------


def test_token_text_has_prefix_id_and_a_long_secret() -> None:
    token, record = make()
    assert TOKEN_TEXT.fullmatch(token)
    assert token.split("_", 2)[1] == record.token_id


def test_tokens_are_random() -> None:
    tokens = {make()[0] for _ in range(50)}
    ids = {t.split("_", 2)[1] for t in tokens}
    assert len(tokens) == len(ids) == 50


def test_record_keeps_the_sha256_of_the_secret_and_never_the_secret() -> None:
    token, record = auth.new_token("acme", ["web"], None, ["write"], NOW, name="site tag")
    token_id, secret = auth.split_token(token) or ("", "")
    assert record.secret_hash == hashlib.sha256(secret.encode()).digest()
    assert secret not in repr(record)
    assert record.token_id == token_id
    assert record.client_id == "acme"
    assert record.accounts == ("web",)
    assert record.brands is None
    assert record.scopes == ("write",)
    assert record.created_time == NOW
    assert record.revoked_time is None
    assert record.name == "site tag"


def test_scopes_are_stored_sorted_and_once() -> None:
    _, record = make(scopes=["write", "read", "write"])
    assert record.scopes == ("read", "write")


@pytest.mark.parametrize(
    ("client", "accounts", "brands", "scopes", "complaint"),
    [
        ("acme", None, None, [], "scopes"),
        ("acme", None, None, ["root"], "'root'"),
        ("acme", None, None, "read", "scopes"),
        ("", None, None, ["read"], "client id"),
        ("ac me", None, None, ["read"], "client id"),
        ("x" * 65, None, None, ["read"], "client id"),
        ("acme", [], None, ["read"], "account ids"),
        ("acme", ["web/1"], None, ["read"], "account id"),
        ("acme", "web", None, ["read"], "account ids"),
        ("acme", None, [], ["read"], "brand ids"),
        ("acme", None, ["sh op"], ["read"], "brand id"),
    ],
)
def test_bad_arguments_are_refused_by_name(
    client: str,
    accounts: Sequence[str] | None,
    brands: Sequence[str] | None,
    scopes: Sequence[str],
    complaint: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        auth.new_token(client, accounts, brands, scopes, NOW)


def test_admin_is_a_scope() -> None:
    assert make(scopes=["admin", "read"])[1].scopes == ("admin", "read")
    assert auth.parse_scopes("admin") == ("admin",)


@pytest.mark.parametrize(
    ("own_accounts", "own_brands", "accounts", "brands", "beyond"),
    [
        (None, None, None, None, None),
        (None, None, ["web"], ["shop"], None),
        (["web"], None, ["web"], None, None),
        (["web", "app"], ["shop"], ["app"], ["shop"], None),
        (["web"], None, None, None, "accounts"),
        (["web"], None, ["app"], None, "accounts"),
        (["web"], None, ["web", "app"], None, "accounts"),
        (None, ["shop"], None, None, "brands"),
        (None, ["shop"], ["web"], ["blog"], "brands"),
        (["web"], ["shop"], None, None, "accounts"),
    ],
)
def test_beyond_reach_names_what_a_token_may_not_hand_out(
    own_accounts: list[str] | None,
    own_brands: list[str] | None,
    accounts: list[str] | None,
    brands: list[str] | None,
    beyond: str | None,
) -> None:
    _, record = make(accounts=own_accounts, brands=own_brands, scopes=["admin"])
    assert auth.beyond_reach(auth.principal_of(record), accounts, brands) == beyond


def test_a_client_wide_check_looks_at_the_scope_only() -> None:
    _, record = make(accounts=["web"], brands=["shop"], scopes=["admin"])
    principal = auth.principal_of(record)
    auth.check_access(principal, None, "admin")
    with pytest.raises(AuthenticationFailed, match="admin"):
        auth.check_access(replace(principal, scopes=frozenset({"read"})), None, "admin")


def test_parse_scopes() -> None:
    assert auth.parse_scopes("write, read") == ("read", "write")
    with pytest.raises(ValueError):
        auth.parse_scopes("")
    with pytest.raises(ValueError):
        auth.parse_scopes("read,delete")


def test_split_token_round_trips() -> None:
    token, record = make()
    parts = auth.split_token(token)
    assert parts is not None
    assert parts[0] == record.token_id
    assert auth.secret_matches(record, parts[1])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ocdp_",
        "1234abcd",
        "ocdp_0123456789ab",
        "ocdp_0123456789ab_",
        "ocdp_0123456789AB_abcdefghijklmnopqrstuvwxyz012345",
        "ocdp_0123456789a_abcdefghijklmnopqrstuvwxyz012345",
        "xcdp_0123456789ab_abcdefghijklmnopqrstuvwxyz012345",
        "ocdp_0123456789ab_abcdefghijklmnop qrstuvwxyz012345",
        "Bearer ocdp_0123456789ab_abcdefghijklmnopqrstuvwxyz012345",
        "ocdp_0123456789ab_abcdefghijklmnopqrstuvwxyz012345\n",
    ],
)
def test_split_token_refuses_malformed_text(text: str) -> None:
    assert auth.split_token(text) is None


def test_secret_matches_only_the_right_secret() -> None:
    token, record = make()
    _, secret = auth.split_token(token) or ("", "")
    assert auth.secret_matches(record, secret)
    assert not auth.secret_matches(record, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not auth.secret_matches(record, "")


def test_secret_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token, record = make()
    _, secret = auth.split_token(token) or ("", "")
    assert auth.secret_matches(record, secret)
    assert calls == [(record.secret_hash, hashlib.sha256(secret.encode()).digest())]


def test_principal_of_a_record() -> None:
    _, record = make(accounts=["web", "app"], brands=None, scopes=["read"])
    assert auth.principal_of(record) == Principal(
        token_id=record.token_id,
        client_id="acme",
        accounts=frozenset({"web", "app"}),
        brands=None,
        scopes=frozenset({"read"}),
    )


# -- authorize, against a real store ------------------------------------------------------


def with_store(tmp_path: Path, work: Callable[[Store], Awaitable[T]]) -> T:
    async def session() -> T:
        store = open_store(f"sqlite:///{tmp_path / 'auth.db'}")
        await store.start()
        try:
            return await work(store)
        finally:
            await store.stop()

    return asyncio.run(session())


def check(
    tmp_path: Path,
    made: tuple[str, TokenRecord] | None,
    sent: str | None,
    workspace: Workspace = SHOP,
    scope: str = "write",
    unknown_status: int = 403,
    revoke: bool = False,
) -> Principal | AuthenticationFailed:
    """Store ``made`` (maybe revoked), then authorise ``sent``: the principal or the error."""

    async def work(store: Store) -> Principal | AuthenticationFailed:
        if made is not None:
            await store.add_token(made[1])
            if revoke:
                assert await store.revoke_token(made[1].token_id, NOW + 1)
        try:
            return await auth.TokenVerifier(store).authorize(
                sent, workspace, scope, unknown_status=unknown_status
            )
        except AuthenticationFailed as exc:
            return exc

    return with_store(tmp_path, work)


def refusal(outcome: Principal | AuthenticationFailed) -> tuple[int, str]:
    assert isinstance(outcome, AuthenticationFailed), outcome
    return outcome.status, outcome.message


def test_a_valid_token_gives_its_principal(tmp_path: Path) -> None:
    made = make(accounts=["web"], brands=["shop", "blog"], scopes=["write"])
    outcome = check(tmp_path, made, made[0])
    assert outcome == auth.principal_of(made[1])


def test_all_accounts_and_brands_cover_any_workspace_of_the_client(tmp_path: Path) -> None:
    made = make()
    outcome = check(tmp_path, made, made[0], workspace=Workspace("acme", "x", "y"), scope="read")
    assert isinstance(outcome, Principal)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("sent", [None, ""])
def test_a_missing_token_fails_with_the_callers_status(
    tmp_path: Path, sent: str | None, status: int
) -> None:
    outcome = check(tmp_path, None, sent, unknown_status=status)
    assert refusal(outcome) == (status, "auth-token: missing")


@pytest.mark.parametrize("status", [401, 403])
def test_malformed_and_unknown_tokens_fail_with_the_callers_status(
    tmp_path: Path, status: int
) -> None:
    made = make()
    stranger = make()[0]
    wrong_secret = made[0][:-4] + ("AAAA" if not made[0].endswith("AAAA") else "BBBB")
    for sent in ["1234abcd", stranger, wrong_secret]:
        outcome = check(tmp_path, None, sent, unknown_status=status)
        assert refusal(outcome) == (status, "auth-token: unknown or revoked token")
        assert sent not in str(outcome)


def test_a_wrong_secret_for_a_known_id_fails(tmp_path: Path) -> None:
    made = make()
    wrong = made[0][:-4] + ("AAAA" if not made[0].endswith("AAAA") else "BBBB")
    outcome = check(tmp_path, made, wrong, unknown_status=401)
    assert refusal(outcome) == (401, "auth-token: unknown or revoked token")


def test_a_revoked_token_fails_at_once(tmp_path: Path) -> None:
    made = make()
    outcome = check(tmp_path, made, made[0], unknown_status=401, revoke=True)
    assert refusal(outcome) == (401, "auth-token: unknown or revoked token")


@pytest.mark.parametrize(
    "workspace",
    [
        Workspace("other", "web", "shop"),
        Workspace("acme", "app", "shop"),
        Workspace("acme", "web", "blog"),
    ],
)
def test_a_token_outside_its_workspace_fails_with_403(tmp_path: Path, workspace: Workspace) -> None:
    made = make(accounts=["web"], brands=["shop"])
    outcome = check(tmp_path, made, made[0], workspace=workspace, unknown_status=401)
    assert refusal(outcome) == (403, "auth-token: not authorised for this workspace")


@pytest.mark.parametrize(("scopes", "scope"), [(["write"], "read"), (["read"], "write")])
def test_a_token_without_the_scope_fails_with_403(
    tmp_path: Path, scopes: list[str], scope: str
) -> None:
    made = make(scopes=scopes)
    outcome = check(tmp_path, made, made[0], scope=scope, unknown_status=401)
    assert refusal(outcome) == (403, f"auth-token: not authorised for {scope} access")


def test_an_unknown_id_still_compares_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    outcome = check(tmp_path, None, make()[0])
    assert refusal(outcome)[0] == 403
    assert calls == [1]
