"""Building a gallery: in bulk through ``Gallery.load``, and identity by identity through
``Gallery.add``, whose cost grows with the gallery (every call copies all stored samples)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median, seconds
from benchmarks.synthetic import Dataset, Synthesizer
from facestream.core.gallery import FORMAT_VERSION, Gallery, GalleryConfig, Identity


def write_gallery_file(path: Path, config: GalleryConfig, ds: Dataset) -> None:
    """Write ``ds`` in the format ``Gallery.save`` writes, so that ``Gallery.load`` builds the
    index in one pass. Identity ``i`` is ``p{i}`` with internal number ``i``, so the numbers
    that ``Gallery.search`` returns are the dataset's owners."""
    meta = {
        "format": FORMAT_VERSION,
        "config": asdict(config),
        "identities": [
            {"id": f"p{i}", "name": "", "kind": "member", "meta": {}, "number": i}
            for i in range(ds.identities)
        ],
        "next_number": ds.identities,
        "next_sample": len(ds.vectors),
    }
    with path.open("wb") as fh:
        np.savez(
            fh,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            sample_ids=np.arange(len(ds.vectors), dtype=np.int64),
            owners=ds.owners,
            vectors=ds.vectors,
        )


def load_gallery(config: GalleryConfig, ds: Dataset, workdir: Path) -> tuple[Gallery, float]:
    """A gallery holding ``ds``, and the seconds ``Gallery.load`` took (the file is written
    beforehand, untimed)."""
    path = workdir / f"{config.index}.npz"
    write_gallery_file(path, config, ds)
    box: list[Gallery] = []
    took = seconds(lambda: box.append(Gallery.load(path)))
    path.unlink()
    return box[0], took


def add_loop(
    config: GalleryConfig, ds: Dataset, per_identity: int, budget: float
) -> dict[str, Any]:
    """Build an empty gallery up through ``Gallery.add``, one identity per call, until every
    sample is in or ``budget`` seconds have been spent."""
    g = Gallery(config)
    n = len(ds.vectors)
    elapsed = 0.0
    done = 0
    for ident in range(ds.identities):
        lo, hi = ident * per_identity, min(n, (ident + 1) * per_identity)
        started = time.perf_counter()
        g.add(Identity(f"p{ident}"), ds.vectors[lo:hi])
        elapsed += time.perf_counter() - started
        done = hi
        if elapsed > budget:
            break
    return {"added": done, "seconds": elapsed, "completed": done == n}


def marginal_add(
    g: Gallery, synth: Synthesizer, per_identity: int, count: int, budget: float
) -> float:
    """Median seconds of one ``Gallery.add`` (a new identity with ``per_identity`` samples)
    into ``g`` as it is. Changes ``g``."""
    photos = synth.photos(np.repeat(synth.centres(count), per_identity, axis=0))
    times: list[float] = []
    for i in range(count):
        batch = photos[i * per_identity : (i + 1) * per_identity]
        started = time.perf_counter()
        g.add(Identity(f"new{i}"), batch)
        times.append(time.perf_counter() - started)
        if sum(times) > budget and len(times) >= 3:
            break
    return median(times)


def projected_build(marginals: list[tuple[int, float]], samples: int, per_identity: int) -> float:
    """Seconds to add ``samples`` one identity at a time, integrating the measured cost of one
    add at each gallery size (linear between the sizes measured, flat before the first)."""
    sizes = np.array([m[0] for m in marginals], dtype=np.float64)
    costs = np.array([m[1] for m in marginals], dtype=np.float64)
    order = np.argsort(sizes)
    at = np.arange(0, samples, per_identity, dtype=np.float64)
    return float(np.interp(at, sizes[order], costs[order]).sum())
