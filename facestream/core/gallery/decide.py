"""The open-set decision: a face is only given an identity when the nearest sample is within
the threshold AND that identity beats the nearest *different* identity by a margin; everything
else is "unknown"."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery.types import Candidate, Decision, GalleryConfig, Identity


def neighbours_needed(config: GalleryConfig, max_samples: int) -> int:
    """How many neighbours to fetch per probe so that the nearest *different* identity is among
    them even when the nearest identity has many samples (``max_samples``, the most any
    identity has)."""
    return min(config.top_k + (1 if config.per_identity else max_samples), 1024)


def decide(
    dist: NDArray[np.float32],
    owners: NDArray[np.int64],
    identity_of: Mapping[int, Identity],
    config: GalleryConfig,
) -> Decision:
    """The verdict for one probe from its neighbours: their distances, nearest first, and the
    identity number owning each (-1 = no neighbour)."""
    best: dict[int, float] = {}
    for d, o in zip(dist.tolist(), owners.tolist(), strict=True):
        if o >= 0 and o not in best:
            best[o] = d
    if not best:
        return Decision(None, None, None, (), "empty_gallery")
    ranked = sorted(best.items(), key=lambda kv: kv[1])[: config.top_k]
    cands = tuple(Candidate(identity_of[o], float(d)) for o, d in ranked)
    top = cands[0]
    margin = cands[1].distance - top.distance if len(cands) > 1 else None
    if top.distance > config.threshold:
        return Decision(None, top.distance, margin, cands, "over_threshold")
    if margin is not None and margin < config.margin:
        return Decision(None, top.distance, margin, cands, "ambiguous")
    return Decision(top.identity, top.distance, margin, cands, "match")
