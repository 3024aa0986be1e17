"""The crash harness in CI: a few kill -9 cycles per store, and its negative control.

``make crash`` runs the full harness (50 cycles per store); see ``tests/crash_harness.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.backends import STORES
from tests.crash_harness import CLIENT, Cycle, Load, Options, Report, database, run, verify_cycle
from tests.server_process import ServerProcess, client_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def crash(store: str, tmp_path: Path, options: Options) -> Report:
    with database(store, tmp_path) as db:
        return run(db, tmp_path, options)


@pytest.mark.parametrize("store", STORES)
def test_kill_9_never_loses_or_duplicates_an_acknowledged_event(
    store: str, tmp_path: Path
) -> None:
    report = crash(store, tmp_path, Options(cycles=3, seed=7, max_load=1.0))
    assert report.ok, report.summary() + "\n" + "\n".join(report.unexpected[:5])
    assert report.cycles == 3
    assert report.acknowledged > 50, report.summary()


@pytest.mark.parametrize("store", STORES)
def test_the_harness_sees_loss_when_the_server_answers_before_committing(
    store: str, tmp_path: Path
) -> None:
    """The negative control: without it, a harness that never finds loss proves nothing."""
    options = Options(cycles=5, seed=11, unsafe=True, stop_on_loss=True, max_load=0.6)
    report = crash(store, tmp_path, options)
    assert report.lost > 0, report.summary()


@pytest.mark.parametrize("store", STORES)
def test_sigterm_under_load_answers_commits_and_exits_zero(store: str, tmp_path: Path) -> None:
    """Every answered call is stored, no batch is half-written, the exit is 0 within 15 s."""
    with database(store, tmp_path) as db:
        token = client_token(db, CLIENT)
        server = ServerProcess(db, tmp_path / "server.log")
        report, cycle = Report(), Cycle(0)
        try:
            server.start()
            with Load(server.url, token, cycle, threads=6, seed=3):
                time.sleep(1.0)
                started = time.monotonic()
                assert server.terminate(timeout=15) == 0
                assert time.monotonic() - started < 15
            server.start()
            verify_cycle(server, token, cycle, [], report)
        finally:
            server.stop()
    assert report.ok, report.summary()
    assert report.acknowledged > 30, report.summary()
