"""The change feed is exactly-once with concurrent writers on two real server processes.

Writers send events (old ``eventTime``s among them, arriving late) to either of two
``opencdp serve`` processes on one database, while a consumer follows ``next``,
asking each process in turn and long-polling; it must see every acknowledged event
once, and each writer's events in the order that writer had them acknowledged.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.backends import STORES, store_url
from tests.server_process import ServerProcess, client_token

pytestmark = pytest.mark.slow

WORKSPACE = "/track/shop/web/uk/v1"
WRITERS = 4
EVENTS_EACH = 60


@pytest.fixture(params=STORES)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with store_url(request.param, tmp_path) as url:
        yield url


def test_a_consumer_alternating_between_two_processes_sees_every_event_once(
    shared_url: str, tmp_path: Path
) -> None:
    token = client_token(shared_url, "shop")
    servers = [ServerProcess(shared_url, tmp_path / f"server-{n}.log") for n in range(2)]
    for server in servers:
        server.start()
    acknowledged: list[list[str]] = [[] for _ in range(WRITERS)]
    errors: list[str] = []
    writing = threading.Event()
    writing.set()

    def write(n: int) -> None:
        rnd = random.Random(n)
        clients = [httpx.Client(base_url=s.url, headers={"auth-token": token}) for s in servers]
        for k in range(EVENTS_EACH):
            year = rnd.choice([2001, 2019, 2026])  # late old eventTimes among new ones
            body = {"userId": f"user-{rnd.randrange(6)}", "event": f"W{n}",
                    "timestamp": f"{year}-01-01T00:00:{k % 60:02d}Z"}
            answer = rnd.choice(clients).post(f"{WORKSPACE}/track", json=body)
            if answer.status_code == 200:
                acknowledged[n].append(answer.json()["eventId"])
            else:
                errors.append(answer.text)
        for client in clients:
            client.close()

    seen: list[str] = []

    def consume() -> None:
        clients = [httpx.Client(base_url=s.url, headers={"auth-token": token}, timeout=10)
                   for s in servers]
        params: dict[str, str] = {"size": "7", "wait": "1"}
        turn = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = clients[turn % 2].get(f"{WORKSPACE}/events/feed", params=params)
            turn += 1
            assert answer.status_code == 200, answer.text
            body = answer.json()
            seen.extend(event["eventId"] for event in body["data"])
            params["after"] = body["next"]
            if not writing.is_set() and not body["data"]:
                break
        for client in clients:
            client.close()

    try:
        consumer = threading.Thread(target=consume)
        consumer.start()
        writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=120)
        writing.clear()
        consumer.join(timeout=150)
        assert not errors, errors[:3]
        assert len(seen) == len(set(seen)), "an event was seen twice"
        everything = [event for mine in acknowledged for event in mine]
        assert sorted(seen) == sorted(everything)
        place = {event: n for n, event in enumerate(seen)}
        for mine in acknowledged:  # acknowledged one after another: committed in that order
            assert [place[event] for event in mine] == sorted(place[event] for event in mine)
    finally:
        for server in servers:
            server.stop()


def test_the_readme_consumer_follows_a_real_server(tmp_path: Path) -> None:
    """The README's consumer, run as written: it prints the events there are, then,
    long-polling, a new one within a second of its commit."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    follow = readme.split("## Following events", 1)[1]
    consumer = follow.split("```python\n", 1)[1].split("```", 1)[0]
    db = f"sqlite:///{tmp_path / 'readme.db'}"
    token = client_token(db, "acme")
    server = ServerProcess(db, tmp_path / "server.log")
    server.start()
    events = httpx.Client(base_url=server.url, headers={"auth-token": token})
    process = None
    try:
        def send(name: str) -> str:
            body = {"userId": "u1", "event": name, "timestamp": "2019-11-28T14:31:58.596Z"}
            answer = events.post("/track/acme/web/shop/v1/track", json=body)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["eventId"])

        sent = [send("First"), send("Second")]
        script = tmp_path / "consumer.py"
        script.write_text(consumer)
        env = {**os.environ, "TOKEN": token, "OPENCDP_URL": server.url}
        errors = (tmp_path / "consumer.err").open("w")
        process = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=errors, text=True,
            env=env,
        )
        errors.close()
        assert process.stdout is not None
        printed = [process.stdout.readline().split()[0] for _ in sent]
        assert printed == sent
        time.sleep(0.5)  # the consumer now waits in a long poll
        sent.append(send("Third"))
        committed = time.monotonic()
        line = process.stdout.readline()
        assert line.split()[:2] == [sent[-1], "third"], (tmp_path / "consumer.err").read_text()
        assert time.monotonic() - committed < 1.0
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        events.close()
        server.stop()


def test_a_held_long_poll_ends_cleanly_on_shutdown_and_when_its_client_leaves(
    tmp_path: Path,
) -> None:
    """SIGTERM answers a held feed read at once (empty, with ``next``) and the server exits
    without waiting out the read's ``wait``; a client that left holds nothing up."""
    db = f"sqlite:///{tmp_path / 'shutdown.db'}"
    token = client_token(db, "acme")
    server = ServerProcess(db, tmp_path / "server.log")
    server.start()
    feed = "/track/acme/web/shop/v1/events/feed"
    try:
        with httpx.Client(base_url=server.url, headers={"auth-token": token}) as http:
            with pytest.raises(httpx.ReadTimeout):  # this client leaves while its read waits
                http.get(feed, params={"wait": "30"}, timeout=0.5)
            answers: list[httpx.Response] = []
            held = threading.Thread(
                target=lambda: answers.append(
                    http.get(feed, params={"after": "now", "wait": "30"}, timeout=40)
                )
            )
            held.start()
            time.sleep(1.0)
            assert held.is_alive()
            started = time.monotonic()
            assert server.terminate(timeout=20) == 0
            held.join(timeout=5)
            assert time.monotonic() - started < 5
        assert answers and answers[0].status_code == 200
        assert answers[0].json()["data"] == [] and answers[0].json()["next"]
    finally:
        server.stop()
