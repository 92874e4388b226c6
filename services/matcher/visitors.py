"""One store's visitors: their gallery, and where each of their samples came from.

A visitor is minted from one observation and may later learn samples from confident sightings
(see :mod:`.learning`). What a shard keeps per visitor is exactly what its ``identities.v1``
record says: the samples in order, the observation each came from, and when the visitor was
first seen, so that the record can be written again at any time, byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.schemas import IdentityRecord, vector_to_wire


@dataclass(frozen=True)
class SampleSource:
    """The visitor sample an observation gave: ``index`` 0 minted the visitor, others were
    learned."""

    face_id: str
    index: int


@dataclass
class _Visitor:
    first_seen: datetime
    learned_from: list[str]
    """Observation ids of the samples, in the record's order (the minting one first)."""
    prints: list[bytes] = field(default_factory=list)
    """A digest of each sample: the gallery does not promise to return samples in the order
    they were added, and the record must list them in that order."""


def _print(vector: NDArray[Any]) -> bytes:
    return hashlib.blake2b(np.asarray(vector, dtype="<f4").tobytes(), digest_size=8).digest()


class StoreShard:
    """The visitors of one store, in a gallery of their own (no Kafka here)."""

    def __init__(self, config: GalleryConfig, store_id: str, partition: int) -> None:
        if config.metric != "l2":
            # Records are rebuilt from the gallery's samples: they must come back unchanged.
            raise ValueError("visitor shards keep raw encodings: the metric must be l2")
        self.gallery = Gallery(config)
        self.store_id = store_id
        self.partition = partition
        self.samples = 0
        """Samples held, over every visitor of the store."""
        self._visitors: dict[str, _Visitor] = {}
        self._source: dict[str, SampleSource] = {}

    def __len__(self) -> int:
        return len(self._visitors)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._visitors

    def source_of(self, observation_id: str) -> SampleSource | None:
        """The sample ``observation_id`` gave a visitor here, if any."""
        return self._source.get(observation_id)

    def sample_count(self, face_id: str) -> int:
        """How many samples the visitor has (0 when unknown)."""
        visitor = self._visitors.get(face_id)
        return len(visitor.learned_from) if visitor else 0

    def apply(self, record: IdentityRecord) -> bool:
        """Make the visitor what ``record`` says, unless every sample of it is held already
        (this matcher's own record read back, or an older record of the visitor). Returns
        whether anything changed."""
        held = self._visitors.get(record.face_id)
        if held is not None and set(record.learned_from) <= set(held.learned_from):
            return False
        if held is not None:
            self.remove(record.face_id)
        vectors = record.vectors
        self.gallery.add(self._identity(record.face_id), vectors)
        self._visitors[record.face_id] = _Visitor(
            record.first_seen, list(record.learned_from), [_print(v) for v in vectors]
        )
        for index, observation_id in enumerate(record.learned_from):
            self._source[observation_id] = SampleSource(record.face_id, index)
        self.samples += len(vectors)
        return True

    def learn(self, face_id: str, observation_id: str, vector: NDArray[Any]) -> IdentityRecord:
        """Add a sample to a visitor; returns the visitor's new record (all samples)."""
        visitor = self._visitors[face_id]
        self.gallery.add(self._identity(face_id), vector)
        self._source[observation_id] = SampleSource(face_id, len(visitor.learned_from))
        visitor.learned_from.append(observation_id)
        visitor.prints.append(_print(vector))
        self.samples += 1
        return self.record(face_id)

    def remove(self, face_id: str) -> bool:
        """Forget a visitor and every sample of it; False when it was not here."""
        visitor = self._visitors.pop(face_id, None)
        if visitor is None:
            return False
        self.gallery.remove(face_id)
        for observation_id in visitor.learned_from:
            self._source.pop(observation_id, None)
        self.samples -= len(visitor.learned_from)
        return True

    def record(self, face_id: str) -> IdentityRecord:
        """The visitor's current ``identities.v1`` record: every sample, in learning order."""
        visitor = self._visitors[face_id]
        by_print = {_print(v): v for v in self.gallery.samples(face_id)}
        encodings = [vector_to_wire(by_print[p]) for p in visitor.prints]
        return IdentityRecord(
            face_id=face_id,
            store_id=self.store_id,
            first_seen=visitor.first_seen,
            observation_id=visitor.learned_from[0],
            encodings=encodings,
            learned_from=list(visitor.learned_from),
        )

    def distances(self, face_id: str, vector: NDArray[Any]) -> NDArray[np.float32]:
        """Euclidean distance from ``vector`` to each of the visitor's samples, in order."""
        visitor = self._visitors[face_id]
        by_print = {_print(v): v for v in self.gallery.samples(face_id)}
        samples = np.stack([by_print[p] for p in visitor.prints])
        found: NDArray[np.float32] = np.linalg.norm(samples - vector, axis=1).astype(np.float32)
        return found

    def _identity(self, face_id: str) -> Identity:
        return Identity(face_id, kind="visitor", meta={"store": self.store_id})
