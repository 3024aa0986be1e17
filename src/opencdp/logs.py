"""Logging: one JSON object per line, for the server and the SQLite writer process alike.

Every line written while a request is handled carries its id (``current_request_id``).
"""

from __future__ import annotations

import logging
import re
import time
from contextvars import ContextVar
from typing import Any

import msgspec

#: uvicorn's ``trace`` level (``OPENCDP_LOG_LEVEL=trace``): every ASGI message, headers too.
TRACE = 5

#: The id of the request being handled, so every log line written for it carries it.
current_request_id: ContextVar[str | None] = ContextVar("opencdp_request_id", default=None)


#: Where a token's secret can show in a log line, and what stays of it. A token text
#: (``ocdp_<id>_<secret>``), or anything else that starts like one (percent-encoded
#: too), is hidden whole;
#: so is base64 of one (an HTTP Basic credential: base64 of ``ocdp_`` is ``b2NkcF8``),
#: the path segment after ``/v1/projects/`` (a writeKey, in any shape or encoding), a
#: credential's query parameter value and what follows ``Basic``/``Bearer``.
_SECRET = re.compile(
    r"(?:o|%6f)(?:c|%63)(?:d|%64)(?:p|%70)(?:_|%5f)[^\s'\"&/,;)\]}>]*"
    r"|b2NkcF8[A-Za-z0-9+/=_-]*"
    r"|(?P<path>/v1/projects/)[^/?#\s'\"]+"
    r"|(?P<param>(?:auth-?token|write_?key|api_?key|token|password)=)[^&#\s'\"]+"
    r"|(?P<scheme>(?:basic|bearer)\s+)[A-Za-z0-9+/=._~-]{8,}",
    re.IGNORECASE,
)
REDACTED = "[redacted]"
# What every LogRecord has: any other attribute came in a call's ``extra``. uvicorn's
# ``color_message`` repeats the message with terminal colours.
_NOT_EXTRA = {*logging.makeLogRecord({}).__dict__, "message", "asctime", "request_id",
              "color_message"}  # fmt: skip


def redact(text: str) -> str:
    """``text`` with every token secret (and whatever might hold one) replaced."""
    if not _SECRET.search(text):
        return text
    return _SECRET.sub(lambda m: (m[m.lastgroup] if m.lastgroup else "") + REDACTED, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, exception and
    the call's ``extra`` fields. The one place a log line is made, so the one place
    secrets are redacted: every text of the line passes through ``redact``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id is not None:
            entry["requestId"] = redact(str(request_id))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        for name, value in record.__dict__.items():
            if name not in _NOT_EXTRA and name not in entry:
                entry[name] = _plain(value)
        return msgspec.json.encode(entry).decode()


def _plain(value: object) -> object:
    """An ``extra`` value as JSON can hold it, its text redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else repr(value))


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
    logging.addLevelName(TRACE, "TRACE")  # uvicorn's, for a process that has no uvicorn
    logger = logging.getLogger("opencdp")
    logger.setLevel(level.upper())
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False
