"""Run the real ``opencdp`` server as a child process, for tests that kill or stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, db: str) -> str:
    """Run ``opencdp ARGS --db DB`` and return its stdout (fails the test on error)."""
    done = subprocess.run(
        [sys.executable, "-m", "opencdp", *args, "--db", db],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def client_token(db: str, client: str, scopes: str = "read,write") -> str:
    """A token for every workspace of ``client``, made with ``opencdp tokens create``."""
    return cli("tokens", "create", "--client", client, "--all-accounts", "--all-brands",
               "--scope", scopes, db=db).strip()


class ServerProcess:
    """``opencdp serve`` on a free port; ``start``/``kill``/``terminate`` like a user would."""

    def __init__(self, db: str, log_path: Path, **env: str) -> None:
        self.db = db
        self.port = free_port()
        self.log_path = log_path
        self.env = {**os.environ, "OPENCDP_RATE": "100000", "OPENCDP_BURST": "100000", **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self._close_log()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opencdp", "serve", "--db", self.db, "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,  # its own process group: the server and its writer process
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"server did not become ready:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """``kill -9`` to every process of the server (the SQLite writer process too) at once."""
        assert self.proc is not None
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM to every process of the server, as a service manager stops it; the exit code."""
        assert self.proc is not None
        self._signal_group(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def _signal_group(self, signum: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass  # already gone

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
