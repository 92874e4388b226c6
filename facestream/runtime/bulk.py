"""Helpers for bulk loads: building millions of small objects at once (a shard loaded from a
snapshot), and what they cost in memory."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory since it started (Linux: ``VmHWM``); None where the
    system does not say. Read from /proc rather than ``getrusage``, whose figure for a program
    started from a large parent can include the parent's memory at the fork."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
