"""Logging set-up, in one place for the CLI and every worker."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr at ``level``. Called again (a worker under the ``facestream`` group, which
    set things up already), it only changes the level: a worker is worth hearing at INFO."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format=FORMAT, stream=sys.stderr)
    root.setLevel(level.upper())
    # kafka-python logs every connection and metadata refresh at INFO; keep its warnings.
    logging.getLogger("kafka").setLevel(max(root.level, logging.WARNING))
