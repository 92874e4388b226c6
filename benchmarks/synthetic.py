"""Synthetic face encodings shaped like dlib's, for galleries larger than any photo set at hand.

The parameters were measured on the 1,181 faces of ``lfw-fold1`` encoded with ``FaceEngine``
defaults (see docs/benchmarks.md):

- encodings have a norm of 1.43 +- 0.06: most of it is a mean vector (norm 1.31) shared by
  every face, so the model is ``mean + identity offset + per-photo noise``;
- the total variance around that mean is 0.33, of which 0.10 is within-person (photo to photo)
  and 0.23 between people: same-person samples lie about 0.44 apart, different people 0.81;
- the variance is not isotropic: 50% of it lies in 11 directions, 90% in 46. An exponentially
  falling spectrum with a decay of 18 dimensions gives 12 and 41; a random rotation spreads it
  over the coordinates. Isotropic data (``isotropic=True``) is the harder case for approximate
  indexes, so it is kept as an option.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

DIM = 128
Array = NDArray[np.float32]


@dataclass(frozen=True)
class EncodingModel:
    mean_norm: float = 1.31
    between_var: float = 0.231
    within_var: float = 0.097
    spectrum_decay: float = 18.0
    isotropic: bool = False


@dataclass(frozen=True)
class Dataset:
    """A gallery (``vectors`` owned by ``owners``) and probes of known people."""

    vectors: Array
    owners: NDArray[np.int64]
    identities: int
    queries: Array
    query_owners: NDArray[np.int64]


class Synthesizer:
    """Draws identity centres and photos of them from an :class:`EncodingModel`."""

    def __init__(self, model: EncodingModel | None = None, seed: int = 0) -> None:
        self.model = model or EncodingModel()
        self.rng = np.random.default_rng(seed)
        m = self.model
        if m.isotropic:
            spectrum = np.full(DIM, 1.0 / DIM)
        else:
            spectrum = np.exp(-np.arange(DIM) / m.spectrum_decay)
            spectrum /= spectrum.sum()
        rotation = np.linalg.qr(self.rng.standard_normal((DIM, DIM)))[0]
        # Scaled rows of the rotation: a standard normal vector times this matrix has the
        # wanted covariance.
        self._between = (np.sqrt(spectrum * m.between_var)[:, None] * rotation.T).astype(np.float32)
        self._within = (np.sqrt(spectrum * m.within_var)[:, None] * rotation.T).astype(np.float32)
        mean = self.rng.standard_normal(DIM)
        self._mean = (mean / np.linalg.norm(mean) * m.mean_norm).astype(np.float32)

    def _draw(self, n: int, scale: Array, chunk: int = 262_144) -> Array:
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            z = self.rng.standard_normal((stop - start, DIM), dtype=np.float32)
            out[start:stop] = z @ scale
        return out

    def centres(self, n: int) -> Array:
        return self._draw(n, self._between) + self._mean

    def photos(self, centres: Array) -> Array:
        """One new photo of each centre."""
        return centres + self._draw(len(centres), self._within)

    def dataset(self, samples: int, per_identity: int, queries: int) -> Dataset:
        identities = -(-samples // per_identity)
        centres = self.centres(identities)
        owners = np.repeat(np.arange(identities, dtype=np.int64), per_identity)[:samples]
        vectors = self.photos(centres[owners])
        query_owners = self.rng.integers(0, identities, size=queries).astype(np.int64)
        return Dataset(
            vectors, owners, identities, self.photos(centres[query_owners]), query_owners
        )


def describe(synth: Synthesizer, people: int = 1000, per_identity: int = 3) -> dict[str, float]:
    """Norm and same/different-person distances of a small synthetic sample, to compare with
    the real encodings the model was fitted to."""
    ds = synth.dataset(people * per_identity, per_identity, 0)
    v = ds.vectors.astype(np.float64)
    sq = (v * v).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0))
    same = ds.owners[:, None] == ds.owners[None, :]
    upper = np.triu(np.ones_like(same), 1)
    return {
        "norm_mean": float(np.sqrt(sq).mean()),
        "same_person_mean": float(dist[same & upper].mean()),
        "different_person_mean": float(dist[~same & upper].mean()),
        "different_person_p1": float(np.percentile(dist[~same & upper], 1)),
    }
