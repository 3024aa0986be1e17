"""The admin API (SPEC §2): a client's tokens, managed over HTTP with an ``admin`` token.

``GET /admin/v1/tokens`` lists the caller's client's tokens (revoked ones too, never a
secret); ``POST /admin/v1/tokens`` creates one and answers 201 with its text, shown in
that answer only; ``DELETE /admin/v1/tokens/{tokenId}`` revokes one. Each handler:
check (``admin_guard``) → parse → authorise → one store call → answer.

What an admin token may do is bounded twice:
- by its client: another client's token is answered as unknown (404), never listed;
- by its own reach: a token limited to accounts ``["web"]`` cannot create one for
  ``"*"`` or ``["app"]``, nor revoke one that reaches further than it does (403), so
  an account's administrator cannot lock the whole client out.

A revocation takes effect at once (``auth.TokenVerifier``), and is idempotent: revoking
a revoked token answers 200 with its record as the first revocation left it (the first
``revoked`` time), so a retried ``DELETE`` whose answer was lost succeeds. A token may
revoke itself: the answer is 200, and the next request carrying it is 401.
No CORS headers: admin APIs are for servers and scripts, never browsers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opencdp import auth
from opencdp.api.guards import admin_guard
from opencdp.api.responses import JSONResponse
from opencdp.api.routing import Endpoint, Handler
from opencdp.api.services import Services
from opencdp.errors import AuthenticationFailed, NotFound, ValidationFailed
from opencdp.ingest import decode_json_object
from opencdp.models import WORKSPACE_PART, Principal, TokenRecord, format_millis
from opencdp.queries import parse_no_params
from opencdp.shape_errors import first_problem

TOKENS = "/admin/v1/tokens"
#: At most this many accounts, brands or scopes in one request (repeats are dropped).
MAX_IDS = 100
MAX_NAME = 100
ADMIN_ERRORS = (400, 401, 403, 405, 413, 415, 429)
# "$(?!\n)": the true end (in Python's regexes a bare "$" also matches before a final "\n")
_ID_FORM = rf"^{WORKSPACE_PART}$(?!\n)"
_NAME_FORM = r"^[^\x00-\x1f\x7f-\x9f]+$(?!\n)"

Id = Annotated[str, msgspec.Meta(pattern=_ID_FORM, description="1-64 characters of [A-Za-z0-9_.-]")]
Ids = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_IDS)]
Every = Literal["*"]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A token to create for the caller's client: ``"*"`` or a list of ids for accounts
    and brands (within the caller's own), and its scopes. Repeated ids are dropped."""

    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_NAME,
            pattern=_NAME_FORM,
            description="1-100 characters, no control characters",
        ),
    ]
    accounts: Ids | Every
    brands: Ids | Every
    scopes: Annotated[list[auth.Scope], msgspec.Meta(min_length=1, max_length=MAX_IDS)]


class TokenInfo(msgspec.Struct):
    """A token as the admin API shows it: never its secret; ``"*"`` means every account
    (brand); ``revoked`` is null while the token works."""

    id: str
    name: str
    clientId: str
    accounts: list[str] | Every
    brands: list[str] | Every
    scopes: list[str]
    created: str
    revoked: str | None

    @classmethod
    def of(cls, record: TokenRecord) -> TokenInfo:
        return cls(
            id=record.token_id,
            name=record.name,
            clientId=record.client_id,
            accounts="*" if record.accounts is None else list(record.accounts),
            brands="*" if record.brands is None else list(record.brands),
            scopes=list(record.scopes),
            created=format_millis(record.created_time),
            revoked=None if record.revoked_time is None else format_millis(record.revoked_time),
        )


class CreatedToken(TokenInfo):
    """The new token and, in ``token``, its text: shown in this answer only, keep it."""

    token: str


class TokenList(msgspec.Struct):
    """The client's tokens, oldest first, revoked ones included."""

    data: list[TokenInfo]


def endpoints(services: Services) -> list[Endpoint]:
    def admin(
        method: str, path: str, handler: Handler, operation: str, summary: str, **more: Any
    ) -> Endpoint:
        return Endpoint(
            path=path,
            methods=(method,),
            handler=handler,
            operation_id=operation,
            summary=summary,
            tag="Admin",
            scope="admin",
            **more,
        )

    return [
        admin(
            "GET",
            TOKENS,
            _list_tokens(services),
            "listTokens",
            "The client's tokens (never a secret)",
            response=TokenList,
            errors=ADMIN_ERRORS,
        ),
        admin(
            "POST",
            TOKENS,
            _create_token(services),
            "createToken",
            "Create a token for the client; its text is in this answer only",
            request_body=TokenRequest,
            response=CreatedToken,
            success=201,
            errors=ADMIN_ERRORS,
            description="403 when the token asked for would reach accounts or brands "
            "beyond the caller's own.",
        ),
        admin(
            "DELETE",
            f"{TOKENS}/{{tokenId}}",
            _revoke_token(services),
            "revokeToken",
            "Revoke a token at once (a revoked one answers as it was revoked)",
            response=TokenInfo,
            errors=(*ADMIN_ERRORS, 404),
            description="404 for an unknown id or another client's token; 403 for a "
            "token reaching beyond the caller's own accounts or brands. A token may "
            "revoke itself.",
        ),
    ]


def _list_tokens(services: Services) -> Handler:
    async def list_tokens(request: Request) -> Response:
        principal, _ = await admin_guard(request, services)
        parse_no_params(request.query_params.multi_items())
        records = await services.store.list_tokens(principal.client_id)
        return JSONResponse(TokenList([TokenInfo.of(record) for record in records]))

    return list_tokens


def _create_token(services: Services) -> Handler:
    async def create_token(request: Request) -> Response:
        principal, body = await admin_guard(request, services)
        parse_no_params(request.query_params.multi_items())
        wanted = _token_request(body)
        accounts = None if isinstance(wanted.accounts, str) else wanted.accounts  # "*": all
        brands = None if isinstance(wanted.brands, str) else wanted.brands
        _check_reach(principal, accounts, brands, "create")
        text, record = auth.new_token(
            principal.client_id, accounts, brands, wanted.scopes, _now(), wanted.name
        )
        await services.store.add_token(record)
        info = TokenInfo.of(record)
        return JSONResponse(CreatedToken(**msgspec.structs.asdict(info), token=text), 201)

    return create_token


def _revoke_token(services: Services) -> Handler:
    async def revoke_token(request: Request) -> Response:
        principal, _ = await admin_guard(request, services)
        parse_no_params(request.query_params.multi_items())
        record = await _own_token(services, principal, request.path_params["tokenId"])
        _check_reach(principal, record.accounts, record.brands, "revoke")
        if record.revoked_time is None:
            await services.store.revoke_token(record.token_id, _now())
            # read again: a revocation committed first (another request) keeps its time
            record = await _own_token(services, principal, record.token_id)
        return JSONResponse(TokenInfo.of(record))

    return revoke_token


def _token_request(body: bytes) -> TokenRequest:
    value = decode_json_object(body)
    try:
        return msgspec.convert(value, TokenRequest)
    except msgspec.ValidationError:
        raise ValidationFailed(first_problem(TokenRequest, value)) from None


async def _own_token(services: Services, principal: Principal, token_id: str) -> TokenRecord:
    """The record of ``token_id`` if it is one of the caller's client's tokens; else 404,
    the same answer for an id that does not exist and one of another client."""
    is_id = re.fullmatch(auth.TOKEN_ID, token_id) is not None
    record = await services.store.find_token(token_id) if is_id else None
    if record is None or record.client_id != principal.client_id:
        raise NotFound("token was not found")
    return record


def _check_reach(
    principal: Principal,
    accounts: Sequence[str] | None,
    brands: Sequence[str] | None,
    action: str,
) -> None:
    """403 unless a token naming these accounts and brands is within the caller's reach."""
    beyond = auth.beyond_reach(principal, accounts, brands)
    if beyond is not None:
        raise AuthenticationFailed(
            f"{beyond}: beyond this token's own {beyond}; it may not {action} such a token"
        )


def _now() -> int:
    return time.time_ns() // 1_000_000
