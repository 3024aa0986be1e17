"""The server's own limits, against a real ``opencdp serve``: header size, header time,
connections, and the SPEC's error body for what never became a request."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        f"sqlite:///{tmp_path / 'opencdp.db'}",
        tmp_path / "server.log",
        OPENCDP_HEADER_TIMEOUT="0.5",
        OPENCDP_HEADER_LIMIT="65536",
    )
    process.start()
    yield process
    process.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    return sock


def answer_of(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def one_response(sock: socket.socket) -> bytes:
    """One whole response on a connection that stays open (read by its content-length)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return raw


def status_and_body(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    assert b"\r\nx-request-id: " in head.lower(), head  # as on every response
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_headers_over_the_limit_are_431_with_the_error_body(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        status, body = status_and_body(answer_of(sock))
    assert status == 431
    assert body == {
        "error": {
            "code": "invalid_request_error",
            "message": "headers: larger than the limit of 65536 bytes",
        }
    }


def test_a_huge_unfinished_header_is_refused_before_it_ends(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"X-Big: ")
        try:
            for _ in range(8 * 16):  # up to 8 MiB, never finished
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-way: what this test wants
        raw = answer_of(sock)
    assert raw.startswith(b"HTTP/1.1 431 ")


def test_headers_within_the_limit_pass(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"X-Big: " + b"a" * 30_000 + b"\r\nConnection: close\r\n\r\n")
        raw = answer_of(sock)
    assert raw.startswith(b"HTTP/1.1 200 ")


def test_a_client_that_stalls_in_its_headers_is_disconnected(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"X-Half")  # never finishes
        assert answer_of(sock) == b""  # closed by the server (the socket timeout is 15 s)
    with connect(server) as silent:  # connects and sends nothing at all
        assert answer_of(silent) == b""


def test_a_keep_alive_client_stalling_in_its_next_request_is_disconnected(
    server: ServerProcess,
) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTH + b"\r\n")
        assert one_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(HEALTH)  # the next request's headers, unfinished
        assert answer_of(sock) == b""


def test_malformed_http_gets_the_error_body(server: ServerProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
        status, body = status_and_body(answer_of(sock))
    assert status == 400
    assert body == {
        "error": {"code": "invalid_request_error", "message": "request: not valid HTTP/1.1"}
    }


def test_connections_past_the_bound_are_closed(tmp_path: Path) -> None:
    process = ServerProcess(
        f"sqlite:///{tmp_path / 'opencdp.db'}",
        tmp_path / "server.log",
        OPENCDP_MAX_CONNECTIONS="4",
        OPENCDP_HEADER_TIMEOUT="60",
    )
    process.start()
    try:
        held = [connect(process) for _ in range(4)]
        for sock in held:  # each is served: the server has accepted all four
            sock.sendall(HEALTH + b"\r\n")
            assert one_response(sock).startswith(b"HTTP/1.1 200 ")
        with connect(process) as extra:
            assert answer_of(extra) == b""  # closed at once, nothing sent
        held.pop().close()
        with connect(process) as again:
            again.sendall(HEALTH + b"Connection: close\r\n\r\n")
            assert answer_of(again).startswith(b"HTTP/1.1 200 ")
        for sock in held:
            sock.close()
    finally:
        process.stop()
