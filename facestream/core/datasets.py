"""Where the sample photos live: one answer for the command line, the demo, tests and benchmarks.

The photos are never part of the repository; they are read by path from ``$FACESTREAM_DATASETS``,
whose default is the ``shared/datasets`` folder beside the checkout (``../shared/datasets`` seen
from the project root).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

DATASETS_ENV: Final = "FACESTREAM_DATASETS"

# facestream/core/datasets.py -> the checkout's root is three levels up.
_CHECKOUT: Final = Path(__file__).resolve().parents[2]


def datasets_root() -> Path:
    """``$FACESTREAM_DATASETS`` if set, else ``../shared/datasets`` of the working directory or,
    failing that, of the checkout this package was imported from."""
    configured = os.environ.get(DATASETS_ENV, "").strip()
    if configured:
        return Path(configured)
    candidates = [
        Path.cwd().parent / "shared" / "datasets",
        _CHECKOUT.parent / "shared" / "datasets",
    ]
    return next((c for c in candidates if c.is_dir()), candidates[0])
