"""Logging: one JSON object per line, for the server and the SQLite writer process alike.

Every line written while a request is handled carries its id (``current_request_id``).
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

import msgspec

#: The id of the request being handled, so every log line written for it carries it.
current_request_id: ContextVar[str | None] = ContextVar("opencdp_request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id is not None:
            entry["requestId"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def uvicorn_logging(level: str = "info") -> dict[str, Any]:
    """uvicorn's own log lines (start, stop, errors) as the same JSON lines."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure_logging(level: str = "info") -> None:
    """Send the ``opencdp`` loggers to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("opencdp")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
