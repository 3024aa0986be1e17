"""Overload: ingestion is bounded. A full write queue answers 503 + Retry-After at once;
at 10× the sustainable load the server's memory stays flat and no 200 is ever lost.

Both run the real server process (``tests/server_process.py``) on SQLite.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from tests.paging import scroll_events
from tests.server_process import ServerProcess, client_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PATH = "/track/load/web/uk/v1"


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'opencdp.db'}"


@pytest.fixture
def token(db: str) -> str:
    return client_token(db, "load")


def start(db: str, tmp_path: Path, **env: str) -> ServerProcess:
    server = ServerProcess(db, tmp_path / "server.log", **env)
    server.start()
    return server


class Batches:
    """Pre-encoded batch bodies, each item with a unique messageId."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.made = 0  # calls made so far: no more can be stored
        self._numbers = itertools.count()

    def next(self) -> tuple[list[str], bytes]:
        ids = [f"m{next(self._numbers)}" for _ in range(self.size)]
        self.made += self.size
        items = [{"type": "track", "userId": f"u{int(m[1:]) % 500}", "event": "Load Test",
                  "properties": {"pad": "x" * 200}, "timestamp": "2026-01-02T03:04:05.678Z",
                  "messageId": m} for m in ids]
        return ids, msgspec.json.encode({"batch": items})


class Tally:
    def __init__(self) -> None:
        self.acked: dict[str, str] = {}
        self.unavailable = 0
        self.unavailable_seconds: list[float] = []
        self.other: list[str] = []

    def record(self, ids: list[str], response: httpx.Response, seconds: float) -> None:
        if response.status_code == 200:
            self.acked.update(zip(ids, response.json()["eventIds"], strict=True))
        elif response.status_code == 503:
            assert response.headers["Retry-After"].isdigit(), response.headers
            body = response.json()
            assert body["error"]["code"] == "internal_server_error", body
            assert body["success"] is False
            self.unavailable += 1
            self.unavailable_seconds.append(seconds)
        else:
            self.other.append(f"{response.status_code} {response.text[:200]}")


async def send_batches(
    url: str, token: str, batches: Batches, tally: Tally, *, connections: int,
    seconds: float = 0.0, count: int = 0,
) -> None:
    """``connections`` clients each sending batches back to back, for a time or a count."""
    headers = {"auth-token": token, "content-type": "application/json"}
    deadline = time.monotonic() + seconds
    sent = itertools.count()
    limits = httpx.Limits(max_connections=connections)

    async def one_client(client: httpx.AsyncClient) -> None:
        while (time.monotonic() < deadline) if seconds else (next(sent) < count):
            ids, body = batches.next()
            started = time.monotonic()
            response = await client.post(f"{PATH}/batch", content=body, headers=headers)
            tally.record(ids, response, time.monotonic() - started)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(*(one_client(client) for _ in range(connections)))


def stored_event_ids(url: str, token: str, sent: int) -> dict[str, list[str]]:
    """messageId → the eventIds stored for it, scrolling the whole workspace."""
    found: dict[str, list[str]] = {}
    with httpx.Client(base_url=url, headers={"auth-token": token}, timeout=60) as client:
        for event in scroll_events(client, PATH, most=sent):
            found.setdefault(event["rawData"]["messageId"], []).append(event["eventId"])
    return found


def assert_every_200_stored_once(
    url: str, token: str, acked: dict[str, str], sent: int
) -> None:
    stored = stored_event_ids(url, token, sent)
    assert all(len(ids) == 1 for ids in stored.values()), "an event was stored twice"
    lost = [m for m, event_id in acked.items() if stored.get(m) != [event_id]]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged events are missing"


def test_a_full_write_queue_answers_503_with_retry_after_at_once(
    db: str, token: str, tmp_path: Path
) -> None:
    server = start(db, tmp_path, OPENCDP_WRITE_QUEUE_MAX="40")
    try:
        tally, batches = Tally(), Batches(20)
        asyncio.run(send_batches(server.url, token, batches, tally, connections=32, count=400))
        assert not tally.other, tally.other[:3]
        assert tally.unavailable > 0, "the burst never filled the queue"
        assert tally.acked, "nothing was accepted"
        fast = sorted(tally.unavailable_seconds)[len(tally.unavailable_seconds) // 2]
        assert fast < 1.0, f"a 503 should not wait for the queue; median took {fast:.2f} s"
        assert_every_200_stored_once(server.url, token, tally.acked, batches.made)
    finally:
        server.stop()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples a process's resident memory every 100 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(rss_bytes(self.pid))


@pytest.fixture
def server(db: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = start(db, tmp_path)
    yield process
    process.stop()


def test_memory_stays_flat_at_ten_times_the_sustainable_load(
    server: ServerProcess, token: str
) -> None:
    """Sustainable: 2 connections keep the writer busy. 10×: 20 connections, 8 seconds."""
    assert server.proc is not None
    batches = Batches(100)
    warm = Tally()
    started = time.monotonic()
    asyncio.run(send_batches(server.url, token, batches, warm, connections=2, seconds=2))
    sustainable = len(warm.acked) / (time.monotonic() - started)
    baseline = rss_bytes(server.proc.pid)
    tally = Tally()
    with RssSampler(server.proc.pid) as rss:
        asyncio.run(send_batches(server.url, token, batches, tally, connections=20, seconds=8))
    assert not warm.other and not tally.other, (warm.other + tally.other)[:3]
    peak, half = max(rss.samples), len(rss.samples) // 2
    growth = peak - baseline
    late_growth = max(rss.samples[half:]) - max(rss.samples[:half])
    print(f"sustainable {sustainable:.0f} events/s; 10x load: {len(tally.acked)} acked, "
          f"{tally.unavailable} 503s; RSS {baseline >> 20} MiB -> peak {peak >> 20} MiB")
    assert growth < 150 * 2**20, f"RSS grew {growth >> 20} MiB under overload"
    assert late_growth < 40 * 2**20, f"RSS still growing: +{late_growth >> 20} MiB late"
    assert_every_200_stored_once(server.url, token, {**warm.acked, **tally.acked}, batches.made)
