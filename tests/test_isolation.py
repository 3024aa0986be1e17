"""Tenant isolation against populated neighbours: every read route, on both stores.

Four workspaces (this one, another brand, another account, another client) hold the
same customers (the same userId, anonymousId and email) and the same events, each
tagged with its own workspace. Every read of one workspace, by HTTP and at the store,
must answer that workspace's data and nothing of the others'.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from opencdp.models import (
    Call,
    EventKey,
    EventQuery,
    ProfileQuery,
    ProfileRef,
    StoredEvent,
    Workspace,
)
from opencdp.store.base import Store
from tests.backends import make_store
from tests.conftest import MakeToken
from tests.paging import pages
from tests.read_fixtures import OTHER_ACCOUNT, OTHER_BRAND, T0, WS, call, read_all, send

pytestmark = pytest.mark.anyio

OTHER_CLIENT = Workspace("c2", "a1", "b1")
WORKSPACES = [WS, OTHER_BRAND, OTHER_ACCOUNT, OTHER_CLIENT]
IDS = ["own", "brand", "account", "client"]
EMAIL = "same@example.com"
# Every customer, by the reference that names it in each workspace.
CUSTOMERS = ["userId:ABC/123", "anonymousId:anon-2", "userId:p0", "userId:p1", "userId:p2"]
# The references to the first customer, one of each idType (``id:`` is added per workspace).
FIRST = ["userId:ABC/123", "anonymousId:anon-1", f"email:{EMAIL}"]


@dataclass
class Tenant:
    workspace: Workspace
    events: list[str]  # event ids, in the order sent (and of eventTime)
    profiles: dict[str, str]  # a reference from CUSTOMERS → that profile's id

    @property
    def tag(self) -> str:
        return str(self.workspace)

    @property
    def path(self) -> str:
        ws = self.workspace
        return f"/track/{ws.client_id}/{ws.account_id}/{ws.brand_id}/v1"

    @property
    def first_id(self) -> str:
        return self.profiles["userId:ABC/123"]


def calls_of(workspace: Workspace) -> list[Call]:
    tag = str(workspace)
    first = {"email": EMAIL, "tenant": tag}
    return [
        call("identify", user_id="ABC/123", anonymous_id="anon-1", traits=first, at=T0),
        call(user_id="ABC/123", properties={"tenant": tag}, at=T0 + 1),
        call("page", anonymous_id="anon-2", properties={"tenant": tag}, at=T0 + 2),
        *[
            call("identify", user_id=f"p{i}", traits={"email": f"p{i}@x.com", "tenant": tag},
                 at=T0 + 3 + i)
            for i in range(3)
        ],
    ]  # fmt: skip


@pytest.fixture
async def tenants(store: Store) -> dict[Workspace, Tenant]:
    """The four workspaces, each populated; the profile ids read back by userId/anonymousId."""
    found = {}
    for workspace in WORKSPACES:
        events = await send(store, *calls_of(workspace), workspace=workspace)
        profiles = {}
        for ref in CUSTOMERS:
            [profile] = await store.find_profiles(workspace, parse_ref(ref))
            profiles[ref] = profile.id
        found[workspace] = Tenant(workspace, events, profiles)
    ids = [t.first_id for t in found.values()]
    assert len(set(ids)) == len(ids), "profile ids must differ across workspaces"
    return found


def parse_ref(text: str) -> ProfileRef:
    id_type, _, value = text.partition(":")
    return ProfileRef(id_type, value)  # type: ignore[arg-type]


def others(tenants: dict[Workspace, Tenant], me: Tenant) -> list[Tenant]:
    return [t for t in tenants.values() if t is not me]


# -- by HTTP ------------------------------------------------------------------------------


class Reader:
    """GETs with a read token for every workspace of one client; 200s answer their body."""

    def __init__(self, client: httpx.AsyncClient, token: str, me: Tenant) -> None:
        self.client, self.token, self.me = client, token, me

    async def answer(self, route: str, **params: Any) -> httpx.Response:
        headers = {"auth-token": self.token}
        return await self.client.get(self.me.path + route, params=params, headers=headers)

    async def ok(self, route: str, **params: Any) -> Any:
        response = await self.answer(route, **params)
        assert response.status_code == 200, (route, params, response.text)
        return response.json()

    async def event_ids(self, route: str = "/events", **params: Any) -> list[str]:
        """The ids of a listing's events, each checked to be this workspace's."""
        body = await self.ok(route, **params)
        for event in body["data"]:
            assert tag_of(event["rawData"]) == self.me.tag, (route, params, event)
        return [e["eventId"] for e in body["data"]]

    async def scroll(self, route: str, items: int, **params: Any) -> list[dict[str, Any]]:
        body = await self.ok(route, **params)
        found: list[dict[str, Any]] = []
        for _ in pages(items, params["size"]):
            if not body["data"]:
                break
            found += body["data"]
            body = await self.ok(route, scrollId=body["scrollId"])
        return found


def tag_of(raw: dict[str, Any]) -> str:
    return str((raw.get("properties") or raw["traits"])["tenant"])


@pytest.fixture(params=WORKSPACES, ids=IDS)
def me(request: pytest.FixtureRequest, tenants: dict[Workspace, Tenant]) -> Tenant:
    """Each workspace in turn, as the one whose reads are checked."""
    tenant: Tenant = tenants[request.param]
    return tenant


@pytest.fixture
async def reader(client: httpx.AsyncClient, make_token: MakeToken, me: Tenant) -> Reader:
    token = await make_token(("read",), None, None, me.workspace.client_id)
    return Reader(client, token, me)


async def test_events_api_answers_only_the_workspaces_events(
    reader: Reader, tenants: dict[Workspace, Tenant]
) -> None:
    me = reader.me
    identify, track, page, *_ = me.events
    body = await reader.ok("/events")
    assert body["total"] == len(me.events)
    assert sorted(await reader.event_ids()) == sorted(me.events)
    filtered = {
        (("include", "product_added"),): [track],
        (("exclude", "identify,product_added"),): [page],
        (("properties.tenant", me.tag),): [page, track],
        (("userId", "ABC/123"), ("sort", "asc")): [identify, track],
        (("start", "2023-11-14T22:13:20.001Z"), ("end", "2023-11-14T22:13:20.003Z")): [
            page,
            track,
        ],
    }
    for other in others(tenants, me):
        filtered[(("properties.tenant", other.tag),)] = []
    for params, wanted in filtered.items():
        assert await reader.event_ids(**dict(params)) == wanted, params
    scrolled = await reader.scroll("/events", len(me.events), size=2, sort="asc")
    assert [e["eventId"] for e in scrolled] == me.events


async def test_event_by_id_answers_only_the_workspaces_events(
    reader: Reader, tenants: dict[Workspace, Tenant]
) -> None:
    for event_id in reader.me.events:
        assert tag_of((await reader.ok(f"/events/{event_id}"))["rawData"]) == reader.me.tag
    for other in others(tenants, reader.me):
        for event_id in other.events:
            assert (await reader.answer(f"/events/{event_id}")).status_code == 404


@pytest.mark.parametrize("sort", ["activity", "created"])
async def test_profile_listing_answers_only_the_workspaces_profiles(
    reader: Reader, sort: str
) -> None:
    me = reader.me
    listed = await reader.scroll("/profiles", len(me.profiles), size=2, sort=sort)
    assert sorted(p["id"] for p in listed) == sorted(me.profiles.values())
    assert {p.get("tenant") for p in listed} == {me.tag, None}  # anon-2 has no traits


async def test_profiles_api_by_every_id_type_answers_only_the_workspaces_profile(
    reader: Reader, tenants: dict[Workspace, Tenant]
) -> None:
    me = reader.me
    identify, track = me.events[:2]
    for ref in [*FIRST, f"id:{me.first_id}"]:
        route = f"/profiles/{ref}"
        for part in ("traits", "meta"):
            body = await reader.ok(f"{route}/{part}")
            [profile] = body["data"] if ref.startswith("email:") else [body]
            assert (profile["id"], profile["tenant"]) == (me.first_id, me.tag), (ref, part)
        meta = await reader.ok(f"{route}/meta")
        [meta] = meta["data"] if ref.startswith("email:") else [meta]
        stamped = {e["eventId"] for e in [*meta["firstEvent"].values(),
                                          *meta["lastEvent"].values()]}
        assert stamped == {identify, track}, ref
        assert sorted(await reader.event_ids(f"{route}/events")) == sorted([identify, track])
        assert await reader.ok(f"{route}/audiences") == {"data": []}
    for other in others(tenants, me):
        for part in ("traits", "meta", "events", "audiences"):
            for profile_id in other.profiles.values():
                answer = await reader.answer(f"/profiles/id:{profile_id}/{part}")
                assert answer.status_code == 404, (other.tag, part, answer.text)


# -- at the store -------------------------------------------------------------------------


@pytest.fixture(params=["writer", "fresh"])
async def reading(
    request: pytest.FixtureRequest, store: Store, db_url: str, tenants: dict[Workspace, Tenant]
) -> AsyncIterator[Store]:
    """The store that wrote, or another one opened afterwards on the same database (a
    restarted server, another worker), which must find each workspace by its name."""
    if request.param == "writer":
        yield store
        return
    fresh = make_store(db_url)
    await fresh.start()
    try:
        yield fresh
    finally:
        await fresh.stop()


def assert_own(events: list[StoredEvent], me: Tenant) -> list[str]:
    for event in events:
        assert tag_of(event.raw) == me.tag and event.workspace == me.workspace, event
    return [e.event_id for e in events]


async def test_store_events_of_one_workspace(
    reading: Store, tenants: dict[Workspace, Tenant], me: Tenant
) -> None:
    store, workspace = reading, me.workspace
    identify, track, page, *_ = me.events
    page_of_all = await store.list_events(workspace, EventQuery())
    assert page_of_all.total == len(me.events)
    assert sorted(assert_own(page_of_all.events, me)) == sorted(me.events)
    queries = {
        EventQuery(include=("product_added",)): [track],
        EventQuery(properties=(("tenant", me.tag),)): [page, track],
        EventQuery(user_id="ABC/123", sort="asc"): [identify, track],
        EventQuery(profile=parse_ref(f"id:{me.first_id}"), sort="asc"): [identify, track],
        EventQuery(profile=parse_ref(f"email:{EMAIL}"), sort="asc"): [identify, track],
        EventQuery(after=EventKey.of(page_of_all.events[-1]), sort="desc"): [],
    }
    for other in others(tenants, me):
        queries[EventQuery(properties=(("tenant", other.tag),))] = []
    for query, wanted in queries.items():
        assert assert_own((await store.list_events(workspace, query)).events, me) == wanted
    assert await store.index_property("tenant")  # the declared property's own walk
    for tenant in tenants.values():
        query = EventQuery(properties=(("tenant", tenant.tag),))
        wanted = [page, track] if tenant is me else []
        assert assert_own((await store.list_events(workspace, query)).events, me) == wanted
    assert await read_all(store, EventQuery(size=2, sort="asc"), workspace) == me.events
    for other in others(tenants, me):
        for event_id in other.events:
            assert await store.get_event(workspace, event_id) is None
    for event_id in me.events:
        found = await store.get_event(workspace, event_id)
        assert found is not None and assert_own([found], me) == [event_id]


async def test_store_profiles_of_one_workspace(
    reading: Store, tenants: dict[Workspace, Tenant], me: Tenant
) -> None:
    store, workspace = reading, me.workspace
    for ref in [*FIRST, f"id:{me.first_id}"]:
        [profile] = await store.find_profiles(workspace, parse_ref(ref), with_events=True)
        assert (profile.id, profile.traits["tenant"]) == (me.first_id, me.tag), ref
        stamped = [*profile.first_events.values(), *profile.last_events.values()]
        assert set(assert_own(stamped, me)) == set(me.events[:2])
    for other in others(tenants, me):
        for profile_id in other.profiles.values():
            assert await store.find_profiles(workspace, parse_ref(f"id:{profile_id}")) == []
    for sort in ("activity", "created"):
        query, listed = ProfileQuery(sort=sort, size=2), []
        for _ in pages(len(me.profiles), 2):
            found = await store.list_profiles(workspace, query)
            if not found.profiles:
                break
            listed += [p.id for p in found.profiles]
            query = replace(query, after=found.last)
        assert sorted(listed) == sorted(me.profiles.values()), sort
