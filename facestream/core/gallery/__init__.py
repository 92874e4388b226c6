"""The gallery: identities with several face samples each, searched 1:N with Faiss.

Faiss holds the vectors under stable ids; the gallery also keeps the raw samples (needed to
train IVF on the data, to recompute per-person means, to rebuild HNSW, which cannot remove
in place, and to re-rank the candidates of a compressed index). ``index="auto"`` keeps them in
a mapped file rather than in RAM, searches exactly while the gallery is small, and past
``exact_below`` samples on a compressed index built (and rebuilt as it grows) in the
background. Decisions are open-set: a face is only given an identity when the nearest sample is
within the threshold AND that identity beats the nearest *different* identity by a margin;
everything else is "unknown". Distances are always in dlib's Euclidean unit (its own tolerance
is 0.6), whatever the index.

One module per concern:

* :mod:`~facestream.core.gallery.types` -- settings, identities, decisions, errors, defaults;
* :mod:`~facestream.core.gallery.gallery` -- the :class:`Gallery` itself;
* :mod:`~facestream.core.gallery.samples` -- vector validation and the raw sample store;
* :mod:`~facestream.core.gallery.vector_file` -- the raw samples in a mapped file (``auto``);
* :mod:`~facestream.core.gallery.faiss_index` -- building, training and searching Faiss indexes;
* :mod:`~facestream.core.gallery.builds` -- compressed indexes built off the hot path (``auto``);
* :mod:`~facestream.core.gallery.decide` -- the open-set threshold + margin decision;
* :mod:`~facestream.core.gallery.persistence` -- the gallery file, saved atomically;
* :mod:`~facestream.core.gallery.locking` -- the readers-writer lock.
"""

from facestream.core.gallery.gallery import Change, Gallery
from facestream.core.gallery.samples import as_vectors
from facestream.core.gallery.types import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    DIM,
    FORMAT_VERSION,
    INDEX_TYPES,
    Aggregate,
    Candidate,
    Decision,
    GalleryConfig,
    GalleryError,
    Identity,
    IndexType,
    Metric,
    Neighbours,
    UnknownIdentity,
    Vectors,
)

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_THRESHOLD",
    "DIM",
    "FORMAT_VERSION",
    "INDEX_TYPES",
    "Aggregate",
    "Candidate",
    "Change",
    "Decision",
    "Gallery",
    "GalleryConfig",
    "GalleryError",
    "Identity",
    "IndexType",
    "Metric",
    "Neighbours",
    "UnknownIdentity",
    "Vectors",
    "as_vectors",
]
