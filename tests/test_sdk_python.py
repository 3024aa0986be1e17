"""The official Segment and RudderStack Python SDKs, unchanged, against a real server (SPEC §8).

Each SDK is pointed at the server's address and nothing else: its calls land once
each on the right profile, a retry after a dropped connection does not duplicate,
and a wrong write key reaches the SDK's ``on_error``.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import rudderstack.analytics as rudder  # type: ignore[import-untyped]
import segment.analytics as segment_sdk  # type: ignore[import-untyped]

from tests.backends import STORES, store_url
from tests.server_process import ServerProcess, cli

pytestmark = pytest.mark.slow

WORKSPACE = "/track/shop/web/uk/v1"
SDKS: dict[str, Callable[..., Any]] = {
    "segment": segment_sdk.Client,
    "rudderstack": rudder.Client,
}


@dataclass
class Server:
    process: ServerProcess
    write_key: str
    read_token: str

    @property
    def url(self) -> str:
        return self.process.url

    def events(self, profile: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.url}{WORKSPACE}/profiles/{profile}/events",
            params={"sort": "asc"},
            headers={"auth-token": self.read_token},
        )
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def meta(self, profile: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.url}{WORKSPACE}/profiles/{profile}/meta",
            headers={"auth-token": self.read_token},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(scope="module", params=STORES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per store for the module; tests keep apart by their own user ids."""
    tmp = tmp_path_factory.mktemp(f"sdk-{request.param}")
    with store_url(request.param, tmp) as url:
        write_key = cli("tokens", "create", "--client", "shop", "--account", "web", "--brand",
                        "uk", "--scope", "write", db=url).strip()
        read_token = cli("tokens", "create", "--client", "shop", "--account", "web", "--brand",
                         "uk", "--scope", "read", db=url).strip()
        process = ServerProcess(url, tmp / "server.log")
        process.start()
        try:
            yield Server(process, write_key, read_token)
        finally:
            process.stop()


def make_client(sdk: str, write_key: str, host: str, errors: list[Any]) -> Any:
    def on_error(error: Exception, batch: list[Any]) -> None:
        errors.append(error)

    return SDKS[sdk](write_key, host=host, on_error=on_error, upload_interval=0.1)


@pytest.mark.parametrize("sdk", SDKS)
def test_every_call_lands_once_on_the_profile(server: Server, sdk: str) -> None:
    user, anon, legacy = (f"{sdk}-{kind}-{uuid.uuid4().hex[:8]}" for kind in "ual")
    errors: list[Any] = []
    client = make_client(sdk, server.write_key, server.url, errors)
    client.identify(user, {"email": f"{user}@example.com", "plan": "pro"}, anonymous_id=anon)
    client.track(user, "Order Completed", {"total": 12.5, "currency": "GBP"})
    client.page(user, category="Docs", name="Home", properties={"path": "/"})
    client.screen(user, name="Dashboard")
    client.group(user, "acme-inc", {"name": "Acme Inc"})
    client.alias(legacy, user)
    client.flush()
    client.shutdown()
    assert errors == []

    events = server.events(f"userId:{user}")
    actions = Counter(event["eventAction"] for event in events)
    assert actions == Counter(
        ["identify", "order_completed", "page", "screen", "group", "alias"]
    )
    assert len({event["rawData"]["messageId"] for event in events}) == 6
    for event in events:
        assert "writeKey" not in event["rawData"]
    group = next(e for e in events if e["eventAction"] == "group")
    assert group["rawData"]["traits"] == {"name": "Acme Inc"}

    meta = server.meta(f"userId:{user}")
    assert meta["email"] == f"{user}@example.com" and meta["plan"] == "pro"
    assert anon in meta["anonymousIds"]
    assert server.meta(f"anonymousId:{anon}")["id"] == meta["id"]


@pytest.mark.parametrize("sdk", SDKS)
def test_an_anonymous_visitor_is_linked_when_identified(server: Server, sdk: str) -> None:
    user, anon = (f"{sdk}-{kind}-{uuid.uuid4().hex[:8]}" for kind in "ua")
    errors: list[Any] = []
    client = make_client(sdk, server.write_key, server.url, errors)
    client.page(anonymous_id=anon, name="Landing")
    client.identify(anonymous_id=anon, traits={"newsletter": True})
    client.flush()
    client.identify(user, {"email": f"{user}@example.com"}, anonymous_id=anon)
    client.flush()
    client.shutdown()
    assert errors == []

    actions = Counter(event["eventAction"] for event in server.events(f"userId:{user}"))
    assert actions == Counter(["page", "identify", "identify"])
    meta = server.meta(f"userId:{user}")
    assert meta["newsletter"] is True and meta["anonymousIds"] == [anon]


class DroppingProxy:
    """Forwards each request to the server, but drops the first connection unanswered.

    The server has committed that first request when the proxy hangs up, so the
    SDK's retry sends calls that are already stored: what a lost answer looks like.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.attempts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ")
        headers = dict(line.split(": ", 1) for line in header_lines)
        hop = {"host", "content-length", "connection", "accept-encoding"}
        length = int(next(v for k, v in headers.items() if k.lower() == "content-length"))
        while len(body) < length:
            body += conn.recv(65536)
        forwarded = {k: v for k, v in headers.items() if k.lower() not in hop}
        answer = httpx.request(method, self.target + path, content=body, headers=forwarded)
        self.attempts += 1
        if self.attempts == 1:
            return  # hang up: the client never learns the batch was stored
        conn.sendall(
            f"HTTP/1.1 {answer.status_code} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(answer.content)}\r\nconnection: close\r\n\r\n".encode()
            + answer.content
        )


@pytest.mark.parametrize("sdk", SDKS)
def test_a_retry_after_a_dropped_connection_does_not_duplicate(server: Server, sdk: str) -> None:
    user = f"{sdk}-retry-{uuid.uuid4().hex[:8]}"
    proxy = DroppingProxy(server.url)
    errors: list[Any] = []
    client = make_client(sdk, server.write_key, proxy.url, errors)
    try:
        client.identify(user, {"plan": "free"})
        client.track(user, "Trial Started")
        client.flush()
        client.shutdown()
    finally:
        proxy.close()
    assert errors == []
    assert proxy.attempts == 2
    actions = Counter(event["eventAction"] for event in server.events(f"userId:{user}"))
    assert actions == Counter(["identify", "trial_started"])


@pytest.mark.parametrize("sdk", SDKS)
def test_a_wrong_write_key_reaches_on_error(server: Server, sdk: str) -> None:
    errors: list[Any] = []
    wrong = "ocdp_000000000000_" + "x" * 32
    client = make_client(sdk, wrong, server.url, errors)
    client.track("someone", "Signed Up")
    client.flush()
    client.shutdown()
    assert len(errors) == 1
    assert (errors[0].status, errors[0].code) == (401, "authentication_error")
    assert "writeKey" in errors[0].message


def test_segment_sync_mode_raises_on_a_token_without_write_access(
    server: Server, tmp_path: Path
) -> None:
    client = segment_sdk.Client(server.read_token, host=server.url, sync_mode=True)
    with pytest.raises(segment_sdk.request.APIError) as raised:
        client.track("someone", "Signed Up")
    assert raised.value.status == 403
    assert raised.value.code == "authentication_error"
