"""Structured JSON logs: one object per line with time, level, msg, namespace, name and extras.

Callers pass context with ``extra={...}`` (a job's name as ``job_name``: LogRecord
reserves ``name``); :func:`job_logger` binds a job's
namespace and name. Never pass secret material (keys, passphrases, Secret
data) in a message or an extra.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_REDACTED_KEYS = ("passphrase", "password", "token", "private_key", "tls.key")
# LogRecord reserves "name" (the logger's); jobs log theirs as "job_name", printed as "name".
_RENAMED = {"job_name": "name"}


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON objects."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(marker in key.lower() for marker in _REDACTED_KEYS):
                value = "[redacted]"
            plain = isinstance(value, str | int | float | bool | type(None))
            entry[_RENAMED.get(key, key)] = value if plain else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Send every log record of the process to ``stream`` as JSON (idempotent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Chatty libraries: their debug output can include request bodies.
    for noisy in ("urllib3", "kubernetes", "grpc", "pulumi"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _JobAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def job_logger(logger: logging.Logger, namespace: str, name: str,
               **fields: Any) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose records carry the job's namespace and name."""
    context: Mapping[str, Any] = {"namespace": namespace, "job_name": name, **fields}
    return _JobAdapter(logger, dict(context))
