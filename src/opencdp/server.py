"""The HTTP protocol ``opencdp serve`` runs: uvicorn's httptools one, with limits.

uvicorn's httptools protocol has no limit on header size (httptools joins a header's
pieces as they arrive: a 128 MiB header cost 13 s of CPU), no time limit for a client
to finish its headers, and no bound on the connections it holds. This subclass adds
them, and keeps httptools' parsing (the fastest measured here):

- headers (request line included) over ``OPENCDP_HEADER_LIMIT`` bytes → ``431``;
  bytes are counted as they arrive, so an unfinished header is refused as soon as it
  passes the limit, not when it ends;
- a client that has not finished its headers ``OPENCDP_HEADER_TIMEOUT`` seconds after
  it connected (or after it began its next request) is disconnected;
- past ``OPENCDP_MAX_CONNECTIONS`` open connections in this process, a new one is
  closed at once;
- malformed HTTP gets ``400`` with the SPEC's error body (uvicorn answers plain text);
- on shutdown, change feed reads held open for a commit answer at once (empty, with
  their ``next``), rather than holding the shutdown up to their ``wait``.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from opencdp.app import new_request_id
from opencdp.config import Settings
from opencdp.store.feed import end_all_waits

#: ``uvicorn.run(http=...)`` takes this import string (worker processes import it too).
PROTOCOL = "opencdp.server:GuardedHttpProtocol"


@cache
def _settings() -> Settings:
    return Settings.from_env()


class _HeadersTooLarge(Exception):
    pass


class GuardedHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a header size limit, a header timeout, a connection bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = _settings()
        self._header_limit = settings.header_limit
        self._header_timeout = settings.header_timeout
        self._max_connections = settings.max_connections
        self._in_body = False
        self._received = 0  # bytes fed since the last headers ended
        self._too_large = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self.transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._received += len(data)
        super().data_received(data)
        if self._in_body or not self._received or self.transport.is_closing():
            return  # (a request that arrives whole in one read never needs the timer)
        if self._received > self._header_limit:
            self._too_large = True
            self.send_400_response("")
        elif self._header_timer is None:
            self._arm_header_timer()

    # -- parser callbacks --------------------------------------------------------------

    def on_headers_complete(self) -> None:
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._header_limit:
            self._too_large = True
            raise _HeadersTooLarge()
        self._in_body = True
        self._received = 0
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    # -- answers without a request ---------------------------------------------------

    def shutdown(self) -> None:
        end_all_waits()
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """The SPEC's error body for what never became a request, then close."""
        if self._too_large:
            status, text = 431, f"headers: larger than the limit of {self._header_limit} bytes"
        else:
            status, text = 400, "request: not valid HTTP/1.1"
        body = msgspec.json.encode({"error": {"code": "invalid_request_error", "message": text}})
        request_id = new_request_id()
        head = [
            STATUS_LINE[status],
            b"x-amzn-RequestId: " + request_id + b"\r\n",
            b"X-Request-Id: " + request_id + b"\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    # -- the header timer --------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self._in_body and not self.transport.is_closing():
            self.transport.close()
