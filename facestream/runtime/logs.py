"""Logging set-up, in one place for the CLI and every worker, and the record context.

The runner handles each record inside :func:`log_context`, and a handler adds what it decodes
(:func:`add_log_context`: store, camera), so every line logged meanwhile, by any module, ends
with ``[topic[partition]@offset store=... camera=...]`` without the context being passed around.
A context variable rather than a logger adapter: handlers, galleries and changelog readers log
through their own module loggers.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from urllib.parse import urlsplit

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"

_CONTEXT: ContextVar[tuple[str, dict[str, str]] | None] = ContextVar(
    "facestream_log_context", default=None
)
"""The record's place and the fields added since; replaced, never mutated."""


class ContextFilter(logging.Filter):
    """Puts the current record context on every log record (``%(context)s``, empty outside)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get()
        if context is None:
            record.context = ""
        else:
            place, fields = context
            record.context = f" [{place}{''.join(f' {k}={v}' for k, v in fields.items())}]"
        return True


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``. Called again (a worker under the ``facestream`` group, which
    set things up already), it only changes the level: a worker is worth hearing at INFO.

    Raises ValueError for an unknown level."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # kafka-python logs every connection and metadata refresh at INFO; keep its warnings.
    logging.getLogger("kafka").setLevel(max(root.level, logging.WARNING))


@contextmanager
def log_context(place: str) -> Iterator[None]:
    """Within the block, log lines of this thread (or task) carry ``place``, usually
    :func:`~facestream.runtime.runner.where` of the record in hand."""
    token = _CONTEXT.set((place, {}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def add_log_context(**fields: str) -> None:
    """Add ``name=value`` fields (store, camera) to the current context, once the handler knows
    them (a field added again replaces its value: a handler may be retried). Outside a
    :func:`log_context` block (a handler driven by a test) it does nothing."""
    context = _CONTEXT.get()
    if context is not None:
        place, known = context
        _CONTEXT.set((place, {**known, **fields}))


def redact_url(url: str) -> str:
    """A URL fit for logs and error messages: its user and password removed."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
