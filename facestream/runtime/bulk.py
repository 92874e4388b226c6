"""Helpers for bulk loads: building millions of small objects at once (a shard loaded from a
snapshot)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block. A bulk load allocates millions of
    objects that all stay alive, and every few hundred thousand allocations the collector would
    walk all of them again for nothing. Reference counting still frees what is dropped; the
    collector runs again afterwards, as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
