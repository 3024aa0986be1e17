"""The servers under test, each its own process: the baseline, and ``opencdp serve``.

Both are uvicorn with uvloop and httptools, one worker, access log off.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_BIN = Path(sys.executable).parent
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU used so far by the server and its live children (the SQLite
        writer process), all their threads."""
        return sum(_cpu_seconds(pid) for pid in (self.pid, *_children(self.pid)))


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    return [int(child) for task in tasks for child in task.read_text().split()]


@contextmanager
def baseline() -> Iterator[Server]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.baseline:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]
    with _process(command, port, {}) as server:
        yield server


@contextmanager
def opencdp(db_url: str) -> Iterator[Server]:
    """``opencdp serve`` on ``db_url``; the rate limit is set out of reach."""
    port = free_port()
    command = [str(_BIN / "opencdp"), "serve", "--db", db_url, "--port", str(port)]
    env = {"OPENCDP_RATE": "1e9", "OPENCDP_BURST": "1000000000", "OPENCDP_LOG_LEVEL": "warning"}
    with _process(command, port, env) as server:
        yield server


def create_token(db_url: str) -> str:
    """A read+write token for every workspace of the ``bench`` client."""
    result = subprocess.run(
        [
            str(_BIN / "opencdp"), "tokens", "create", "--db", db_url, "--client", "bench",
            "--all-accounts", "--all-brands", "--scope", "read,write",
        ],
        check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


@contextmanager
def _process(command: list[str], port: int, env: dict[str, str]) -> Iterator[Server]:
    environment = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=environment)
    try:
        _wait_for_port(port, process)
        yield Server(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.args!r}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on port {port} within 60 s")
