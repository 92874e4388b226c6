"""1:1 verification with cohort-normalised scores, held out by people: does normalising a pair's
distance by each photo's neighbourhood among other people beat one fixed distance?

    .venv/bin/python -m benchmarks.accuracy.verify_norm [--images DIR] [--pairs FILE]
        [--k 1 3 10 30] [--landmarks small|large]

Encodes every photo of the folder once (``encode_subjects``, as ``facestream eval verify``;
``--landmarks large`` aligns faces with dlib's 68-point model instead of the engine's 5-point
one, to compare the raw distance of both alignments on the same held-out protocol).
The official pairs are split as ``eval verify`` splits them (``facestream.core.splits``: pairs
whose two people fall in one half; pairs across the halves are left out). For each half, the
threshold is fitted on that half's pairs and reported on the other half's pairs; the cohort of
a pair is every photo of the *other* half's people (never the pair's own people, never the
people the threshold is scored on), so nothing is fitted on the people reported.

Scores, for a pair (a, b) at distance d, with u_x the mean distance from x to its k nearest
cohort photos:

* ``distance``: d (what ``eval verify`` and ``/verify`` use today);
* ``ratio k``: d / sqrt(u_a * u_b) (the matcher's normalised policy, in the 1:1 case);
* ``shift k``: d - (u_a + u_b) / 2.

Prints, per score, the threshold and accuracy of each held-out run and their pair-weighted mean.
Then, for the raw distance, two more things:

* the ceiling: the best single threshold chosen on the held-out pairs themselves (in-sample),
  which no threshold fitted elsewhere can beat on them;
* a threshold fitted on *every* pair of one half's photos (same-person pairs weighted so each
  person counts alike, same and different pairs half and half, as the official pairs are) and
  reported on the other half's official pairs: the fold's official pairs alone are too few to
  place a threshold (187 in the fit half).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from facestream.core.datasets import datasets_root
from facestream.core.engine import EngineConfig
from facestream.core.evaluation import Pair, best_threshold, encode_subjects, read_pairs
from facestream.core.photos import image_files
from facestream.core.splits import SPLITS, Split, person_split

Score = Callable[[float, float, float], float]
OTHER: dict[Split, Split] = {SPLITS[0]: SPLITS[1], SPLITS[1]: SPLITS[0]}


def accuracy_at(values: NDArray[np.float64], same: NDArray[np.bool_], threshold: float) -> float:
    """Share of pairs decided right: same person at or below the threshold."""
    return float(((values <= threshold) == same).mean())


def cohort_scales(
    probes: NDArray[np.float32], cohort: NDArray[np.float32], k: int
) -> NDArray[np.float64]:
    """Mean distance from each probe to its ``k`` nearest cohort photos."""
    d2 = (
        (probes.astype(np.float64) ** 2).sum(1)[:, None]
        + (cohort.astype(np.float64) ** 2).sum(1)[None, :]
        - 2.0 * probes.astype(np.float64) @ cohort.astype(np.float64).T
    )
    d = np.sqrt(np.maximum(d2, 0.0))
    nearest = np.sort(d, axis=1)[:, :k]
    return np.asarray(nearest.mean(axis=1), dtype=np.float64)


def main() -> None:
    default = datasets_root() / "lfw-fold1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=default / "images")
    parser.add_argument("--pairs", type=Path, default=default / "pairs.txt")
    parser.add_argument("--k", type=int, nargs="*", default=[1, 3, 10, 30])
    parser.add_argument("--landmarks", choices=["small", "large"], default="small")
    args = parser.parse_args()
    paths = [p for d in sorted(args.images.iterdir()) if d.is_dir() for p in image_files(d)]
    config = EngineConfig(landmarks=args.landmarks)
    encodings, seconds = encode_subjects(paths, config, progress=True)
    print(f"encoded {len(paths)} images in {seconds:.0f} s ({args.landmarks} landmarks)")

    by_half: dict[Split, list[tuple[Path, NDArray[np.float32]]]] = {s: [] for s in SPLITS}
    for path, enc in encodings.items():
        if enc is not None:
            by_half[person_split(path.parent.name)].append((path, enc))
    pairs = [
        p
        for p in read_pairs(args.pairs, args.images)
        if person_split(p.a.parent.name) == person_split(p.b.parent.name)
    ]
    halves = {s: [p for p in pairs if person_split(p.a.parent.name) == s] for s in SPLITS}
    print(
        "pairs within a half: "
        + ", ".join(f"{s} {len(h)} ({sum(p.same for p in h)} same)" for s, h in halves.items())
        + "; cohort photos: "
        + ", ".join(f"{s} {len(v)}" for s, v in by_half.items())
    )

    scores: dict[str, tuple[Score, int]] = {"distance": (lambda d, _a, _b: d, 1)}
    for k in args.k:
        scores[f"ratio k={k}"] = (lambda d, a, b: d / float(np.sqrt(a * b)), k)
        scores[f"shift k={k}"] = (lambda d, a, b: d - (a + b) / 2.0, k)

    def scored(half: Split, score: Score, k: int) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The half's pairs scored against the other half's photos as the cohort."""
        cohort = np.stack([e for _, e in by_half[OTHER[half]]])
        mine: list[Pair] = halves[half]
        values, same = [], []
        for p in mine:
            ea, eb = encodings.get(p.a), encodings.get(p.b)
            if ea is None or eb is None:
                values.append(np.inf)  # no face: "different", as eval verify counts it
            else:
                u = cohort_scales(np.stack([ea, eb]), cohort, k)
                d = float(np.linalg.norm(ea.astype(np.float64) - eb))
                values.append(score(d, float(u[0]), float(u[1])))
            same.append(p.same)
        return np.array(values), np.array(same)

    print()
    print("| score | fit on | threshold | reported on | pairs | accuracy | weighted held-out |")
    print("|---|---|---|---|---|---|---|")
    distances = {}
    for name, (score, k) in scores.items():
        cached = {s: scored(s, score, k) for s in SPLITS}
        if name == "distance":
            distances = cached
        runs = []
        for fit in SPLITS:
            report = OTHER[fit]
            threshold = best_threshold(*cached[fit]).threshold
            accuracy = accuracy_at(*cached[report], threshold)
            runs.append((fit, threshold, report, len(cached[report][0]), accuracy))
        weighted = sum(r[3] * r[4] for r in runs) / sum(r[3] for r in runs)
        for i, (fit, threshold, report, n, accuracy) in enumerate(runs):
            last = f"**{weighted:.2%}**" if i == len(runs) - 1 else ""
            print(
                f"| {name if i == 0 else ''} | {fit} | {threshold:.4f} | {report} | {n} | "
                f"{accuracy:.2%} | {last} |"
            )
    ceiling(distances, by_half)


def every_pair(
    photos: list[tuple[Path, NDArray[np.float32]]],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Distances of every same-person pair of ``photos`` with weights that count each person
    alike (a person with many photos has many pairs), and of every different-person pair."""
    people = sorted({path.parent.name for path, _ in photos})
    index = {name: i for i, name in enumerate(people)}
    owner = np.array([index[path.parent.name] for path, _ in photos])
    vecs = np.stack([e for _, e in photos]).astype(np.float64)
    sq = (vecs * vecs).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * vecs @ vecs.T, 0.0))
    upper = np.triu(np.ones(dist.shape, dtype=bool), 1)
    same = (owner[:, None] == owner[None, :]) & upper
    pairs_of = np.bincount(owner[np.nonzero(same)[0]], minlength=len(people))
    weights = 1.0 / pairs_of[owner[np.nonzero(same)[0]]]
    return dist[same], weights, dist[(owner[:, None] != owner[None, :]) & upper]


def balanced_threshold(
    same: NDArray[np.float64], weights: NDArray[np.float64], different: NDArray[np.float64]
) -> float:
    """The distance that maximises the mean of the weighted same-pair acceptance and the
    different-pair rejection (the official pairs are half same, half different)."""
    candidates = np.unique(np.concatenate([same, different]))
    order = np.argsort(same)
    accepted = np.concatenate([[0.0], np.cumsum(weights[order])]) / weights.sum()
    same_ok = accepted[np.searchsorted(same[order], candidates, side="right")]
    different_ok = 1.0 - np.searchsorted(np.sort(different), candidates, side="right") / len(
        different
    )
    return float(candidates[int(np.argmax(same_ok + different_ok))])


def ceiling(
    raw: dict[Split, tuple[NDArray[np.float64], NDArray[np.bool_]]],
    by_half: dict[Split, list[tuple[Path, NDArray[np.float32]]]],
) -> None:
    """What one raw-distance threshold can reach on the held-out pairs (``raw``: each half's
    official pairs at their distance, and whether they are one person), and a threshold fitted
    on every pair of the fitting half's photos rather than on its official pairs alone."""

    both = (
        np.concatenate([raw[s][0] for s in SPLITS]),
        np.concatenate([raw[s][1] for s in SPLITS]),
    )
    best = best_threshold(*both)
    print()
    print(
        f"ceiling: the best single distance threshold chosen on the {len(both[0])} held-out "
        f"pairs themselves (in-sample) decides {best.accuracy:.2%} of them at {best.threshold:.4f}"
    )
    for half in SPLITS:
        own = best_threshold(*raw[half])
        print(f"  {half} half alone, in-sample: {own.accuracy:.2%} at {own.threshold:.4f}")
    print()
    print("| fit on every pair of | same / different pairs | threshold | reported on | accuracy |")
    print("|---|---|---|---|---|")
    total = weighted = 0.0
    for fit in SPLITS:
        report = OTHER[fit]
        same, weights, different = every_pair(by_half[fit])
        threshold = balanced_threshold(same, weights, different)
        accuracy = accuracy_at(*raw[report], threshold)
        n = len(raw[report][0])
        total += n
        weighted += n * accuracy
        print(
            f"| {fit} half's photos | {len(same):,} / {len(different):,} | {threshold:.4f} | "
            f"{report} | {accuracy:.2%} |"
        )
    print(f"pair-weighted held-out: **{weighted / total:.2%}**")


if __name__ == "__main__":
    main()
