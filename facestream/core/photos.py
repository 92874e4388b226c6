"""Photos in bulk: list image files, encode them on every core, pick the subject of a portrait.

Enrollment and both evaluations spend nearly all their time in dlib, one image at a time, so
they share this pool of worker processes (one dlib model set per process, one thread each).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from facestream.core.engine import EngineConfig, Face, FaceEngine
from facestream.core.images import ImageError, load_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})

Policy = Literal["dominant", "central"]


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


@dataclass(frozen=True)
class Encoded:
    """What the engine made of one photo: its faces, or why it could not be read."""

    path: Path
    faces: tuple[Face, ...] = ()
    shape: tuple[int, int] = (0, 0)
    """Height and width of the decoded image."""
    error: str | None = None
    """``reason: message`` of the :class:`ImageError`, when the file was refused."""


def pick_subject(
    faces: Sequence[Face], shape: tuple[int, int], policy: Policy, dominance: float = 2.0
) -> Face | None:
    """The face a portrait is *of*, among the encodable ones.

    ``dominant``: the largest face, if its area is at least ``dominance`` times the next one's
    (a bystander in the background does not spoil a photo; two people side by side do).
    ``central``: the face nearest the image centre (the LFW protocol: the subject is centred).
    """
    usable = [f for f in faces if f.encoding is not None]
    if not usable:
        return None
    if policy == "central":
        cy, cx = shape[0] / 2, shape[1] / 2

        def off_centre(f: Face) -> float:
            b = f.box
            return ((b.top + b.bottom) / 2 - cy) ** 2 + ((b.left + b.right) / 2 - cx) ** 2

        return min(usable, key=off_centre)
    ranked = sorted(usable, key=lambda f: f.box.width * f.box.height, reverse=True)
    if len(ranked) > 1:
        first, second = (f.box.width * f.box.height for f in ranked[:2])
        if first < dominance * second:
            return None
    return ranked[0]


_ENGINE: FaceEngine | None = None


def _init_worker(config: EngineConfig) -> None:
    global _ENGINE
    _ENGINE = FaceEngine(config)


def _encode_one(path: Path) -> Encoded:
    assert _ENGINE is not None, "worker not initialised"
    try:
        image = load_image(path, max_pixels=_ENGINE.config.max_pixels)
        return Encoded(path, tuple(_ENGINE.faces(image)), (image.shape[0], image.shape[1]))
    except ImageError as exc:
        return Encoded(path, error=f"{exc.reason}: {exc.message}")


def default_workers() -> int:
    """One worker per core this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def encode_many(
    paths: Iterable[Path],
    config: EngineConfig | None = None,
    *,
    workers: int | None = None,
    progress: str | None = None,
) -> Iterator[Encoded]:
    """Encode every photo, in input order, on ``workers`` processes (default: every core).

    ``progress`` labels a progress bar on stderr; None shows none (the command line decides
    whether to ask for one: ``--progress``, by default only on a terminal).
    """
    paths = list(paths)
    config = config or EngineConfig()
    workers = workers or default_workers()
    bar = tqdm(total=len(paths), desc=progress, unit="img", disable=progress is None)
    try:
        if workers <= 1 or len(paths) < 4:
            _init_worker(config)
            for p in paths:
                yield _encode_one(p)
                bar.update()
            return
        # "spawn" keeps workers free of the parent's threads and locks (the HTTP server, Faiss).
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
            for result in pool.imap(_encode_one, paths, chunksize=4):
                yield result
                bar.update()
    finally:
        bar.close()
