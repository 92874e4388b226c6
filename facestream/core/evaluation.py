"""Accuracy on real photos: the LFW pairs protocol (1:1) and an open-set 1:N protocol.

Both evaluations encode each image once (on every core, see :mod:`facestream.core.photos`) and then
score from the encodings, so the scoring functions can be rerun cheaply on cached encodings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facestream.core.engine import Encoding, EngineConfig
from facestream.core.gallery import Decision, Gallery, GalleryConfig, Identity
from facestream.core.photos import encode_many, image_files, pick_subject
from facestream.core.policy import Judge, PolicySet
from facestream.core.splits import SPLITS, person_split

Encodings = dict[Path, Encoding | None]


class PairsFormatError(ValueError):
    """pairs.txt is not in the official LFW format."""


@dataclass(frozen=True)
class Pair:
    """Two photos of one LFW pair, whether they show the same person, and the pair's fold."""

    a: Path
    b: Path
    same: bool
    fold: int


def read_pairs(pairs_file: Path, images: Path) -> list[Pair]:
    """Parse an LFW ``pairs.txt``: a header ``folds n`` (or just ``n`` for one fold), then per
    fold ``n`` same-person lines ``name i j`` and ``n`` different-person lines
    ``name1 i name2 j``."""
    lines = [ln.split() for ln in pairs_file.read_text().splitlines() if ln.strip()]
    if not lines:
        raise PairsFormatError(f"{pairs_file} is empty")
    try:
        header = [int(x) for x in lines[0]]
    except ValueError as exc:
        raise PairsFormatError(f"{pairs_file}: bad header {lines[0]}") from exc
    folds, per = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    body = lines[1:]
    if len(body) != folds * per * 2:
        raise PairsFormatError(
            f"{pairs_file}: header says {folds} fold(s) of {per}+{per} pairs, "
            f"found {len(body)} lines"
        )

    def img(name: str, n: str) -> Path:
        return images / name / f"{name}_{int(n):04d}.jpg"

    pairs: list[Pair] = []
    for i, parts in enumerate(body):
        fold = i // (2 * per)
        if len(parts) == 3:
            pairs.append(Pair(img(parts[0], parts[1]), img(parts[0], parts[2]), True, fold))
        elif len(parts) == 4:
            pairs.append(Pair(img(parts[0], parts[1]), img(parts[2], parts[3]), False, fold))
        else:
            raise PairsFormatError(f"{pairs_file}:{i + 2}: expected 3 or 4 fields: {parts}")
    return pairs


def encode_subjects(
    paths: Iterable[Path], engine: EngineConfig | None = None, *, progress: bool = False
) -> tuple[Encodings, float]:
    """The centred subject's encoding of each image (None where no face was found), and the
    seconds it took."""
    started = time.perf_counter()
    unique = sorted(set(paths))
    out: Encodings = {}
    label = "encoding" if progress else None
    for enc in encode_many(unique, engine, progress=label):
        face = pick_subject(enc.faces, enc.shape, "central") if enc.error is None else None
        out[enc.path] = face.encoding if face is not None else None
    return out, time.perf_counter() - started


def _accuracy(dist: NDArray[np.float64], same: NDArray[np.bool_], threshold: float) -> float:
    return float(((dist <= threshold) == same).mean()) if len(dist) else math.nan


@dataclass(frozen=True)
class BestThreshold:
    """The threshold that maximises accuracy on some pairs, and that accuracy."""

    threshold: float
    accuracy: float


def best_threshold(dist: NDArray[np.float64], same: NDArray[np.bool_]) -> BestThreshold:
    """The threshold that maximises accuracy on these pairs (a midpoint between two observed
    distances), and that accuracy."""
    finite = np.sort(np.unique(dist[np.isfinite(dist)]))
    if not finite.size:
        return BestThreshold(0.0, _accuracy(dist, same, 0.0))
    cands = np.concatenate([[finite[0] - 1e-6], (finite[:-1] + finite[1:]) / 2, [finite[-1]]])
    accs = [_accuracy(dist, same, float(t)) for t in cands]
    i = int(np.argmax(accs))
    return BestThreshold(float(cands[i]), float(accs[i]))


def verify_report(
    pairs: Sequence[Pair], encodings: Encodings, threshold: float, seconds: float
) -> dict[str, Any]:
    """Score pairs: a pair with an image whose face was not found counts as "different"."""
    dist = np.array(
        [
            float(np.linalg.norm(ea.astype(np.float64) - eb))
            if (ea := encodings.get(p.a)) is not None and (eb := encodings.get(p.b)) is not None
            else math.inf
            for p in pairs
        ]
    )
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    best = best_threshold(dist, same)
    cv: float | None = None
    cv_std: float | None = None
    n_folds = len(set(folds.tolist()))
    if n_folds > 1:
        scores = []
        for f in range(n_folds):
            train, test = folds != f, folds == f
            fitted = best_threshold(dist[train], same[train]).threshold
            scores.append(_accuracy(dist[test], same[test], fitted))
        cv, cv_std = float(np.mean(scores)), float(np.std(scores))
    images = {p.a for p in pairs} | {p.b for p in pairs}
    no_face = sorted(str(p) for p in images if encodings.get(p) is None)
    return {
        **_held_out_by_people(pairs, dist, same),
        "pairs": len(pairs),
        "folds": n_folds,
        "accuracy": round(_accuracy(dist, same, threshold), 4),
        "threshold": threshold,
        "best_threshold": round(best.threshold, 4),
        "best_accuracy": round(best.accuracy, 4),
        "accuracy_cv": None if cv is None else round(cv, 4),
        "accuracy_cv_std": None if cv_std is None else round(cv_std, 4),
        "images": len(images),
        "no_face": len(no_face),
        "no_face_images": no_face,
        "seconds": round(seconds, 1),
    }


def _held_out_by_people(
    pairs: Sequence[Pair], dist: NDArray[np.float64], same: NDArray[np.bool_]
) -> dict[str, Any]:
    """Accuracy on people the threshold was not fitted on: the pairs whose people all fall in
    one half of :func:`facestream.core.splits.person_split` fit the best threshold, the pairs of
    the other half are scored at it, and the halves swap. Pairs across the halves are left out.
    """
    half = np.array(
        [
            s if (s := person_split(p.a.parent.name)) == person_split(p.b.parent.name) else "mixed"
            for p in pairs
        ]
    )
    runs: list[dict[str, Any]] = []
    for fit, report in (SPLITS, SPLITS[::-1]):
        train, test = half == fit, half == report
        if not train.any() or not test.any():
            continue
        fitted = best_threshold(dist[train], same[train]).threshold
        runs.append(
            {
                "fit_on": fit,
                "fit_pairs": int(train.sum()),
                "threshold": round(fitted, 4),
                "reported_on": report,
                "pairs": int(test.sum()),
                "same_pairs": int(same[test].sum()),
                "accuracy": round(_accuracy(dist[test], same[test], fitted), 4),
            }
        )
    if not runs:
        return {"accuracy_held_out": None, "held_out": []}
    mean = sum(r["accuracy"] * r["pairs"] for r in runs) / sum(r["pairs"] for r in runs)
    return {"accuracy_held_out": round(mean, 4), "held_out": runs}


@dataclass(frozen=True)
class IdentifySplit:
    """Who is enrolled with which photo, and which photos probe as members or strangers."""

    enrolled: dict[str, Path]
    member_probes: list[tuple[Path, str]]
    stranger_probes: list[Path]


def split_people(images: Path, stranger_share: float = 0.2) -> IdentifySplit:
    """People with 2+ photos: enrolled from their first, probed with the rest, except every
    ``1/stranger_share``-th of them (in name order), who stay out of the gallery and probe as
    strangers. One-photo people are enrolled as distractors."""
    people = {d.name: image_files(d) for d in sorted(images.iterdir()) if d.is_dir()}
    multi = [n for n, photos in people.items() if len(photos) >= 2]
    step = max(1, round(1 / stranger_share)) if stranger_share > 0 else 0
    strangers = {n for i, n in enumerate(multi) if step and i % step == step - 1}
    enrolled: dict[str, Path] = {}
    member_probes: list[tuple[Path, str]] = []
    stranger_probes: list[Path] = []
    for name, photos in people.items():
        if not photos:
            continue
        if name in strangers:
            stranger_probes += photos
            continue
        enrolled[name] = photos[0]
        member_probes += [(p, name) for p in photos[1:]]
    return IdentifySplit(enrolled, member_probes, stranger_probes)


def _decision_rates(
    m_dec: Sequence[Decision], truth: Sequence[str], s_dec: Sequence[Decision]
) -> dict[str, float | None]:
    """Identification, false accept, false reject and misidentification rates of decisions."""
    right = [
        d.identity is not None and d.identity.id == n for d, n in zip(m_dec, truth, strict=True)
    ]
    wrong = [
        d.identity is not None and d.identity.id != n for d, n in zip(m_dec, truth, strict=True)
    ]
    far = float(np.mean([d.identity is not None for d in s_dec])) if s_dec else math.nan
    return {
        "identification_rate": round(float(np.mean(right)), 4) if m_dec else None,
        "false_accept_rate": round(far, 4),
        "false_reject_rate": round(float(np.mean([d.identity is None for d in m_dec])), 4)
        if m_dec
        else None,
        "misidentification_rate": round(float(np.mean(wrong)), 4) if m_dec else None,
    }


def identify_report(
    split: IdentifySplit,
    encodings: Encodings,
    config: GalleryConfig,
    seconds: float,
    plot: Path | None = None,
    policies: PolicySet | None = None,
) -> dict[str, Any]:
    """Enroll, probe and score at the configured threshold and margin, or, given ``policies``
    (a calibration folder's), with its member policy and cohort; the threshold-and-margin rates
    are then reported under ``euclidean`` for comparison."""
    gallery = Gallery(config)
    for name, photo in split.enrolled.items():
        enc = encodings.get(photo)
        if enc is not None:
            gallery.add(Identity(name, name.replace("_", " ")), enc)
    members = [(p, n, e) for p, n in split.member_probes if (e := encodings.get(p)) is not None]
    members = [(p, n, e) for p, n, e in members if n in gallery]
    strangers = [e for p in split.stranger_probes if (e := encodings.get(p)) is not None]
    probe_count = len(split.member_probes) + len(split.stranger_probes)
    m_dec = gallery.identify_batch([e for *_, e in members]) if members else []
    s_dec = gallery.identify_batch(strangers) if strangers else []
    truth = [n for _, n, _ in members]
    top1 = [d.candidates[0].identity.id if d.candidates else None for d in m_dec]
    rank1 = np.mean([t == n for t, n in zip(top1, truth, strict=True)]) if truth else math.nan
    euclidean = _decision_rates(m_dec, truth, s_dec)
    policy: dict[str, Any] | None = None
    if policies is not None:
        cohort = policies.cohort
        judge = Judge(policies.member, gallery, [cohort] if cohort is not None else [])
        m_dec = [j.decision for j in judge.judge_batch(np.array([e for *_, e in members]))]
        s_dec = [j.decision for j in judge.judge_batch(np.array(strangers))]
        # A probe whose person is in the cohort scores against its own reference photos, which
        # makes strangers look safer than they are: the report counts such people.
        people = {*split.enrolled, *(p.parent.name for p in split.stranger_probes)}
        in_cohort = {i.name for i in cohort.identities()} & people if cohort is not None else set()
        policy = {
            **policies.member.as_dict(),
            "cohort_identities": len(cohort) if cohort is not None else 0,
            "people_in_cohort": len(in_cohort),
        }
    report: dict[str, Any] = {
        "probes": probe_count,
        "member_probes": len(members),
        "stranger_probes": len(strangers),
        "no_face": probe_count - len(members) - len(strangers),
        "gallery_identities": len(gallery),
        "rank1": round(float(rank1), 4),
        **_decision_rates(m_dec, truth, s_dec),
        "threshold": config.threshold,
        "margin": config.margin,
        "index": config.index,
        "seconds": round(seconds, 1),
        "decision": "threshold_margin" if policy is None else "policy",
    }
    if policy is not None:
        report["policy"] = policy
        report["euclidean"] = euclidean
    if plot is not None:
        _plot_rates(gallery, members, strangers, config, plot)
        report["plot"] = str(plot)
    return report


@dataclass(frozen=True)
class ErrorRates:
    """Open-set error rates, one value per threshold tried."""

    false_accept: NDArray[np.float64]
    """Strangers accepted as anyone."""
    false_reject: NDArray[np.float64]
    """Members not accepted as themselves (rejected, or taken for another)."""


def error_rates(
    gallery: Gallery,
    members: Sequence[tuple[Path, str, Encoding]],
    strangers: Sequence[Encoding],
    thresholds: NDArray[np.float64],
    margin: float,
) -> ErrorRates:
    """False accept and false reject rates at each threshold, with the margin fixed."""
    m_dec = gallery.identify_batch([e for *_, e in members])
    s_dec = gallery.identify_batch(list(strangers))

    def accepts(d: Decision, t: float) -> bool:
        ok_margin = d.margin is None or d.margin >= margin
        return d.distance is not None and d.distance <= t and ok_margin

    far = np.array([np.mean([accepts(d, t) for d in s_dec]) for t in thresholds])
    frr = np.array(
        [
            np.mean(
                [
                    not (accepts(d, t) and d.candidates[0].identity.id == n)
                    for d, (_, n, _) in zip(m_dec, members, strict=True)
                ]
            )
            for t in thresholds
        ]
    )
    return ErrorRates(far, frr)


def _plot_rates(
    gallery: Gallery,
    members: Sequence[tuple[Path, str, Encoding]],
    strangers: Sequence[Encoding],
    config: GalleryConfig,
    out: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(0.3, 0.8, 101)
    rates = error_rates(gallery, members, strangers, thresholds, config.margin)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(thresholds, rates.false_accept, label="false accept rate (strangers accepted)")
    ax.plot(
        thresholds,
        rates.false_reject,
        label="members not recognised (rejected or taken for another)",
    )
    ax.axvline(config.threshold, color="grey", linestyle="--", label=f"default {config.threshold}")
    ax.set_xlabel("distance threshold (Euclidean)")
    ax.set_ylabel("rate")
    ax.set_title(f"Open-set identification, margin {config.margin}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
