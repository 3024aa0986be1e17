"""Bad input never hurts: hypothesis throws garbage at every tracking route and read parameter.

Never a 500; every refusal is the SPEC's error body; a refused call changes nothing
stored. In-process ASGI app on the real stores (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.app import create_app
from opencdp.auth import new_token
from opencdp.config import Settings
from tests.backends import make_store

pytestmark = pytest.mark.timeout(300)

TRACK = "/track/c1/a1/b1/v1"
ACTIONS = ("identify", "track", "page", "screen", "alias", "batch")
CODES = {
    400: {"validation_error", "invalid_request_error"},
    404: {"not_found"},
    413: {"invalid_request_error"},
}
SQL_INJECTION = [
    "' OR '1'='1", "1; DROP TABLE events; --", '" OR 1=1 --', "%' --", "u1' --",
    "') OR ('1'='1", "1 UNION SELECT * FROM tokens", "\\'; SELECT pg_sleep(5); --",
    "*", "%", "_", "u%", "$.userId", "') OR json_extract(raw, '$') --",
]
FIELDS = ["userId", "anonymousId", "event", "traits", "properties", "timestamp", "sentAt",
          "context", "messageId", "previousId", "name", "type", "batch"]
VALID: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u1", "traits": {"email": "a@example.com"},
                 "timestamp": "2020-01-01T00:00:00Z"},
    "track": {"userId": "u1", "event": "Product Added", "properties": {"sku": "1"},
              "timestamp": "2020-01-01T00:00:00Z"},
    "page": {"anonymousId": "a1", "timestamp": "2020-01-01T00:00:00Z"},
    "screen": {"userId": "u1", "name": "Home", "timestamp": "2020-01-01T00:00:00Z"},
    "alias": {"userId": "u1", "previousId": "a1", "timestamp": "2020-01-01T00:00:00Z"},
}
VALID["batch"] = {"batch": [{**VALID["track"], "type": "track"}]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text() | st.sampled_from(SQL_INJECTION + ["null", "0", "2020-01-01T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, action: str) -> bytes:
    """A valid call with fields replaced, removed or added: wrong types, odd strings."""
    body = dict(VALID[action])
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS + [draw(st.text(max_size=6))]))
        if draw(st.booleans()) and field in body:
            del body[field]
        else:
            body[field] = draw(json_values)
    if action == "batch" and draw(st.booleans()):
        body = {"batch": [draw(st.builds(dict, st.just(VALID["track"]))), body]}
    return msgspec.json.encode(body)


def huge(size: int) -> bytes:
    return msgspec.json.encode({**VALID["track"], "properties": {"blob": "x" * size}})


RAW_TRICKS = [
    b"", b"null", b"[]", b'"text"', b"1", b"{", b"{}}", b"\xff\xfe{}", b'{"a":1,}',
    b'{"userId":"\\ud800","event":"E","timestamp":"2020-01-01T00:00:00Z"}',
    b'{"userId":"u1","event":"\\udfff x","timestamp":"2020-01-01T00:00:00Z"}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","properties":{"n":NaN}}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","properties":{"n":Infinity}}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","properties":{"n":-1e999}}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","properties":{"n":1e400}}',
    b'{"userId":"u\\u0000","event":"E","timestamp":"2020-01-01T00:00:00Z"}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","context":{"k\\u0000":1}}',
    b'{"userId":"u1","event":"E","timestamp":"2020-01-01T00:00:00Z","properties":{"n":'
    + b"9" * 5000 + b"}}",
    b'{"userId":"u1","event":"\xc3\x28","timestamp":"2020-01-01T00:00:00Z"}',
    b'{"batch":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    b'{"properties":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
    b'{"batch":[' + b",".join([b'{"type":"track"}'] * 1001) + b"]}",
    huge(7_000_000),
]
#: Odd but acceptable on ``track``: a repeated key counts once (the last, as in JavaScript);
#: a large body under the 6 MiB limit is stored whole.
ODD_BUT_FINE = [
    b'{"userId":"u1","userId":"u2","event":"E","timestamp":"2020-01-01T00:00:00Z"}',
    huge(100_000), huge(3_000_000),
]


@st.composite
def bodies(draw: st.DrawFn, action: str) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind < 5:
        return draw(mutated(action))
    if kind < 7:
        return msgspec.json.encode(draw(json_values))
    if kind < 8:
        raw = draw(mutated(action))
        cut = draw(st.integers(0, len(raw)))
        return raw[:cut] + draw(st.binary(min_size=1, max_size=4)) + raw[cut:]
    return draw(st.sampled_from(RAW_TRICKS + ODD_BUT_FINE))


class App:
    """The app on a real store, driven from sync hypothesis tests through one event loop."""

    def __init__(self, runner: asyncio.Runner, db_url: str) -> None:
        self.runner = runner
        self.store = make_store(db_url)
        self.app = create_app(Settings(db=db_url, rate=1e9, burst=10**9), self.store)
        runner.run(self.store.start())
        text, record = new_token("c1", None, None, ("read", "write"), now=time.time_ns() // 10**6)
        runner.run(self.store.add_token(record))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://testserver",
            headers={"auth-token": text}, timeout=60,
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, **kwargs))

    def post(self, action: str, body: bytes) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return self.request("POST", f"{TRACK}/{action}", content=body, headers=headers)

    def snapshot(self) -> tuple[Any, ...]:
        """What is stored, as the read APIs show it (events, and profiles with their traits)."""
        events = self.request("GET", f"{TRACK}/events", params={"size": 100}).json()
        profiles = self.request("GET", f"{TRACK}/profiles", params={"size": 100}).json()
        return events["total"], events["data"], profiles["data"]

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.run(self.store.stop())


@contextmanager
def running_app(db_url: str) -> Iterator[App]:
    with asyncio.Runner() as runner:
        app = App(runner, db_url)
        try:
            yield app
        finally:
            app.close()


def assert_spec_answer(response: httpx.Response, *, tracking: bool) -> None:
    """A success, or the SPEC's error body with a code that fits the status. Never a 5xx."""
    status = response.status_code
    assert status < 500, f"{status}: {response.text[:300]}"
    body = response.json()
    if status == 200:
        return
    assert status in CODES, f"{status}: {response.text[:300]}"
    error = body["error"]
    assert set(error) == {"code", "message"} and error["code"] in CODES[status], body
    assert isinstance(error["message"], str) and error["message"]
    if tracking:
        assert body["success"] is False and body["message"] == error["message"], body


FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def test_no_tracking_body_is_a_500_and_refused_calls_change_nothing(db_url: str) -> None:
    with running_app(db_url) as app:

        @FUZZ
        @given(data=st.data(), action=st.sampled_from(ACTIONS))
        def check(data: st.DataObject, action: str) -> None:
            body = data.draw(bodies(action))
            before = app.snapshot()
            response = app.post(action, body)
            assert_spec_answer(response, tracking=True)
            if response.status_code != 200:
                assert app.snapshot() == before, "a refused call changed what is stored"

        check()


def test_every_raw_trick_on_every_route(db_url: str) -> None:
    with running_app(db_url) as app:
        for action in ACTIONS:
            for body in RAW_TRICKS:
                response = app.post(action, body)
                assert_spec_answer(response, tracking=True)
                assert response.status_code != 200, body[:80]
        assert app.snapshot()[0] == 0
        for body in ODD_BUT_FINE:
            response = app.post("track", body)
            assert response.status_code == 200, response.text[:300]
            event_id = response.json()["eventId"]
            stored = app.request("GET", f"{TRACK}/events/{event_id}").json()["rawData"]
            assert stored == {**msgspec.json.decode(body), "action": "track",
                              "context": {"ip": "127.0.0.1"}}


READ_NAMES = ["include", "exclude", "start", "end", "sort", "from", "size", "userId",
              "scrollId", "properties.sku", "properties.a.b", "properties.", "x", ""]
read_values = st.sampled_from(SQL_INJECTION) | st.text(max_size=30) | st.sampled_from(
    ["asc", "desc", "0", "-1", "100", "101", "10001", "2020-01-01", "2020-13-45T99:00",
     "u1", "product_added", "page,identify", "%00", "\x00", "activity", "created"])
read_paths = st.sampled_from([
    "/events", "/events/{x}", "/profiles", "/profiles/{x}/traits", "/profiles/{x}/meta",
    "/profiles/{x}/events", "/profiles/{x}/audiences",
])
profile_refs = st.tuples(
    st.sampled_from(["userId", "email", "id", "anonymousId", "uid", ""]),
    st.sampled_from(["u1", "a1", "a@example.com"] + SQL_INJECTION) | st.text(max_size=20),
).map(lambda pair: f"{pair[0]}:{pair[1]}")


def test_no_read_parameter_is_a_500_and_injection_finds_nothing(db_url: str) -> None:
    with running_app(db_url) as app:
        for action in ("identify", "track", "page"):
            assert app.post(action, msgspec.json.encode(VALID[action])).status_code == 200
        stored = app.snapshot()

        @FUZZ
        @given(path=read_paths, ref=profile_refs,
               params=st.lists(st.tuples(st.sampled_from(READ_NAMES), read_values), max_size=4))
        def check(path: str, ref: str, params: list[tuple[str, str]]) -> None:
            url = TRACK + path.replace("{x}", quote(ref, safe=":", errors="surrogatepass"))
            response = app.request("GET", url, params=params)
            assert_spec_answer(response, tracking=False)
            injected = [v for n, v in params if n == "userId" and v in SQL_INJECTION]
            if response.status_code == 200 and injected and path == "/events":
                assert response.json()["data"] == [], f"userId={injected[0]} found events"

        check()
        for path in ("/events/%00", "/events/%ED%A0%80", "/profiles/userId:%00/traits",
                     "/profiles/id:%00/meta", "/profiles/email:%FF/events", "/events?userId=%00",
                     "/events?properties.a%00=1", "/events?scrollId=%00", "/profiles?size=%00"):
            assert_spec_answer(app.request("GET", TRACK + path), tracking=False)
        assert app.snapshot() == stored, "a read changed what is stored"
