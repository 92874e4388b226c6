"""Open-set decisions that hold across gallery sizes and populations: normalised distances.

A fixed Euclidean threshold cannot serve every store. dlib's distances between *different*
East Asian people are much smaller than between different people in the rest of LFW (a 1% false
accept rate needs about 0.37 on the first and 0.49 on the second), and the chance that a
stranger falls near *someone* grows with the gallery: a threshold right for 400 members is
wrong for a 20-visitor shard. So the decision does not compare the raw distance with a constant;
it compares it with how crowded the face's own neighbourhood is (docs/accuracy.md has the study
and the alternatives that were measured and rejected):

    s = d1 / sqrt(u_k(probe) * u_k(j))

* ``d1``: distance from the probe to its nearest identity ``j`` (nearest sample);
* ``u_k(x)``: distance from ``x`` to its k-th nearest *other* identity, among the gallery's
  other identities and a cohort of reference people (for members, the people a deployment
  calibrated with, ``facestream calibrate``; for a visitor shard, the members). For ``j`` it
  is taken from its samples, the nearest of them counting.

A probe in a crowded region (similar-looking people, a big gallery) has small ``u`` values, so
the same ``d1`` scores worse there than in a sparse one: the threshold on ``s`` adapts to the
population and to the gallery's size by itself. It is the symmetric, ratio form of cohort score
normalisation (Z/T/S-norm subtract a cohort mean and divide by its spread; measured here, the
spread of an East Asian probe's cohort distances is so small that S-norm rejected most genuine
East Asian matches, whereas the ratio kept them).

Two guards: never accept past ``max_distance`` (dlib's own tolerance region), and while there
are fewer than ``k`` other identities to normalise by (the first faces of an empty store with no
cohort), decide on the raw distance against the stricter ``cold_threshold``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import Candidate, Decision, Gallery
from facestream.core.scales import ScaleTable

# Fitted by `facestream calibrate` on the fit half of ../shared/datasets (lfw-fold1 and
# lfw-east-asian, split by people with facestream.core.splits) and reported on the other half:
# docs/accuracy.md. Members: a false member costs more than a missed one, so their operating
# point is stricter than the visitors', where splits and merges cost alike.
MEMBER_THRESHOLD: Final = 0.79
VISITOR_THRESHOLD: Final = 0.86

# When a returning visitor's sighting becomes one of their samples (the matcher's rule, also
# simulated by `facestream calibrate` when it fits the visitor threshold): a raw distance to the
# nearest sample at most VISITOR_LEARN_THRESHOLD (stricter than a match: a wrong sample merges
# two strangers for good), more than VISITOR_LEARN_MIN_DISTANCE (nearer adds nothing new), and
# at most VISITOR_MAX_SAMPLES samples a visitor, the minting one included.
VISITOR_LEARN_THRESHOLD: Final = 0.40
VISITOR_LEARN_MIN_DISTANCE: Final = 0.12
VISITOR_MAX_SAMPLES: Final = 5

# When a member's sighting becomes a learned sample of theirs (member-samples.v1): the same
# rule, stricter, because a wrong sample would greet a stranger as the member from then on.
# Learned samples are capped apart from the enrolled ones, which they never displace. Off unless
# FACESTREAM_MATCHER_MEMBER_MAX_LEARNED is set (MEMBER_MAX_LEARNED is the cap measured with).
MEMBER_LEARN_THRESHOLD: Final = 0.36
MEMBER_LEARN_MIN_DISTANCE: Final = 0.12
MEMBER_MAX_LEARNED: Final = 3


@dataclass(frozen=True)
class Policy:
    """How the normalised decision is made; see the module docstring."""

    threshold: float = MEMBER_THRESHOLD
    """Largest normalised score ``s`` that is a match."""
    k: int = 2
    """Which neighbour normalises: the k-th nearest other identity (1 = the nearest)."""
    max_distance: float = 0.6
    """Never a match past this raw distance, whatever the neighbourhood."""
    cold_threshold: float = 0.42
    """Raw-distance threshold while fewer than ``k`` other identities exist to normalise by."""

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and self.k >= 1 and self.max_distance > 0):
            raise ValueError("threshold and max_distance must be > 0 and k >= 1")

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "k": self.k,
            "max_distance": self.max_distance,
            "cold_threshold": self.cold_threshold,
        }


@dataclass(frozen=True)
class Judgement:
    """A decision with the numbers behind it."""

    decision: Decision
    score: float | None
    """The normalised score ``s`` (None on a cold start or an empty gallery)."""
    probe_scale: float | None = None
    identity_scale: float | None = None

    @property
    def matched(self) -> bool:
        return self.decision.identity is not None


@dataclass
class Judge:
    """Applies a :class:`Policy` to one gallery, normalising against its other identities and
    the ``cohorts`` (galleries of reference people: a calibration cohort, the members)."""

    policy: Policy
    gallery: Gallery
    cohorts: Sequence[Gallery] = ()
    scales: ScaleTable = field(init=False, repr=False)
    """The identities' scales ``u_k``, kept while the galleries change."""

    def __post_init__(self) -> None:
        self.scales = ScaleTable(self.policy.k, (self.gallery, *self.cohorts))

    def judge(self, vector: NDArray[Any], probe_cohorts: Sequence[Gallery] = ()) -> Judgement:
        vectors = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.judge_batch(vectors, probe_cohorts)[0]

    def judge_batch(
        self, vectors: NDArray[Any], probe_cohorts: Sequence[Gallery] = ()
    ) -> list[Judgement]:
        """Judgements for many probes; the gallery and each cohort are searched once.

        ``probe_cohorts``: more galleries that count in the probe's scale only, not in the
        identities' (a store's visitors, for a member decision: the people the store's camera
        sees, whose neighbourhood the probe is in, while a member's scale stays the one every
        store shares)."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, 128)
        if not len(vectors):
            return []
        generations = self.scales.generations()
        found = self.gallery.identify_batch(vectors)
        cohort_found = [c.identify_batch(vectors) if len(c) else None for c in self.cohorts]
        probe_found = [c.identify_batch(vectors) for c in probe_cohorts if len(c)]
        out = []
        for i, decision in enumerate(found):
            others = [c.distance for c in decision.candidates[1:]]
            for cf in cohort_found:
                if cf is not None:
                    others += [c.distance for c in cf[i].candidates]
            for pf in probe_found:
                others += [c.distance for c in pf[i].candidates]
            # Should the face become a sample of the gallery, its neighbours are these.
            searched = [decision if len(self.gallery) else None]
            searched += [cf[i] if cf is not None else None for cf in cohort_found]
            self.scales.remember(vectors[i], generations, searched)
            out.append(self._verdict(decision, sorted(others)))
        return out

    def _verdict(self, found: Decision, others: list[float]) -> Judgement:
        cands = found.candidates
        if not cands:
            return Judgement(Decision(None, None, None, (), "empty_gallery"), None)
        top: Candidate = cands[0]
        d1 = top.distance
        margin = cands[1].distance - d1 if len(cands) > 1 else None
        p = self.policy

        def verdict(ok: bool, reason: str, score: float | None, *scales: float | None) -> Judgement:
            ident = top.identity if ok else None
            return Judgement(Decision(ident, d1, margin, cands, reason), score, *scales)

        if d1 > p.max_distance:
            return verdict(False, "over_threshold", None)
        u_probe = others[p.k - 1] if len(others) >= p.k else None
        u_ident = self.scales.scale(top.identity.id)
        if u_probe is None or u_ident is None or u_probe <= 0 or u_ident <= 0:
            ok = d1 <= p.cold_threshold
            return verdict(ok, "match" if ok else "over_threshold", None)
        score = d1 / math.sqrt(u_probe * u_ident)
        ok = score <= p.threshold
        return verdict(ok, "match" if ok else "over_threshold", score, u_probe, u_ident)


@dataclass(frozen=True)
class PolicySet:
    """The decision policies of a deployment: members, visitors, and the cohort they were
    calibrated with (written by ``facestream calibrate``; see :func:`load_policies`)."""

    # Without a calibration cohort a member is also held to the raw 0.50 of the distance
    # policy: with a handful of members and no reference people their neighbourhoods look
    # sparse and the normalised score alone let strangers through (3 false members in a
    # 60-person simulated chain, benchmarks.accuracy.store_days).
    member: Policy = field(default_factory=lambda: Policy(max_distance=0.5))
    visitor: Policy = field(
        default_factory=lambda: Policy(threshold=VISITOR_THRESHOLD, cold_threshold=0.45)
    )
    cohort: Gallery | None = None
    """Reference people to normalise against (biometric data: erase it with the deployment)."""


POLICY_FILE: Final = "policy.json"
COHORT_FILE: Final = "cohort.npz"


def load_policies(folder: Path) -> PolicySet:
    """Read ``policy.json`` (and ``cohort.npz`` when present) from a calibration folder."""
    try:
        document = json.loads((folder / POLICY_FILE).read_text())
        member = Policy(**document["member"])
        visitor = Policy(**document["visitor"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder / POLICY_FILE} is not a facestream policy file: {exc}") from exc
    cohort_path = folder / COHORT_FILE
    cohort = Gallery.load(cohort_path) if cohort_path.is_file() else None
    return PolicySet(member, visitor, cohort)


def save_policies(folder: Path, policies: PolicySet, report: dict[str, Any]) -> None:
    """Write a calibration folder: the policies, the cohort and how they were measured."""
    folder.mkdir(parents=True, exist_ok=True)
    if policies.cohort is not None:
        policies.cohort.save(folder / COHORT_FILE)
    document = {
        "member": policies.member.as_dict(),
        "visitor": policies.visitor.as_dict(),
        "cohort": COHORT_FILE if policies.cohort is not None else None,
        "report": report,
    }
    (folder / POLICY_FILE).write_text(json.dumps(document, indent=1) + "\n")
