"""Crash harness: ``kill -9`` the real server under load, restart it, prove nothing was lost.

    python -m tests.crash_harness --cycles 50 --store sqlite      # make crash
    python -m tests.crash_harness --cycles 5 --store postgres --unsafe   # must report loss

Each cycle starts ``opencdp serve`` on the same database, drives it from several threads
with single ``track``/``page`` calls, ``batch`` calls and ``identify`` calls that link
anonymous ids to users (merging the anonymous profiles), and records every
acknowledged ``messageId`` → ``eventId``. At a random moment (half the time: right
after an answer arrives, the most demanding moment for durability) the server is
killed with SIGKILL. Then it is restarted and checked:

1. every acknowledged call is stored exactly once, under the eventId it was given
   (and every earlier cycle's workspace still holds exactly what it held);
2. every call that got no answer is sent again with its messageId until it gets a
   200: a call that had been committed answers its first eventId, none is stored twice;
3. every event is on the right profile: a user's own, or, for an anonymous id that an
   identify linked to a user, that user's (the anonymous profile merged into it).

Each cycle writes to its own workspace (brand ``c<N>``) so checks stay fast as data
grows. ``--unsafe`` starts the server with ``OPENCDP_UNSAFE_ACK_BEFORE_COMMIT=true`` (it
answers 50 ms before committing): the harness must then report lost events, which
proves it can see loss at all.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.paging import scroll_events
from tests.server_process import ServerProcess, client_token

CLIENT = "crash"
USERS_PER_THREAD = 6


@dataclass
class Sent:
    """One HTTP call as sent: retried verbatim (same messageIds) when it got no answer."""

    action: str
    body: dict[str, Any]
    message_ids: list[str]


@dataclass
class Report:
    cycles: int = 0
    calls: int = 0
    acknowledged: int = 0
    unanswered: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong_event_id: int = 0
    wrong_profile: int = 0
    half_written: int = 0
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        problems = self.lost + self.duplicated + self.wrong_event_id + self.wrong_profile
        problems += self.half_written
        return problems == 0 and not self.unexpected

    def summary(self) -> str:
        return (
            f"{self.cycles} cycles, {self.calls} calls, {self.acknowledged} events acknowledged, "
            f"{self.unanswered} calls unanswered at a kill and retried; lost {self.lost}, "
            f"duplicated {self.duplicated}, wrong eventId {self.wrong_event_id}, "
            f"wrong profile {self.wrong_profile}, half-written batches {self.half_written}, "
            f"unexpected answers {len(self.unexpected)}"
        )


class Cycle:
    """The calls of one cycle, in one workspace, and what the server answered to them."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.path = f"/track/{CLIENT}/web/c{number}/v1"
        self.acked: dict[str, str] = {}  # messageId → eventId
        self.owner: dict[str, tuple[str, str]] = {}  # messageId → ("userId"|"anonymousId", id)
        self.user_of: dict[str, str] = {}  # anonymousId → the userId an identify linked it to
        self.sent: list[Sent] = []
        self.unanswered: dict[int, list[Sent]] = {}  # per thread, in the order sent
        self.unexpected: list[str] = []
        self.lost: set[str] = set()
        self.duplicated: set[str] = set()
        self.answered = threading.Event()
        self._lock = threading.Lock()

    def record(self, thread: int, call: Sent, response: httpx.Response | None) -> None:
        with self._lock:
            if response is None or response.status_code == 503:
                self.unanswered.setdefault(thread, []).append(call)
                return
            if response.status_code != 200:
                self.unexpected.append(f"{call.action}: {response.status_code} {response.text}")
                return
            self._acknowledge(call, response.json())
        self.answered.set()

    def _acknowledge(self, call: Sent, answer: dict[str, Any]) -> None:
        event_ids = answer["eventIds"] if call.action == "batch" else [answer["eventId"]]
        for message_id, event_id in zip(call.message_ids, event_ids, strict=True):
            self.acked[message_id] = event_id

    def expected_owner(self, message_id: str) -> tuple[str, str]:
        kind, value = self.owner[message_id]
        if kind == "anonymousId" and value in self.user_of:
            return "userId", self.user_of[value]
        return kind, value


class Load:
    """Threads that send random calls for one cycle until told to stop."""

    def __init__(self, url: str, token: str, cycle: Cycle, threads: int, seed: int) -> None:
        self.url, self.token, self.cycle = url, token, cycle
        self.stopped = threading.Event()
        self._seed = seed
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, thread: int) -> None:
        rng = random.Random(self._seed * 1000 + thread)
        calls = CallMaker(self.cycle, thread, rng)
        headers = {"auth-token": self.token}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            while not self.stopped.is_set():
                call = calls.next()
                try:
                    response = client.post(f"{self.cycle.path}/{call.action}", json=call.body)
                except httpx.TransportError:
                    self.cycle.record(thread, call, None)
                    time.sleep(0.01)
                    continue
                self.cycle.record(thread, call, response)


class CallMaker:
    """Random calls of one thread: its users, their anonymous ids, and identifies linking them."""

    def __init__(self, cycle: Cycle, thread: int, rng: random.Random) -> None:
        self.cycle, self.rng = cycle, rng
        self._prefix = f"c{cycle.number}-t{thread}"
        self._count = 0

    def next(self) -> Sent:
        roll = self.rng.random()
        if roll < 0.2:
            call = self._identify()
        elif roll < 0.4:
            call = self._batch(self.rng.randint(2, 20))
        else:
            call = self._single(self.rng.choice(("track", "page")))
        self.cycle.sent.append(call)
        return call

    def _single(self, action: str) -> Sent:
        item = self._event(action)
        return Sent(action, item, [item["messageId"]])

    def _batch(self, size: int) -> Sent:
        items = [{**self._event(kind), "type": kind}
                 for kind in self.rng.choices(("track", "page"), k=size)]
        return Sent("batch", {"batch": items}, [item["messageId"] for item in items])

    def _identify(self) -> Sent:
        k = self.rng.randrange(USERS_PER_THREAD)
        user, anonymous = f"{self._prefix}-u{k}", f"{self._prefix}-a{k}"
        message_id = self._message_id(("userId", user))
        self.cycle.user_of[anonymous] = user
        body = {"userId": user, "anonymousId": anonymous, "traits": {"n": self._count},
                "timestamp": _now(), "messageId": message_id}
        return Sent("identify", body, [message_id])

    def _event(self, action: str) -> dict[str, Any]:
        k = self.rng.randrange(USERS_PER_THREAD)
        kind = self.rng.choice(("userId", "anonymousId"))
        value = f"{self._prefix}-{'u' if kind == 'userId' else 'a'}{k}"
        body: dict[str, Any] = {kind: value, "timestamp": _now(),
                                "messageId": self._message_id((kind, value))}
        if action == "track":
            body["event"] = "Product Added"
            body["properties"] = {"n": self._count}
        return body

    def _message_id(self, owner: tuple[str, str]) -> str:
        self._count += 1
        message_id = f"{self._prefix}-m{self._count}"
        self.cycle.owner[message_id] = owner
        return message_id


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


# -- checks -------------------------------------------------------------------------------


class Reader:
    """Reads what the server stored, through the read APIs."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"auth-token": token}, timeout=30)

    def events(self, path: str) -> list[dict[str, Any]]:
        """Every event of the workspace, by scrolling in ascending order."""
        return scroll_events(self.client, path)

    def total(self, path: str) -> int:
        return int(self._get(f"{path}/events", {"size": 1})["total"])

    def profile_id(self, path: str, kind: str, value: str) -> str | None:
        response = self.client.get(f"{path}/profiles/{kind}:{value}/traits")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def check_acknowledged(reader: Reader, cycle: Cycle, report: Report) -> None:
    """Every acknowledged call of the cycle is stored once, under the eventId it was given."""
    stored = reader.events(cycle.path)
    copies = Counter(event["rawData"]["messageId"] for event in stored)
    event_ids = {event["rawData"]["messageId"]: event["eventId"] for event in stored}
    cycle.duplicated.update(m for m, n in copies.items() if n > 1)
    for message_id, event_id in cycle.acked.items():
        if message_id not in copies:
            cycle.lost.add(message_id)
        elif event_ids[message_id] != event_id:
            report.wrong_event_id += 1
    for call in cycle.sent:  # a batch commits whole or not at all
        kept = sum(1 for message_id in call.message_ids if message_id in copies)
        if kept not in (0, len(call.message_ids)):
            report.half_written += 1


def retry_unanswered(url: str, token: str, cycle: Cycle, report: Report) -> None:
    """Send every unanswered call again, in each thread's order, until it is answered."""
    headers = {"auth-token": token}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for thread, calls in sorted(cycle.unanswered.items()):
            report.unanswered += len(calls)
            for call in calls:
                cycle.record(thread, call, _post_until_answered(client, cycle, call))
        cycle.unanswered.clear()
        _retry_acknowledged_sample(client, cycle, report)


def _post_until_answered(client: httpx.Client, cycle: Cycle, call: Sent) -> httpx.Response:
    for _ in range(100):
        response = client.post(f"{cycle.path}/{call.action}", json=call.body)
        if response.status_code != 503:
            return response
        time.sleep(0.1)
    raise AssertionError(f"{call.action} still refused with 503 after 100 tries")


def _retry_acknowledged_sample(client: httpx.Client, cycle: Cycle, report: Report) -> None:
    """A repeat of an acknowledged call answers its first eventId (idempotency)."""
    acked = [c for c in cycle.sent if c.action != "batch" and c.message_ids[0] in cycle.acked]
    for call in random.Random(cycle.number).sample(acked, min(20, len(acked))):
        response = client.post(f"{cycle.path}/{call.action}", json=call.body)
        if response.status_code != 200:
            report.unexpected.append(f"repeat: {response.status_code} {response.text}")
        elif response.json()["eventId"] != cycle.acked[call.message_ids[0]]:
            report.wrong_event_id += 1


def check_everything(reader: Reader, cycle: Cycle, report: Report) -> None:
    """After the retries: every call sent is stored exactly once, on the right profile."""
    stored = reader.events(cycle.path)
    copies = Counter(event["rawData"]["messageId"] for event in stored)
    cycle.duplicated.update(m for m, n in copies.items() if n > 1)
    sent = {message_id for call in cycle.sent for message_id in call.message_ids}
    cycle.lost.update(sent - set(copies))
    profiles = _expected_profiles(reader, cycle, report)
    for event in stored:
        owner = cycle.expected_owner(event["rawData"]["messageId"])
        if profiles.get(owner) != event["id"]:
            report.wrong_profile += 1


def _expected_profiles(reader: Reader, cycle: Cycle, report: Report) -> dict[tuple[str, str], str]:
    """Profile id per user and per unlinked anonymous id; a linked one must be its user's."""
    profiles: dict[tuple[str, str], str] = {}
    for kind, value in set(cycle.owner.values()):
        found = reader.profile_id(cycle.path, kind, value)
        if found is not None:
            profiles[(kind, value)] = found
    for anonymous, user in cycle.user_of.items():
        linked = profiles.get(("anonymousId", anonymous))
        if linked is not None and linked != profiles.get(("userId", user)):
            report.wrong_profile += 1
    return profiles


# -- the run ------------------------------------------------------------------------------


@dataclass
class Options:
    cycles: int = 50
    threads: int = 6
    seed: int = 1
    unsafe: bool = False
    stop_on_loss: bool = False
    min_load: float = 0.3
    max_load: float = 1.5


def run(db: str, workdir: Path, options: Options) -> Report:
    """The whole harness against the database ``db``; ``workdir`` holds the server's log."""
    env = {"OPENCDP_UNSAFE_ACK_BEFORE_COMMIT": "true"} if options.unsafe else {}
    token = client_token(db, CLIENT)
    server = ServerProcess(db, workdir / "server.log", **env)
    rng = random.Random(options.seed)
    report = Report()
    done: list[tuple[Cycle, int]] = []  # each checked cycle and its event count
    try:
        server.start()
        for number in range(options.cycles):
            cycle = Cycle(number)
            crash_once(server, token, cycle, rng, options)
            server.start()
            verify_cycle(server, token, cycle, done, report)
            if options.stop_on_loss and report.lost:
                break
    finally:
        server.stop()
    return report


def crash_once(
    server: ServerProcess, token: str, cycle: Cycle, rng: random.Random, options: Options
) -> None:
    """Load the server, then kill -9 it: at a random moment, or right after an answer."""
    right_after_an_answer = options.unsafe or rng.random() < 0.5
    with Load(server.url, token, cycle, options.threads, rng.randrange(1 << 30)) as load:
        time.sleep(rng.uniform(options.min_load, options.max_load))
        if right_after_an_answer:
            cycle.answered.clear()
            cycle.answered.wait(timeout=5)
        load.stopped.set()
        server.kill()


def verify_cycle(
    server: ServerProcess, token: str, cycle: Cycle, done: list[tuple[Cycle, int]],
    report: Report,
) -> None:
    reader = Reader(server.url, token)
    try:
        check_acknowledged(reader, cycle, report)
        for earlier, count in done:  # a later crash must not disturb what was committed
            if reader.total(earlier.path) != count:
                report.unexpected.append(f"cycle {earlier.number}: event count changed")
        retry_unanswered(server.url, token, cycle, report)
        check_everything(reader, cycle, report)
        done.append((cycle, reader.total(cycle.path)))
    finally:
        reader.client.close()
    report.cycles += 1
    report.lost += len(cycle.lost)
    report.duplicated += len(cycle.duplicated)
    report.calls += len(cycle.sent)
    report.acknowledged += len(cycle.acked)
    report.unexpected += cycle.unexpected


@contextmanager
def database(store: str, workdir: Path) -> Iterator[str]:
    """A fresh database: a SQLite file in ``workdir`` or a new PostgreSQL schema."""
    if store == "sqlite":
        yield f"sqlite:///{workdir / 'crash.db'}"
        return
    from tests.backends import postgres_schema

    with postgres_schema() as url:
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--unsafe", action="store_true",
                        help="negative control: the server answers before committing")
    args = parser.parse_args(argv)
    options = Options(cycles=args.cycles, threads=args.threads, seed=args.seed,
                      unsafe=args.unsafe, stop_on_loss=args.unsafe)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, database(args.store, Path(tmp)) as db:
        report = run(db, Path(tmp), options)
    print(f"crash harness ({args.store}, seed {args.seed}, "
          f"{time.monotonic() - started:.0f} s): {report.summary()}")
    for problem in report.unexpected[:10]:
        print("  unexpected:", problem)
    if args.unsafe:  # the negative control succeeds when loss is seen
        return 0 if report.lost else 1
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
