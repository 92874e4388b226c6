"""Synthetic dlib-like encodings for large galleries, fitted per dimension to real LFW faces.

The model is ``mean + between * std * z_person + within * std * z_photo`` with ``mean`` and
``std`` measured per dimension on real encodings of LFW fold 1 (one photo per person), and the
two scales chosen so that two photos of one person lie about ``same`` apart and two people
about ``different`` apart. It ignores the correlations between dimensions (real encodings put
half their variance in about a dozen directions), which makes it an easier case for exact
search and a harder one for IVF than real faces; :mod:`benchmarks.synthetic` models those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from facestream.core.datasets import datasets_root as datasets
from facestream.core.engine import FaceEngine
from facestream.core.images import load_image

DIM = 128
Vectors = NDArray[np.float32]


def lfw_encodings(engine: FaceEngine, count: int) -> Vectors:
    """Encodings of the first photo of ``count`` LFW people (the largest face of each)."""
    people = sorted(p for p in (datasets() / "lfw-fold1" / "images").iterdir() if p.is_dir())
    out: list[Vectors] = []
    for person in people:
        if len(out) >= count:
            break
        photo: Path = sorted(person.glob("*.jpg"))[0]
        faces = [f for f in engine.faces(load_image(photo)) if f.encoding is not None]
        if faces:
            biggest = max(faces, key=lambda f: f.box.width * f.box.height)
            assert biggest.encoding is not None
            out.append(biggest.encoding)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class EncodingModel:
    mean: Vectors
    std: Vectors
    between: float
    within: float
    fitted_on: int
    """How many real encodings ``mean`` and ``std`` come from."""

    @classmethod
    def fit(cls, real: Vectors, same: float = 0.35, different: float = 0.9) -> EncodingModel:
        """Per-dimension mean and std of ``real``; scales for the wanted distances.

        Two photos of one person differ by ``within * std * (z1 - z2)``, whose squared norm is
        about ``2 * within**2 * sum(std**2)``; two people add ``2 * between**2 * sum(std**2)``.
        """
        mean = real.mean(axis=0).astype(np.float32)
        std = real.std(axis=0).astype(np.float32)
        total = float((std.astype(np.float64) ** 2).sum())
        within = same / np.sqrt(2 * total)
        between = np.sqrt(max(different**2 / (2 * total) - within**2, 0.0))
        return cls(mean, std, float(between), float(within), len(real))

    def people(self, n: int, rng: np.random.Generator) -> Vectors:
        """Centres of ``n`` new people."""
        return self._noise(n, self.between, rng) + self.mean

    def photos(self, centres: Vectors, rng: np.random.Generator) -> Vectors:
        """One new photo of each centre."""
        return centres + self._noise(len(centres), self.within, rng)

    def _noise(self, n: int, scale: float, rng: np.random.Generator) -> Vectors:
        out = np.empty((n, DIM), dtype=np.float32)
        chunk = 100_000
        for start in range(0, n, chunk):
            z = rng.standard_normal((min(chunk, n - start), DIM), dtype=np.float32)
            out[start : start + len(z)] = z * (self.std * np.float32(scale))
        return out

    def gallery(
        self, samples: int, per_person: int, rng: np.random.Generator
    ) -> tuple[Vectors, NDArray[np.int64], Vectors]:
        """``samples`` photos, ``per_person`` of each person: vectors, owners, centres."""
        centres = self.people(-(-samples // per_person), rng)
        owners = np.repeat(np.arange(len(centres), dtype=np.int64), per_person)[:samples]
        return self.photos(centres[owners], rng), owners, centres

    def check(self, rng: np.random.Generator, people: int = 1000) -> dict[str, float]:
        """Measured distances of a small sample: same person, different people (mean, p1)."""
        vectors, owners, _ = self.gallery(people * 3, 3, rng)
        dist = pairwise(vectors)
        upper = np.triu(np.ones(dist.shape, dtype=bool), 1)
        same = owners[:, None] == owners[None, :]
        return {
            "same_mean": float(dist[same & upper].mean()),
            "different_mean": float(dist[~same & upper].mean()),
            "different_p1": float(np.percentile(dist[~same & upper], 1)),
            "norm_mean": float(np.linalg.norm(vectors, axis=1).mean()),
        }


def pairwise(vectors: Vectors) -> NDArray[np.float64]:
    """Euclidean distances between every two rows."""
    v = vectors.astype(np.float64)
    sq = (v * v).sum(1)
    dist: NDArray[np.float64] = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0))
    return dist


def describe_real(real: Vectors) -> dict[str, float]:
    """Distances between the real encodings (one per person, so every pair is two people)."""
    dist = pairwise(real)
    upper = np.triu(np.ones(dist.shape, dtype=bool), 1)
    return {
        "real_different_mean": float(dist[upper].mean()),
        "real_different_p1": float(np.percentile(dist[upper], 1)),
        "real_norm_mean": float(np.linalg.norm(real, axis=1).mean()),
    }
