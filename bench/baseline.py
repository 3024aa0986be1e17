"""The baseline of every write figure: plain Starlette on the same uvicorn stack.

One endpoint that reads the JSON body, parses it (msgspec, as opencdp does) and
answers a small JSON object: no store, no auth, no validation. Served by
``uvicorn bench.baseline:create_app --factory --loop uvloop --http httptools``.
"""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_ANSWER = b'{"success":true}'


async def parse_and_answer(request: Request) -> Response:
    body = msgspec.json.decode(await request.body())
    if not isinstance(body, dict):
        return Response(b'{"success":false}', status_code=400, media_type="application/json")
    return Response(_ANSWER, media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/{path:path}", parse_and_answer, methods=["POST"])])
