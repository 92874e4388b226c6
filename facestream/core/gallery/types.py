"""The gallery's vocabulary: its settings, the people it knows, its verdicts and its errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

DIM: Final = 128
FORMAT_VERSION: Final = 1

# Open-set 1:N defaults, calibrated on ../shared/datasets/lfw-fold1 with `facestream eval
# identify` (see docs/accuracy.md): stricter than dlib's 1:1 tolerance of 0.6, because a stranger
# compared with hundreds of people is likely to fall within 0.6 of one of them (73% of LFW
# strangers do); at 0.50 with a 0.03 margin, 2.9% do and 0.2% of members are taken for others.
DEFAULT_THRESHOLD: Final = 0.50
DEFAULT_MARGIN: Final = 0.03

IndexType = Literal["flat", "ivf", "ivfsq8", "hnsw", "auto"]
INDEX_TYPES: Final[tuple[IndexType, ...]] = ("flat", "ivf", "ivfsq8", "hnsw", "auto")
Metric = Literal["l2", "cosine"]
Aggregate = Literal["samples", "mean", "trimmed"]
Vectors = NDArray[np.float32]


class Neighbours(NamedTuple):
    """The k nearest of each query, nearest first, one row per query."""

    distances: NDArray[np.float32]
    """Euclidean unit, whatever the index."""
    labels: NDArray[np.int64]
    """Index keys (from :meth:`Gallery.search`, identity numbers); -1 where there is none."""


class GalleryError(ValueError):
    """A request the gallery refuses: a bad vector, an unknown identity, a bad file."""


class UnknownIdentity(GalleryError, KeyError):
    """No identity with this id is in the gallery."""


@dataclass(frozen=True)
class GalleryConfig:
    """How the gallery indexes and decides. Saved with the gallery."""

    index: IndexType = "flat"
    metric: Metric = "l2"
    aggregate: Aggregate = "samples"
    """One vector per photo ("samples"), or one per person: the mean, or the mean of the
    samples that lie near the person's median ("trimmed", which drops outlier photos)."""
    threshold: float = DEFAULT_THRESHOLD
    """Largest distance that can be a match (Euclidean, or with metric cosine, the Euclidean
    distance between unit-normalised vectors)."""
    margin: float = DEFAULT_MARGIN
    """How much nearer the best identity must be than the nearest different one."""
    top_k: int = 10
    nlist: int = 0
    """IVF lists; 0 picks about 4*sqrt(N) when the index is trained."""
    nprobe: int = 0
    """IVF lists searched per probe; 0 picks max(8, nlist / 16), which keeps recall@1 near
    0.97 as galleries grow (a fixed 8 fell to 0.54 at 1e6 samples; docs/benchmarks.md)."""
    hnsw_m: int = 32
    ef_search: int = 256
    """HNSW search breadth: 64 gave recall@1 0.85 at 1e6 samples, 256 gives 0.97."""
    min_train: int = 256
    """IVF indexes are trained once the gallery holds this many vectors; until then searches
    are exact over the stored samples."""
    trim_distance: float = 0.45
    exact_below: int = 20_000
    """``index="auto"``: exact (flat) search below this many samples; from it on, a compressed
    index built in the background, and rebuilt there whenever the gallery has grown 4x."""
    rerank: int = 256
    """``index="auto"``: candidates per probe taken from the compressed index and re-ranked at
    their true distances (recall@1 against exact search: 1.000 at 1e6 samples with 256)."""
    vector_dir: str = ""
    """``index="auto"``: directory of the file holding the raw vectors (empty: the system's
    temporary directory). It should be on a disk: on a tmpfs the file is in RAM after all."""
    background_build: bool = True
    """``index="auto"``: build compressed indexes on a thread (False: in the call that makes
    one due, as tests and deterministic replays want)."""

    def __post_init__(self) -> None:
        if self.index not in INDEX_TYPES:
            raise GalleryError(f"unknown index type {self.index!r}; one of {INDEX_TYPES}")
        if self.metric not in ("l2", "cosine"):
            raise GalleryError(f"unknown metric {self.metric!r}")
        if self.aggregate not in ("samples", "mean", "trimmed"):
            raise GalleryError(f"unknown aggregate {self.aggregate!r}")
        if not (self.threshold > 0 and self.margin >= 0 and self.top_k >= 1):
            raise GalleryError("threshold must be > 0, margin >= 0 and top_k >= 1")
        if self.index == "auto" and self.per_identity:
            # Re-ranking reads the stored samples, which are not the per-person vectors.
            raise GalleryError("index 'auto' holds every sample: use aggregate 'samples'")
        if self.exact_below < 1 or self.rerank < 1:
            raise GalleryError("exact_below and rerank must be >= 1")

    @property
    def ivf(self) -> bool:
        """Whether the index is an IVF kind (trained, and exact until trained)."""
        return self.index in ("ivf", "ivfsq8")

    @property
    def per_identity(self) -> bool:
        """Whether the index holds one vector per person rather than one per sample."""
        return self.aggregate != "samples"


@dataclass(frozen=True)
class Identity:
    """A person the gallery knows: a member, or an anonymous visitor with a minted FaceId."""

    id: str
    name: str = ""
    kind: str = "member"
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """One identity near a probe, at its nearest sample's distance."""

    identity: Identity
    distance: float


@dataclass(frozen=True)
class Decision:
    """The open-set verdict for one probe."""

    identity: Identity | None
    distance: float | None
    """Distance to the nearest identity, matched or not (None on an empty gallery)."""
    margin: float | None
    """Distance of the nearest different identity minus ``distance`` (None when there is none)."""
    candidates: tuple[Candidate, ...]
    reason: str
    """``match``, or why not: ``empty_gallery``, ``over_threshold``, ``ambiguous``."""

    @property
    def matched(self) -> bool:
        """Whether the probe was given an identity."""
        return self.identity is not None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (distances rounded to 4 places, infinities as None)."""
        return {
            "identity": asdict(self.identity) if self.identity else None,
            "distance": _round(self.distance),
            "margin": _round(self.margin),
            "reason": self.reason,
            "candidates": [
                {"id": c.identity.id, "name": c.identity.name, "distance": _round(c.distance)}
                for c in self.candidates
            ],
        }


def _round(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 4)
