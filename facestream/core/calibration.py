"""Fit a deployment's decision policies on its own photos (``facestream calibrate``).

The normalised score of :mod:`facestream.core.policy` only means something next to the cohort it
was fitted with, so the threshold and the cohort are fitted and shipped together. Nothing is
tuned on the people it is reported on: the people of each data set (each population) are cut
into three parts with a seeded RNG, and each of three rotations uses one part as the cohort
(reference people, every photo), one to fit the threshold and one to report on. Inside a part
the protocol is open-set 1:N (:func:`trials`): a third of the people are strangers, each in
turn; the others with two or more photos are members enrolled from one photo and probed with
the rest; the remaining one-photo people are enrolled as distractors. The member threshold is
the largest whose false-accept rate on the fit part is within :data:`FAR_TARGET` for each
population; the visitor threshold minimises splits + merges of simulated visitor streams
(:func:`visitor_errors`). One rotation's cohort ships, with that rotation's thresholds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.evaluation import Encodings
from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.core.photos import image_files
from facestream.core.policy import (
    MEMBER_THRESHOLD,
    VISITOR_LEARN_MIN_DISTANCE,
    VISITOR_LEARN_THRESHOLD,
    VISITOR_MAX_SAMPLES,
    VISITOR_THRESHOLD,
    Judge,
    Policy,
    PolicySet,
)

PARTS: Final = 3
FAR_TARGET: Final = 0.005
"""Members: a false member costs more than a missed one, hence half a percent, per population
(``calibrate(far_target=...)``, ``--far-target``: a deployment's own choice)."""
PROBE_CAP: Final = 10
"""Probe photos per person: LFW and the East Asian set each have someone with 60-70 photos, who
would otherwise be a tenth of a part's probes and decide its rates alone."""
BASELINE: Final = (0.50, 0.03)
"""The fixed Euclidean threshold and margin, reported next to the fitted policy."""


@dataclass(frozen=True)
class Person:
    """Someone in a calibration data set, with the encodings of the photos with a face."""

    population: str
    name: str
    vectors: NDArray[np.float32]

    @property
    def id(self) -> str:
        return f"{self.population}/{self.name}"


def population_name(folder: Path) -> str:
    """``.../lfw-fold1/images`` -> ``lfw-fold1``; any other folder is named after itself."""
    return folder.parent.name if folder.name == "images" else folder.name


def read_people(folders: Sequence[Path], encodings: Encodings) -> list[Person]:
    """The people of each folder (LFW layout) with at least one encoded photo."""
    names = [population_name(f) for f in folders]
    if len(set(names)) != len(names):
        raise ValueError(f"two data sets share a name: {names}")
    people = []
    for folder, population in zip(folders, names, strict=True):
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            vecs = [e for p in image_files(d) if (e := encodings.get(p)) is not None]
            if vecs:
                people.append(Person(population, d.name, np.stack(vecs).astype(np.float32)))
    return people


def partition(people: Sequence[Person], rng: np.random.Generator) -> list[list[Person]]:
    """Three parts, shuffled inside each population and, within it, inside the multi- and the
    one-photo people, so that every part has members, strangers and distractors of each."""
    parts: list[list[Person]] = [[] for _ in range(PARTS)]
    groups: dict[tuple[str, bool], list[Person]] = {}
    for p in people:
        groups.setdefault((p.population, len(p.vectors) >= 2), []).append(p)
    for key in sorted(groups):
        group = groups[key]
        order = rng.permutation(len(group))
        for i, chunk in enumerate(np.array_split(order, PARTS)):
            parts[i] += [group[j] for j in chunk]
    return parts


def cohort_gallery(people: Sequence[Person]) -> Gallery:
    """Every photo of the reference people; ids are ``population/name``."""
    gallery = Gallery()
    gallery.add_many(
        (Identity(p.id, p.name, "cohort", {"population": p.population}), p.vectors) for p in people
    )
    return gallery


@dataclass(frozen=True)
class Outcome:
    """Per probe: its population, whether it is a member's, its normalised score (inf: refused
    at any threshold), whether its nearest identity is itself, and the Euclidean baseline."""

    population: NDArray[np.str_]
    member: NDArray[np.bool_]
    score: NDArray[np.float64]
    right: NDArray[np.bool_]
    baseline: NDArray[np.bool_]
    """Accepted by the fixed threshold + margin."""

    @staticmethod
    def concat(items: Sequence[Outcome]) -> Outcome:
        return Outcome(
            *(np.concatenate([getattr(o, f) for o in items]) for f in Outcome.__dataclass_fields__)
        )


def trials(part: Sequence[Person], cohort: Gallery, k: int, rng: np.random.Generator) -> Outcome:
    """The open-set protocol inside one part, three stranger rotations, pooled."""
    outcomes = []
    for r in range(PARTS):
        seen: dict[str, int] = {}
        gallery = Gallery(GalleryConfig(threshold=BASELINE[0], margin=BASELINE[1]))
        probes: list[tuple[Person, NDArray[np.float32], bool]] = []
        for p in part:
            # Strangers rotate inside each population, so every population has its share.
            i = seen[p.population] = seen.get(p.population, -1) + 1
            order = rng.permutation(len(p.vectors))
            if i % PARTS == r:
                probes += [(p, p.vectors[j], False) for j in order[:PROBE_CAP]]
                continue
            gallery.add(Identity(p.id, p.name), p.vectors[order[:1]])
            probes += [(p, p.vectors[j], True) for j in order[1 : 1 + PROBE_CAP]]
        judge = Judge(Policy(k=k), gallery, [cohort])
        judged = judge.judge_batch(np.stack([v for _, v, _ in probes]))
        score = [
            j.score if j.score is not None else (-math.inf if j.matched else math.inf)
            for j in judged
        ]
        found = gallery.identify_batch(np.stack([v for _, v, _ in probes]))
        right = [
            bool(j.decision.candidates) and j.decision.candidates[0].identity.id == p.id
            for (p, _, _), j in zip(probes, judged, strict=True)
        ]
        outcomes.append(
            Outcome(
                np.array([p.population for p, _, _ in probes]),
                np.array([m for _, _, m in probes]),
                np.array(score, dtype=np.float64),
                np.array(right),
                np.array([d.identity is not None for d in found]),
            )
        )
    return Outcome.concat(outcomes)


@dataclass(frozen=True)
class Rates:
    """Open-set rates of one population."""

    false_accept: float
    """Stranger probes accepted as anyone."""
    identification: float
    """Member probes accepted as the right person."""
    wrong_person: float
    """Member probes accepted as someone else."""
    stranger_probes: int
    member_probes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "far": round(self.false_accept, 4),
            "identification_rate": round(self.identification, 4),
            "wrong_person_rate": round(self.wrong_person, 4),
            "stranger_probes": self.stranger_probes,
            "member_probes": self.member_probes,
        }


def rates(outcome: Outcome, accepted: NDArray[np.bool_]) -> dict[str, Rates]:
    """Rates per population for the given acceptances."""
    out = {}
    for pop in sorted(set(outcome.population.tolist())):
        here = outcome.population == pop
        s, m = here & ~outcome.member, here & outcome.member

        def mean(x: NDArray[np.bool_], mask: NDArray[np.bool_]) -> float:
            return float(x[mask].mean()) if mask.any() else math.nan

        out[pop] = Rates(
            mean(accepted, s),
            mean(accepted & outcome.right, m),
            mean(accepted & ~outcome.right, m),
            int(s.sum()),
            int(m.sum()),
        )
    return out


def fit_threshold(outcome: Outcome, target: float = FAR_TARGET) -> float:
    """The largest threshold whose false-accept rate is at most ``target`` for EACH population
    (rounded down to 4 places; accepting means score <= threshold)."""
    limit = math.inf
    for pop in set(outcome.population.tolist()):
        s = np.sort(outcome.score[(outcome.population == pop) & ~outcome.member])
        allowed = math.floor(target * len(s))  # false accepts tolerated
        # Any t below the (allowed+1)-th smallest stranger score accepts <= allowed of them (an
        # infinite score is refused, or accepted, by the distance guards whatever t is).
        if allowed < len(s) and math.isfinite(s[allowed]):
            limit = min(limit, math.floor(math.nextafter(s[allowed], 0.0) * 1e4) / 1e4)
    # No stranger score constrains t (too few strangers): the study's default rather than no limit.
    return limit if math.isfinite(limit) else MEMBER_THRESHOLD


VISITOR_GRID: Final = tuple(round(0.80 + 0.02 * i, 2) for i in range(11))
VISITOR_VISITS: Final = 4
"""Photos per person in a visitor stream (a returning visitor is seen a few times)."""
STREAM_MEMBER_SHARE: Final = 0.25
"""Share of a visitor stream's people enrolled as the store's members instead (at least 2)."""


def visitor_errors(
    people: Sequence[Person], policy: Policy, rng: np.random.Generator
) -> tuple[float, float]:
    """Splits per returning person and merges per person of one store's visitor stream, decided
    as the matcher decides: a quarter of the people are the store's members (enrolled from one
    photo each; the visitors are normalised against them and against each other, not against the
    calibration cohort), the others' photos arrive in random order, each unknown face mints a
    visitor, later photos should match it, and a confident match teaches the visitor a sample by
    the matcher's own rule (the ``VISITOR_LEARN_*`` constants of :mod:`facestream.core.policy`).
    """
    order = rng.permutation(len(people))
    n_members = max(2, round(STREAM_MEMBER_SHARE * len(people)))
    members = Gallery()
    members.add_many(
        (Identity(people[i].id, kind="member"), people[i].vectors[:1]) for i in order[:n_members]
    )
    visitors = [people[i] for i in order[n_members:]]
    stream = [
        (i, p.vectors[j])
        for i, p in enumerate(visitors)
        for j in rng.permutation(len(p.vectors))[:VISITOR_VISITS]
    ]
    stream = [stream[j] for j in rng.permutation(len(stream))]
    gallery = Gallery()
    judge = Judge(policy, gallery, [members])
    owner: list[int] = []
    samples: dict[str, int] = {}
    for _, vector in stream:
        decision = judge.judge(vector).decision
        identity = decision.identity
        if identity is None:
            identity = Identity(str(len(gallery)), kind="visitor")
            gallery.add(identity, vector[None, :])
            samples[identity.id] = 1
        elif (
            VISITOR_LEARN_MIN_DISTANCE < (decision.distance or 0.0) <= VISITOR_LEARN_THRESHOLD
            and samples[identity.id] < VISITOR_MAX_SAMPLES
        ):
            gallery.add(identity, vector[None, :])
            samples[identity.id] += 1
        owner.append(int(identity.id))
    truth = np.array([i for i, _ in stream])
    ids = np.array(owner)
    splits = sum(len(set(ids[truth == t].tolist())) - 1 for t in set(truth.tolist()))
    merges = sum(len(set(truth[ids == i].tolist())) - 1 for i in set(ids.tolist()))
    returning = sum(int((truth == t).sum() >= 2) for t in set(truth.tolist()))
    return splits / max(returning, 1), merges / max(len(visitors), 1)


def visitor_cost(part: Sequence[Person], policy: Policy, seed: int) -> tuple[float, float]:
    """Mean splits and merges over one stream per population of a part (each population
    weighs the same, however many people it has)."""
    pops = sorted({p.population for p in part})
    runs = [
        visitor_errors(
            [p for p in part if p.population == pop], policy, np.random.default_rng(seed)
        )
        for pop in pops
    ]
    return float(np.mean([r[0] for r in runs])), float(np.mean([r[1] for r in runs]))


def _visitor_policy(threshold: float, k: int) -> Policy:
    # The cold start of a visitor shard is laxer than the members' (PolicySet's default).
    return Policy(threshold=threshold, k=k, cold_threshold=0.45)


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": round(float(np.nanmean(values)), 4), "std": round(float(np.nanstd(values)), 4)}


@dataclass(frozen=True)
class Rotation:
    """One assignment of the three parts to cohort, fit and test."""

    index: int
    threshold: float
    cohort: Gallery
    test: dict[str, Rates]
    """The fitted member policy on the test part."""
    baseline: dict[str, Rates]
    """The fixed Euclidean threshold and margin on the same test probes."""
    visitor_threshold: float
    visitor_test: tuple[float, float]
    """Splits per returning person and merges per person on the test part."""
    fit_strangers: dict[str, int]
    """Stranger probes per population in the fit part: how finely the target was resolved."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rotation": self.index,
            "member_threshold": self.threshold,
            "cohort_people": len(self.cohort),
            "fit_stranger_probes": self.fit_strangers,
            "test": {pop: r.as_dict() for pop, r in self.test.items()},
            "baseline": {pop: r.as_dict() for pop, r in self.baseline.items()},
            "visitor_threshold": self.visitor_threshold,
            "visitor_test": {
                "splits": round(self.visitor_test[0], 4),
                "merges": round(self.visitor_test[1], 4),
            },
        }


@dataclass(frozen=True)
class Calibration:
    """The fitted policies, the cohort they ship with, and how they did on held-out people."""

    member: Policy
    visitor: Policy
    shipped: Rotation
    rotations: tuple[Rotation, ...]
    populations: dict[str, dict[str, int]]
    seed: int
    fit_visitors: bool
    seconds: float
    far_target: float = FAR_TARGET

    @property
    def policies(self) -> PolicySet:
        return PolicySet(self.member, self.visitor, self.shipped.cohort)

    def held_out(self, which: str) -> dict[str, dict[str, dict[str, float]]]:
        """Mean and std over the rotations of each rate, per population (``test``/``baseline``)."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for pop in self.populations:
            rs = [getattr(r, which)[pop] for r in self.rotations if pop in getattr(r, which)]
            out[pop] = {
                f: _summary([getattr(x, f) for x in rs])
                for f in ("false_accept", "identification", "wrong_person")
            }
        return out

    def warnings(self) -> list[str]:
        """Populations with too few strangers to resolve the false-accept target."""
        need = math.ceil(1 / self.far_target)
        out = []
        for pop in self.populations:
            n = min(r.fit_strangers.get(pop, 0) for r in self.rotations)
            if n < need:
                out.append(
                    f"{pop}: {n} stranger probes in a fit part, fewer than the {need} a"
                    f" {self.far_target:.1%} target needs; its threshold sits just under the lowest"
                    " stranger score and its held-out FAR is coarse: add people"
                )
        return out

    def as_dict(self) -> dict[str, Any]:
        vt = [r.visitor_threshold for r in self.rotations]
        return {
            "protocol": (
                f"people split per population into {PARTS} parts (seed {self.seed}); each rotation:"
                " cohort part, fit part, test part; open-set 1:N inside a part, a third of its"
                f" people strangers in turn, members enrolled from one photo, <= {PROBE_CAP} probe"
                " photos per person"
            ),
            "populations": self.populations,
            "member": {
                **self.member.as_dict(),
                "far_target_per_population": self.far_target,
                "thresholds_by_rotation": [r.threshold for r in self.rotations],
                "threshold_mean": _summary([r.threshold for r in self.rotations]),
            },
            "visitor": {
                **self.visitor.as_dict(),
                "fitted": self.fit_visitors,
                "thresholds_by_rotation": vt,
                "held_out_splits": _summary([r.visitor_test[0] for r in self.rotations]),
                "held_out_merges": _summary([r.visitor_test[1] for r in self.rotations]),
            },
            "shipped_rotation": self.shipped.index,
            "shipped_cohort_people": len(self.shipped.cohort),
            "held_out": self.held_out("test"),
            "baseline": {
                "threshold": BASELINE[0],
                "margin": BASELINE[1],
                "held_out": self.held_out("baseline"),
            },
            "rotations": [r.as_dict() for r in self.rotations],
            "warnings": self.warnings(),
            "seconds": round(self.seconds, 1),
        }


def calibrate(
    folders: Sequence[Path],
    encodings: Encodings,
    *,
    seed: int = 0,
    k: int = 2,
    fit_visitors: bool = True,
    far_target: float = FAR_TARGET,
) -> Calibration:
    """Fit the member (and visitor) thresholds and pick the cohort to ship; see the module doc."""
    started = time.perf_counter()
    people = read_people(folders, encodings)
    parts = partition(people, np.random.default_rng(seed))
    rotations = []
    for r in range(PARTS):
        cohort_part, fit_part, test_part = (parts[(r + i) % PARTS] for i in range(PARTS))
        cohort = cohort_gallery(cohort_part)
        # The same seed per rotation and part keeps the rotations comparable and reruns equal.
        fit = trials(fit_part, cohort, k, np.random.default_rng([seed, r, 1]))
        test = trials(test_part, cohort, k, np.random.default_rng([seed, r, 2]))
        threshold = fit_threshold(fit, far_target)
        vt = VISITOR_THRESHOLD
        if fit_visitors:
            costs = [
                sum(visitor_cost(fit_part, _visitor_policy(t, k), seed + r)) for t in VISITOR_GRID
            ]
            vt = VISITOR_GRID[int(np.argmin(costs))]
        rotations.append(
            Rotation(
                r,
                threshold,
                cohort,
                rates(test, test.score <= threshold),
                rates(test, test.baseline),
                vt,
                visitor_cost(test_part, _visitor_policy(vt, k), seed + r),
                {pop: x.stranger_probes for pop, x in rates(fit, fit.member).items()},
            )
        )
    # Ship the rotation with the median member threshold: the cohort and threshold go together,
    # and the middle one is the least likely to be an outlier of a lucky or unlucky split.
    shipped = sorted(rotations, key=lambda x: x.threshold)[len(rotations) // 2]
    populations = {
        pop: {
            "people": sum(p.population == pop for p in people),
            "photos_with_face": sum(len(p.vectors) for p in people if p.population == pop),
        }
        for pop in sorted({p.population for p in people})
    }
    return Calibration(
        Policy(threshold=shipped.threshold, k=k),
        _visitor_policy(shipped.visitor_threshold, k),
        shipped,
        tuple(rotations),
        populations,
        seed,
        fit_visitors,
        time.perf_counter() - started,
        far_target,
    )
