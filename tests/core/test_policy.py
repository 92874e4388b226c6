"""The normalised open-set policy on real encodings: the score, the cold start, the cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery, Identity
from facestream.core.policy import Judge, Policy, PolicySet, load_policies, save_policies

PEOPLE = ("Tom_Ridge", "Gray_Davis", "Paul_Bremer", "Nestor_Kirchner", "Gordon_Brown")


@pytest.fixture(scope="module")
def faces(engine: FaceEngine, lfw: Path) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {}
    for name in PEOPLE:
        encodings = []
        for photo in sorted((lfw / name).glob("*.jpg"))[:3]:
            found = [f.encoding for f in engine.faces_in(photo) if f.encoding is not None]
            encodings.append(found[0])
        out[name] = encodings
    return out


def gallery_of(faces: dict[str, list[np.ndarray]], names: tuple[str, ...]) -> Gallery:
    g = Gallery()
    for name in names:
        g.add(Identity(name), faces[name][0])
    return g


def test_the_score_is_the_distance_over_the_neighbourhood(faces) -> None:
    g = gallery_of(faces, PEOPLE)
    policy = Policy(threshold=0.9, k=2)
    verdict = Judge(policy, g).judge(faces["Tom_Ridge"][1])
    assert verdict.matched and verdict.decision.identity is not None
    assert verdict.decision.identity.id == "Tom_Ridge"
    d = verdict.decision
    assert d.distance is not None and verdict.score is not None
    # u_k(probe): the probe's 2nd nearest other identity; u_k(id): Tom's own 2nd nearest other.
    others = sorted(c.distance for c in d.candidates[1:])
    assert verdict.probe_scale == pytest.approx(others[1])
    assert verdict.score == pytest.approx(
        d.distance / math.sqrt(others[1] * (verdict.identity_scale or 0)), rel=1e-6
    )


def test_a_stranger_is_refused_and_a_lower_threshold_refuses_more(faces) -> None:
    g = gallery_of(faces, PEOPLE[1:])  # Tom is not enrolled
    strict, lax = Judge(Policy(threshold=0.5), g), Judge(Policy(threshold=5.0, max_distance=2), g)
    probe = faces["Tom_Ridge"][0]
    assert not strict.judge(probe).matched
    assert lax.judge(probe).matched  # a threshold on s is what decides, not luck


def test_cold_start_falls_back_to_the_raw_distance(faces) -> None:
    g = gallery_of(faces, ("Tom_Ridge",))
    policy = Policy(threshold=0.8, k=2, cold_threshold=0.45)
    judge = Judge(policy, g)
    same, other = judge.judge(faces["Tom_Ridge"][1]), judge.judge(faces["Gray_Davis"][0])
    assert same.score is None and other.score is None  # nothing to normalise by
    assert other.decision.distance is not None and other.decision.distance > 0.45
    assert not other.matched
    # A cohort gives the lone visitor a neighbourhood: the score is defined again.
    cohort = gallery_of(faces, PEOPLE[1:])
    assert Judge(policy, g, [cohort]).judge(faces["Tom_Ridge"][1]).score is not None


def test_scales_follow_the_gallery_as_it_changes(faces) -> None:
    g = gallery_of(faces, PEOPLE[:3])
    judge = Judge(Policy(threshold=0.9, k=1), g)
    before = judge.judge(faces["Tom_Ridge"][1]).identity_scale
    nearest_other = min(
        float(np.linalg.norm(faces["Tom_Ridge"][0] - faces[n][0])) for n in PEOPLE[3:]
    )
    g.add(
        Identity("near"),
        faces[
            min(
                PEOPLE[3:], key=lambda n: float(np.linalg.norm(faces["Tom_Ridge"][0] - faces[n][0]))
            )
        ][0],
    )
    after = judge.judge(faces["Tom_Ridge"][1]).identity_scale
    assert before is not None and after is not None
    if nearest_other < before:
        assert after == pytest.approx(nearest_other, rel=1e-5)
    else:
        assert after == pytest.approx(before)


def test_a_probe_cohort_counts_in_the_face_scale_only(faces) -> None:
    g = gallery_of(faces, PEOPLE[:3])
    judge = Judge(Policy(threshold=0.9, k=2), g)
    probe = faces["Tom_Ridge"][1]
    alone = judge.judge(probe)
    # The store's visitors: the other two people, one of them twice (nearer than the members).
    store = gallery_of(faces, PEOPLE[3:])
    store.add(Identity("again"), faces["Tom_Ridge"][2])
    crowded = judge.judge(probe, [store])
    assert crowded.decision.identity == alone.decision.identity
    assert crowded.identity_scale == alone.identity_scale  # Tom's own scale: the members'
    assert alone.probe_scale is not None and crowded.probe_scale is not None
    assert crowded.probe_scale < alone.probe_scale
    assert crowded.score is not None and alone.score is not None
    assert crowded.score > alone.score  # a crowded store makes the same distance less sure


def test_policy_files_round_trip(faces, tmp_path: Path) -> None:
    cohort = gallery_of(faces, PEOPLE)
    policies = PolicySet(Policy(threshold=0.77), Policy(threshold=0.88, k=1), cohort)
    save_policies(tmp_path, policies, {"note": "test"})
    loaded = load_policies(tmp_path)
    assert loaded.member == policies.member and loaded.visitor == policies.visitor
    assert loaded.cohort is not None and len(loaded.cohort) == len(PEOPLE)
    (tmp_path / "policy.json").write_text("{}")
    with pytest.raises(ValueError, match="not a facestream policy file"):
        load_policies(tmp_path)
