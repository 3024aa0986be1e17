"""The admin API (SPEC §2): a client's tokens listed, created and revoked over HTTP, on
each store; who may do what; every body refused by field; the SPEC §3 request rules."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencdp import auth
from opencdp.app import create_app
from opencdp.config import Settings
from opencdp.ratelimit import MemoryRateLimiter
from opencdp.store.base import Store
from tests.conftest import ACCOUNT, CLIENT, TRACK, MakeToken, client_for
from tests.server_process import ServerProcess
from tests.test_http_rules import assert_error
from tests.test_readme import ROOT

pytestmark = pytest.mark.anyio

TOKENS = "/admin/v1/tokens"
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
NEW = {"name": "reports", "accounts": [ACCOUNT], "brands": "*", "scopes": ["read"]}
FIELDS = {"id", "name", "clientId", "accounts", "brands", "scopes", "created", "revoked"}
CALL = {"userId": "u-1", "event": "Signed Up", "timestamp": "2024-05-01T10:00:00Z"}


async def admin_token(make_token: MakeToken, **reach: Any) -> dict[str, str]:
    """Headers carrying a new admin token (every account and brand unless ``reach`` says)."""
    reach = {"accounts": None, "brands": None, **reach}
    return {"auth-token": await make_token(scopes=("admin",), **reach)}


def token_id(text: str) -> str:
    parts = auth.split_token(text)
    assert parts is not None
    return parts[0]


# -- create, list, revoke -----------------------------------------------------------------


async def test_a_created_token_is_shown_once_and_works_at_once(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token)
    response = await client.post(TOKENS, json=NEW, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == FIELDS | {"token"}
    assert created["id"] == token_id(created["token"])
    assert (created["clientId"], created["name"]) == (CLIENT, "reports")
    assert (created["accounts"], created["brands"], created["scopes"]) == ([ACCOUNT], "*", ["read"])
    assert ISO.fullmatch(created["created"]) and created["revoked"] is None

    read = await client.get(f"{TRACK}/events", headers={"auth-token": created["token"]})
    assert read.status_code == 200, read.text
    write = await client.post(f"{TRACK}/track", json=CALL, headers={"auth-token": created["token"]})
    assert_error(write, 403, "authentication_error")  # read scope only

    listed = (await client.get(TOKENS, headers=headers)).json()["data"]
    [shown] = [token for token in listed if token["id"] == created["id"]]
    assert shown == {key: created[key] for key in FIELDS}
    secret = created["token"].split("_", 2)[2]
    assert secret not in json.dumps(listed)


async def test_repeated_ids_and_scopes_are_dropped(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    body = {"name": "n", "accounts": ["b", "a", "b"], "brands": ["x", "x"],
            "scopes": ["write", "read", "write"]}
    response = await client.post(TOKENS, json=body, headers=await admin_token(make_token))
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["accounts"], created["brands"]) == (["b", "a"], ["x"])
    assert created["scopes"] == ["read", "write"]


async def test_the_list_holds_the_clients_tokens_only_oldest_first(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token)
    mine = [token_id(await make_token(scopes=("write",))) for _ in range(2)]
    theirs = token_id(await make_token(scopes=("admin",), client="other"))
    listed = (await client.get(TOKENS, headers=headers)).json()["data"]
    ids = [token["id"] for token in listed]
    assert ids[1:] == mine and len(ids) == 3
    assert theirs not in ids
    assert all(set(token) == FIELDS and token["clientId"] == CLIENT for token in listed)


async def test_a_revoked_token_stops_at_once_and_a_second_revoke_answers_the_same(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token)
    victim = await make_token(scopes=("read",))
    events = f"{TRACK}/events"
    assert (await client.get(events, headers={"auth-token": victim})).status_code == 200  # cached

    first = await client.delete(f"{TOKENS}/{token_id(victim)}", headers=headers)
    assert first.status_code == 200, first.text
    assert set(first.json()) == FIELDS and ISO.fullmatch(first.json()["revoked"])
    assert_error(await client.get(events, headers={"auth-token": victim}), 401,
                 "authentication_error", tracking=False)

    again = await client.delete(f"{TOKENS}/{token_id(victim)}", headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json()  # the first revocation's time
    listed = (await client.get(TOKENS, headers=headers)).json()["data"]
    revoked = [token["revoked"] for token in listed if token["id"] == token_id(victim)]
    assert revoked == [first.json()["revoked"]]


async def test_concurrent_revokes_all_answer_the_one_revocation(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token)
    victim = token_id(await make_token(scopes=("read",)))
    answers = await asyncio.gather(
        *(client.delete(f"{TOKENS}/{victim}", headers=headers) for _ in range(5))
    )
    assert {answer.status_code for answer in answers} == {200}
    [revoked] = {answer.json()["revoked"] for answer in answers}
    assert revoked is not None


async def test_an_admin_token_may_revoke_itself_and_is_refused_from_then_on(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token)
    me = token_id(headers["auth-token"])
    response = await client.delete(f"{TOKENS}/{me}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["revoked"] is not None
    for refused in (
        await client.get(TOKENS, headers=headers),
        await client.post(TOKENS, json=NEW, headers=headers),
    ):
        assert_error(refused, 401, "authentication_error", tracking=False)


@pytest.mark.parametrize("tokenId", ["0123456789ab", "nothex!!", "0123456789AB", "x" * 5000,
                                     "0123456789ab%00", "0123456789ab%0A"])
async def test_an_unknown_token_id_is_404(
    client: httpx.AsyncClient, make_token: MakeToken, tokenId: str
) -> None:
    response = await client.delete(f"{TOKENS}/{tokenId}", headers=await admin_token(make_token))
    assert_error(response, 404, "not_found", tracking=False)


async def test_another_clients_token_is_unknown_and_stays_working(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    theirs = await make_token(scopes=("read",), client="other", accounts=None, brands=None)
    response = await client.delete(f"{TOKENS}/{token_id(theirs)}",
                                   headers=await admin_token(make_token))
    assert_error(response, 404, "not_found", tracking=False)
    read = await client.get("/track/other/a/b/v1/events", headers={"auth-token": theirs})
    assert read.status_code == 200


# -- what an admin token may hand out and take away ------------------------------------------


@pytest.mark.parametrize(
    ("own", "asked", "field"),
    [
        ({"accounts": ["web"]}, {"accounts": "*"}, "accounts"),
        ({"accounts": ["web"]}, {"accounts": ["app"]}, "accounts"),
        ({"accounts": ["web"]}, {"accounts": ["web", "app"]}, "accounts"),
        ({"brands": ["shop"]}, {"accounts": "*", "brands": "*"}, "brands"),
        ({"brands": ["shop"]}, {"accounts": "*", "brands": ["shop", "blog"]}, "brands"),
    ],
)
async def test_no_token_reaching_beyond_the_admins_own_is_created(
    client: httpx.AsyncClient,
    make_token: MakeToken,
    own: dict[str, Any],
    asked: dict[str, Any],
    field: str,
) -> None:
    headers = await admin_token(make_token, **own)
    response = await client.post(TOKENS, json={**NEW, "brands": "*", **asked}, headers=headers)
    body = assert_error(response, 403, "authentication_error", tracking=False)
    assert body["error"]["message"].startswith(f"{field}: ")
    listed = (await client.get(TOKENS, headers=headers)).json()["data"]
    assert len(listed) == 1  # only the admin token itself


async def test_a_narrow_admin_creates_within_its_reach(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token, accounts=["web", "app"], brands=["shop"])
    body = {**NEW, "accounts": ["app"], "brands": ["shop"], "scopes": ["write", "admin"]}
    response = await client.post(TOKENS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["scopes"] == ["admin", "write"]


async def test_a_narrow_admin_cannot_revoke_a_wider_token(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    headers = await admin_token(make_token, accounts=["web"])
    wider = await make_token(scopes=("read",), accounts=None, brands=None)
    narrower = await make_token(scopes=("read",), accounts=["web"], brands=["shop"])
    response = await client.delete(f"{TOKENS}/{token_id(wider)}", headers=headers)
    assert_error(response, 403, "authentication_error", tracking=False)
    assert (await client.get(f"{TRACK}/events", headers={"auth-token": wider})).status_code == 200
    response = await client.delete(f"{TOKENS}/{token_id(narrower)}", headers=headers)
    assert response.status_code == 200, response.text


# -- who may call -------------------------------------------------------------------------


ROUTES = [("GET", TOKENS), ("POST", TOKENS), ("DELETE", f"{TOKENS}/0123456789ab")]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("token", [None, "", "ocdp_0123456789ab_" + "a" * 32, "garbage"])
async def test_no_token_or_an_unknown_one_is_401(
    client: httpx.AsyncClient, method: str, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"auth-token": token}
    response = await client.request(method, path, json=NEW, headers=headers)
    assert_error(response, 401, "authentication_error", tracking=False)
    assert "x-ratelimit-limit" not in response.headers


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_token_without_the_admin_scope_is_403(
    client: httpx.AsyncClient, make_token: MakeToken, method: str, path: str
) -> None:
    token = await make_token(scopes=("read", "write"), accounts=None, brands=None)
    response = await client.request(method, path, json=NEW, headers={"auth-token": token})
    body = assert_error(response, 403, "authentication_error", tracking=False)
    assert "admin" in body["error"]["message"]


# -- bodies refused by field ----------------------------------------------------------------


BAD_ID = "must be 1-64 characters of [A-Za-z0-9_.-]"


def with_(**changes: Any) -> dict[str, Any]:
    return {**NEW, **changes}


def without(field: str) -> dict[str, Any]:
    return {key: value for key, value in NEW.items() if key != field}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (without("name"), "name: required"),
        (without("accounts"), "accounts: required"),
        (without("brands"), "brands: required"),
        (without("scopes"), "scopes: required"),
        (with_(name=""), "name: must not be empty"),
        (with_(name="n" * 101), "name: must be at most 100 characters"),
        (with_(name="n" * 500_000), "name: must be at most 100 characters"),
        (with_(accounts=["a" * 500_000]), f"accounts[0]: {BAD_ID}"),
        (with_(name="two\nlines"), "name: must be 1-100 characters, no control characters"),
        (with_(name="trailing\n"), "name: must be 1-100 characters, no control characters"),
        (with_(name="bell\x07"), "name: must be 1-100 characters, no control characters"),
        (with_(name="nul\x00"), "name: must not contain the NUL character (\\u0000)"),
        (with_(name=7), "name: must be a string (got integer)"),
        (with_(name=None), "name: must be a string (got null)"),
        (with_(accounts="all"), 'accounts: must be an array or "*" (got string)'),
        (with_(accounts=None), 'accounts: must be an array or "*" (got null)'),
        (with_(accounts={"web": 1}), 'accounts: must be an array or "*" (got object)'),
        (with_(accounts=[]), "accounts: must hold 1 to 100 items (got 0)"),
        (with_(accounts=[f"a{i}" for i in range(101)]), "accounts: must hold 1 to 100 items"),
        (with_(accounts=["web", "bad/id"]), f"accounts[1]: {BAD_ID}"),
        (with_(accounts=["web\n"]), f"accounts[0]: {BAD_ID}"),
        (with_(accounts=["a" * 65]), f"accounts[0]: {BAD_ID}"),
        (with_(accounts=[""]), f"accounts[0]: {BAD_ID}"),
        (with_(accounts=[1]), "accounts[0]: must be a string (got integer)"),
        (with_(brands=["sh op"]), f"brands[0]: {BAD_ID}"),
        (with_(brands=[["nested"]]), "brands[0]: must be a string (got array)"),
        (with_(scopes=[]), "scopes: must hold 1 to 100 items (got 0)"),
        (with_(scopes="read"), "scopes: must be an array (got string)"),
        (with_(scopes=["read", "root"]), 'scopes[1]: must be one of "admin", "read", "write"'),
        (with_(scopes=["READ"]), 'scopes[0]: must be one of "admin", "read", "write"'),
        (with_(scopes=["read"] * 101), "scopes: must hold 1 to 100 items (got 101)"),
        (with_(clientId="x"), "clientId: unknown field (known: name, accounts, brands, scopes)"),
        (with_(**{"x" * 10_000: 1}), "x" * 64 + "…: unknown field"),
    ],
)
async def test_a_bad_body_is_400_naming_the_field(
    client: httpx.AsyncClient, make_token: MakeToken, body: dict[str, Any], message: str
) -> None:
    headers = await admin_token(make_token)
    response = await client.post(TOKENS, json=body, headers=headers)
    error = assert_error(response, 400, "validation_error", tracking=False)
    assert error["error"]["message"].startswith(message)
    assert len(error["error"]["message"]) < 200
    assert len((await client.get(TOKENS, headers=headers)).json()["data"]) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "body: must be a JSON object (got an empty body)"),
        (b"[]", "body: must be a JSON object (got array)"),
        (b'"x"', "body: must be a JSON object (got string)"),
        (b"{oops", "body: malformed JSON"),
        (b'{"name": "\xff"}', "body: not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "body: "),
        (b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body: "),
    ],
)
async def test_a_body_that_is_no_json_object_is_400(
    client: httpx.AsyncClient, make_token: MakeToken, content: bytes, message: str
) -> None:
    headers = {**await admin_token(make_token), "content-type": "application/json"}
    response = await client.post(TOKENS, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_request_error", "validation_error")
    assert response.json()["error"]["message"].startswith(message)


async def test_a_huge_name_is_refused_by_the_body_limit(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    async with client_for(create_app(settings.with_(read_body_limit=10_000), store)) as client:
        response = await client.post(
            TOKENS, json=with_(name="n" * 20_000), headers=await admin_token(make_token)
        )
    assert_error(response, 413, "invalid_request_error", tracking=False)


async def test_any_printable_name_round_trips(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    name = "Équipe 🚀 \u202eltr ' \" \\ <b>&amp;"
    headers = await admin_token(make_token)
    response = await client.post(TOKENS, json=with_(name=name), headers=headers)
    assert response.status_code == 201, response.text
    listed = (await client.get(TOKENS, headers=headers)).json()["data"]
    assert [token["name"] for token in listed if token["id"] == response.json()["id"]] == [name]


@pytest.mark.parametrize(
    "token", ["ocdp_" + "a" * 100_000, "ocdp_0123456789ab_" + "é" * 20, "\u202eocdp_x"]
)
async def test_a_hostile_token_text_is_401(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get(TOKENS, headers=[(b"auth-token", token.encode())])
    assert_error(response, 401, "authentication_error", tracking=False)


# -- the request rules of SPEC §3 -------------------------------------------------------------


async def test_the_content_type_is_checked_before_the_token(client: httpx.AsyncClient) -> None:
    response = await client.post(TOKENS, content=b"{}", headers={"content-type": "text/plain"})
    assert_error(response, 415, "invalid_request_error", tracking=False)


async def test_the_declared_size_is_checked_before_the_token(
    settings: Settings, store: Store
) -> None:
    async with client_for(create_app(settings.with_(read_body_limit=100), store)) as client:
        response = await client.post(TOKENS, content=b" " * 200,
                                     headers={"content-type": "application/json"})
    assert_error(response, 413, "invalid_request_error", tracking=False)


@pytest.mark.parametrize(("method", "path"), [("PUT", TOKENS), ("PATCH", TOKENS),
                                              ("GET", f"{TOKENS}/0123456789ab"),
                                              ("DELETE", TOKENS)])
async def test_other_methods_are_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert_error(response, 405, "invalid_request_error", tracking=False)


async def test_unknown_query_parameters_are_400(
    client: httpx.AsyncClient, make_token: MakeToken
) -> None:
    response = await client.get(f"{TOKENS}?size=5", headers=await admin_token(make_token))
    body = assert_error(response, 400, "validation_error", tracking=False)
    assert body["error"]["message"] == "size: unknown parameter"


async def test_admin_calls_share_the_tokens_rate_limit(
    settings: Settings, store: Store, make_token: MakeToken
) -> None:
    limiter = MemoryRateLimiter(rate=0.5, burst=2, clock=lambda: 0.0)
    headers = await admin_token(make_token)
    async with client_for(create_app(settings, store, limiter)) as client:
        responses = [await client.get(TOKENS, headers=headers) for _ in range(2)]
        responses.append(await client.post(TOKENS, content=b"{oops",
                                           headers={**headers, "content-type": "application/json"}))
    assert [r.headers["x-ratelimit-remaining"] for r in responses] == ["1", "0", "0"]
    body = assert_error(responses[2], 429, "rate_limit_error", tracking=False)
    assert body and responses[2].headers["retry-after"]


async def test_request_ids_and_no_cors(client: httpx.AsyncClient, make_token: MakeToken) -> None:
    origin = {"Origin": "https://shop.example", "X-Request-Id": "trace-7"}
    preflight = await client.options(TOKENS, headers=origin)
    plain = await client.get(TOKENS, headers={**origin, **await admin_token(make_token)})
    assert preflight.status_code == 405 and plain.status_code == 200
    for response in (preflight, plain):
        assert not any(h.startswith("access-control-") for h in response.headers)
        assert response.headers["x-request-id"] == response.headers["x-amzn-requestid"] == "trace-7"


async def test_the_openapi_document_describes_the_three_routes(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    tokens, one = document["paths"][TOKENS], document["paths"][f"{TOKENS}/{{tokenId}}"]
    assert set(tokens) == {"get", "post"} and set(one) == {"delete"}
    schemas = document["components"]["schemas"]

    def ok(operation: dict[str, Any], status: str) -> str:
        ref: str = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        return ref.rsplit("/", 1)[1]

    assert ok(tokens["get"], "200") == "TokenList"
    assert ok(tokens["post"], "201") == "CreatedToken" and "200" not in tokens["post"]["responses"]
    assert ok(one["delete"], "200") == "TokenInfo" and "404" in one["delete"]["responses"]
    request = tokens["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert request.endswith("/TokenRequest")
    assert schemas["TokenRequest"]["additionalProperties"] is False
    assert set(schemas["TokenRequest"]["required"]) == {"name", "accounts", "brands", "scopes"}
    assert "token" in schemas["CreatedToken"]["required"]
    for operation in (tokens["get"], tokens["post"], one["delete"]):
        assert operation["security"] == [{"authToken": []}]
        assert {"401", "403", "429"} <= set(operation["responses"])


# -- the README's examples, run as written -----------------------------------------------------


def test_the_readmes_examples_run_as_written(tmp_path: Path) -> None:
    """The shell blocks of "Managing tokens over HTTP", run by bash against a real server
    (its address and the CLI's path put in): list, create, then revoke what was created."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n### Managing tokens over HTTP\n")
    section = readme[start : readme.index("\n## ", start)]
    script = "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))
    db = f"sqlite:///{tmp_path / 'opencdp.db'}"
    server = ServerProcess(db, tmp_path / "server.log")
    server.start()
    try:
        script = script.replace("http://127.0.0.1:8000", server.url)
        script = script.replace(".venv/bin/opencdp", f"{shlex.quote(sys.executable)} -m opencdp")
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
            timeout=60, env={**os.environ, "OPENCDP_DB": db}, check=False,
        )
        assert done.returncode == 0, done.stderr
        listed, created, revoked = json_values(done.stdout)
        assert [token["name"] for token in listed["data"]] == ["token admin"]
        assert created["name"] == "nightly report" and created["token"]
        assert revoked["id"] == created["id"] and revoked["revoked"] is not None
        refused = httpx.get(f"{server.url}/track/acme/web/shop/v1/events",
                            headers={"auth-token": created["token"]})
        assert refused.status_code == 401
    finally:
        server.stop()


def json_values(text: str) -> list[Any]:
    """The JSON values written one after another (curl adds no line break)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values
