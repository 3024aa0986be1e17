"""Prometheus metrics (SPEC §12): a registry per app, a pure ASGI middleware, ``GET /metrics``.

``Metrics(limiter)`` owns one ``CollectorRegistry`` (nothing module-level, so two apps
in one process never share counts) and observes the store it is given to (``observers``
when the store is made), which tells it of each commit: calls, repeats, guardrail
refusals. ``MetricsMiddleware`` counts every
answer by route template (never the raw path: ids in paths would explode the series),
method and status, and times it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opencdp.ratelimit import RateLimiter
from opencdp.store.base import Commit

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: The text format every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: The status label of a request whose client went away before any answer.
CLIENT_GONE = "499"
#: The ASGI scope key where the matched route leaves its ``RouteLabels``.
ROUTE_LABELS = "opencdp.route_labels"


@dataclass(frozen=True, slots=True)
class RouteLabels:
    """What the metrics need of the route a request matched (the router puts it in scope).

    ``template`` is the route's path template (``/track/{clientId}/…/v1/track``);
    ``counts_calls``: a tracking route, whose ``POST`` answers may refuse calls;
    ``lists_refused``: its 200 answer lists refused calls (``batch``'s ``errors``).
    """

    template: str
    counts_calls: bool = False
    lists_refused: bool = False


class _Problems(msgspec.Struct):
    """The part of a tracking answer that lists rejected calls (``batch``)."""

    errors: list[msgspec.Raw] = []


class Metrics:
    """Every metric of one app; also an observer of its store (a ``StoreObserver``)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "opencdp_http_requests", "HTTP answers by route template, method and status "
            f"({CLIENT_GONE}: the client left before an answer)",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "opencdp_http_request_duration_seconds", "Time to answer, by route template",
            ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.accepted = Counter(
            "opencdp_events_accepted", "Tracking calls committed as new events", registry=r
        )
        self.deduplicated = Counter(
            "opencdp_events_deduplicated",
            "Tracking calls answered with an earlier event (a repeated messageId)", registry=r,
        )
        self.rejected = Counter(
            "opencdp_events_rejected", "Tracking calls refused as invalid (400s, bad batch items)",
            registry=r,
        )
        self.commit_sizes = Histogram(
            "opencdp_commit_batch_calls", "Calls written per group commit",
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.refusals = Counter(
            "opencdp_identity_links_refused", "Identity links or merges refused by a guardrail",
            ["reason"], registry=r,
        )
        self.rate_limited = Counter(
            "opencdp_rate_limit_rejections", "Requests answered 429 by the rate limit", registry=r
        )
        r.register(_LimiterFailures(limiter))
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    # -- StoreObserver -----------------------------------------------------------------

    def committed(self, commit: Commit) -> None:
        if commit.calls:
            self.commit_sizes.observe(commit.calls)
            self.accepted.inc(commit.events)
            self.deduplicated.inc(commit.duplicates)
        for reason in commit.refusals:
            self.refusals.labels(reason).inc()

    # -- requests ----------------------------------------------------------------------

    def observe(self, scope: Scope, status: str, seconds: float, body: bytes | None) -> None:
        """Count an answer; ``body`` is given when it may list rejected calls."""
        requests, latency = self._labelled(route_label(scope), scope["method"], status)
        requests.inc()
        latency.observe(seconds)
        if status == "429":
            self.rate_limited.inc()
        if body is not None:
            self.rejected.inc(_rejected_calls(status, body))

    def _labelled(self, route: str, method: str, status: str) -> tuple[Counter, Histogram]:
        """The request counter and latency histogram of these labels (looked up once)."""
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = (self.requests.labels(*key), self.latency.labels(route, method))
            self._series[key] = series
        return series

    async def serve(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP answer (outside ``RequestContext``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_GONE
        body: list[bytes] | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = str(message["status"])
                body = [] if _may_reject(scope, status) else None
            elif body is not None and message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(scope, status, elapsed, None if body is None else b"".join(body))


def route_label(scope: Scope) -> str:
    """The matched route's template (``/track/{clientId}/…/v1/track``), or ``unmatched``."""
    labels: RouteLabels | None = scope.get(ROUTE_LABELS)
    return "unmatched" if labels is None else labels.template


def _may_reject(scope: Scope, status: str) -> bool:
    """Whether a tracking answer can refuse calls: a 400, or a 200 that lists ``errors``."""
    labels: RouteLabels | None = scope.get(ROUTE_LABELS)
    if labels is None or not labels.counts_calls or scope["method"] != "POST":
        return False
    return status == "400" or (status == "200" and labels.lists_refused)


def _rejected_calls(status: str, body: bytes) -> int:
    """Calls an answer refused: a 400 refuses its call (or each listed batch item)."""
    if status not in ("200", "400"):
        return 0
    listed = 0
    if b'"errors"' in body:
        try:
            listed = len(msgspec.json.decode(body, type=_Problems).errors)
        except msgspec.DecodeError:
            listed = 0
    return listed if status == "200" else max(listed, 1)


class _LimiterFailures(Collector):
    """The rate limiter's Redis failures (it fails open), read from its ``failures`` count."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        failures = getattr(self._limiter, "failures", 0)
        yield CounterMetricFamily(
            "opencdp_ratelimit_redis_failures",
            "Rate-limit checks that could not reach Redis and were let through",
            value=failures,
        )
