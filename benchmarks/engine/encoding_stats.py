"""Statistics of real dlib encodings, the ones ``benchmarks.synthetic`` imitates.

Encodes every image of ``$FACESTREAM_DATASETS/lfw-fold1`` with ``FaceEngine`` defaults (the face
nearest the image centre when there are several) and prints their norm, the same-person and
different-person distances, and how the variance spreads over directions; then the same for
the synthetic model. Run from the project root (a few minutes)::

    .venv/bin/python -m benchmarks.engine.encoding_stats
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.synthetic import Synthesizer
from facestream.core.datasets import datasets_root as datasets
from facestream.core.engine import Face, FaceEngine


def _off_centre(face: Face) -> float:
    """How far a face box's centre is from the centre of a 250x250 LFW image, where the
    subject is."""
    b = face.box
    return abs((b.left + b.right) / 2 - 125) + abs((b.top + b.bottom) / 2 - 125)


def lfw_encodings() -> tuple[NDArray[np.float64], NDArray[np.str_]]:
    engine = FaceEngine()
    vectors, names = [], []
    for path in sorted((datasets() / "lfw-fold1" / "images").glob("*/*.jpg")):
        faces = [f for f in engine.faces_in(path) if f.encoding is not None]
        if not faces:
            continue
        vectors.append(min(faces, key=_off_centre).encoding)
        names.append(path.parent.name)
    return np.asarray(vectors, dtype=np.float64), np.asarray(names)


def stats(v: NDArray[np.float64], owners: NDArray[Any]) -> dict[str, Any]:
    norms = np.linalg.norm(v, axis=1)
    sq = (v * v).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0))
    upper = np.triu(np.ones(dist.shape, dtype=bool), 1)
    same_mask = owners[:, None] == owners[None, :]
    same, diff = dist[same_mask & upper], dist[~same_mask & upper]
    centred = v - v.mean(0)
    eig = np.linalg.eigvalsh(np.cov(centred.T))[::-1]
    share = np.cumsum(eig) / eig.sum()
    # Within-person variance: deviations from each person's mean, people with 2+ samples.
    within, dof = 0.0, 0
    for o in np.unique(owners):
        rows = v[owners == o]
        if len(rows) >= 2:
            within += float(((rows - rows.mean(0)) ** 2).sum())
            dof += len(rows) - 1
    return {
        "faces": len(v),
        "people": len(np.unique(owners)),
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "mean_vector_norm": float(np.linalg.norm(v.mean(0))),
        "total_variance": float(centred.var(0).sum()),
        "within_person_variance": within / max(dof, 1),
        "same_person": _summary(same),
        "different_person": _summary(diff),
        "directions_for_variance": {
            f"{int(p * 100)}%": int(np.searchsorted(share, p)) + 1 for p in (0.5, 0.8, 0.9, 0.95)
        },
    }


def _summary(x: NDArray[np.float64]) -> dict[str, float]:
    p1, p5, p50, p95 = np.percentile(x, [1, 5, 50, 95])
    return {"pairs": len(x), "mean": float(x.mean()), "p1": p1, "p5": p5, "p50": p50, "p95": p95}


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--synthetic-people", type=int, default=1000)
    args = p.parse_args(argv)
    v, names = lfw_encodings()
    ds = Synthesizer().dataset(args.synthetic_people * 3, 3, 0)
    out = {
        "lfw": stats(v, names),
        "synthetic": stats(ds.vectors.astype(np.float64), ds.owners),
    }
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
