"""The error hierarchy: each error knows its HTTP status and the SPEC's error code.

Lower layers raise these; one handler in ``app.py`` renders the error body, whose
shapes (for the OpenAPI document) are at the end of this module.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from opencdp.models import BatchItemError


class OpenCDPError(Exception):
    """Base of every error that becomes an HTTP answer."""

    status: int = 500
    code: str = "internal_server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        return {}


class ValidationFailed(OpenCDPError):
    """A field or parameter has a wrong value; the message names it."""

    status = 400
    code = "validation_error"


class BatchRefused(ValidationFailed):
    """No call of a ``batch`` was valid: 400 with every item's error (SPEC §4)."""

    def __init__(self, problems: list[BatchItemError]) -> None:
        super().__init__("batch: no call was valid; see errors")
        self.problems = problems


class InvalidRequest(OpenCDPError):
    """The request as a whole is unusable: malformed JSON, not an object, bad encoding."""

    status = 400
    code = "invalid_request_error"


class AuthenticationFailed(OpenCDPError):
    """No token, an unknown token, or a token without access (status 401 or 403)."""

    code = "authentication_error"

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class NotFound(OpenCDPError):
    status = 404
    code = "not_found"


class ProfileNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Profile was not found.")


class EventNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Event was not found.")


class MethodNotAllowed(OpenCDPError):
    status = 405
    code = "invalid_request_error"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method {method} is not allowed here; use {', '.join(allowed)}")
        self.allowed = allowed

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(OpenCDPError):
    status = 413
    code = "invalid_request_error"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")


class UnsupportedMediaType(OpenCDPError):
    status = 415
    code = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__("content-type must be application/json")


class RateLimited(OpenCDPError):
    status = 429
    code = "rate_limit_error"

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate limit exceeded; retry after the time in Retry-After")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(OpenCDPError):
    """The service cannot take the request now (write queue full, store down)."""

    status = 503
    code = "internal_server_error"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# -- the error bodies, as the OpenAPI document describes them (SPEC §3) ------------------


class ErrorDetail(msgspec.Struct):
    code: Literal[
        "authentication_error",
        "invalid_request_error",
        "rate_limit_error",
        "validation_error",
        "not_found",
        "internal_server_error",
    ]
    message: str


class Error(msgspec.Struct):
    """The error body of every API; ``message`` names the offending field and why."""

    error: ErrorDetail


class TrackingError(msgspec.Struct):
    """The tracking API's error body: the common one plus ``success`` and ``message``."""

    success: Literal[False]
    message: str
    error: ErrorDetail
