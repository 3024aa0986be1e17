"""Operations endpoints (SPEC §12): liveness and readiness probes, Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from opencdp.api.responses import JSONResponse
from opencdp.api.routing import Endpoint, Handler
from opencdp.api.services import Services
from opencdp.errors import Unavailable
from opencdp.metrics import Metrics

log = logging.getLogger(__name__)


class Health(msgspec.Struct):
    status: Literal["ok"]


class Ready(msgspec.Struct):
    status: Literal["ready"]


def endpoints(services: Services) -> list[Endpoint]:
    return [
        Endpoint(
            path="/healthz",
            methods=("GET",),
            handler=healthz,
            operation_id="healthz",
            summary="The process is up",
            tag="Operations",
            response=Health,
            errors=(405,),
        ),
        Endpoint(
            path="/readyz",
            methods=("GET",),
            handler=_readyz(services),
            operation_id="readyz",
            summary="The store answers (503 while it does not)",
            tag="Operations",
            response=Ready,
            errors=(405, 503),
        ),
    ]


def metrics_endpoints(metrics: Metrics) -> list[Endpoint]:
    """``GET /metrics``: no token, as Prometheus scrapes it (keep it off the Internet)."""
    return [
        Endpoint(
            path="/metrics",
            methods=("GET",),
            handler=metrics.serve,
            operation_id="metrics",
            summary="Metrics in the Prometheus text format",
            tag="Operations",
            errors=(405,),
        )
    ]


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _readyz(services: Services) -> Handler:
    async def readyz(request: Request) -> Response:
        try:
            ready = await services.store.ping()
        except Exception:
            log.exception("readiness check: the store failed")
            ready = False
        if not ready:
            raise Unavailable("the store is not reachable")
        return JSONResponse({"status": "ready"})

    return readyz
