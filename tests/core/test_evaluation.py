"""Accuracy on the whole LFW fold 1: the acceptance figures, measured on every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from facestream.core.evaluation import (
    Encodings,
    PairsFormatError,
    encode_subjects,
    identify_report,
    read_pairs,
    split_people,
    verify_report,
)
from facestream.core.gallery import GalleryConfig
from facestream.core.photos import image_files
from facestream.core.verification import DEFAULT_VERIFY_THRESHOLD


@pytest.fixture(scope="module")
def encodings(lfw: Path) -> tuple[Encodings, float]:
    """Every fold-1 image encoded once (about a minute on two cores)."""
    return encode_subjects(p for d in sorted(lfw.iterdir()) for p in image_files(d))


def test_lfw_fold1_verification(lfw: Path, encodings: tuple[Encodings, float]) -> None:
    enc, seconds = encodings
    pairs = read_pairs(lfw.parent / "pairs.txt", lfw)
    report = verify_report(pairs, enc, DEFAULT_VERIFY_THRESHOLD, seconds)
    assert report["pairs"] == 600 and report["folds"] == 1 and report["accuracy_cv"] is None
    assert report["accuracy"] >= 0.985
    assert report["no_face"] <= 0.005 * report["images"]
    assert report["best_accuracy"] >= report["accuracy"]
    # On people the threshold was not fitted on (halves by person, each fits, the other reports;
    # pairs across the halves left out): 97.76% and 98.93% measured, short of the 99% target.
    halves = report["held_out"]
    assert [(h["fit_on"], h["reported_on"]) for h in halves] == [("fit", "eval"), ("eval", "fit")]
    assert halves[0]["pairs"] == halves[1]["fit_pairs"] and halves[0]["pairs"] > 200
    assert sum(h["pairs"] for h in halves) < report["pairs"]
    assert 0.97 <= report["accuracy_held_out"] <= 1.0


def test_lfw_fold1_open_set_identification(
    lfw: Path, encodings: tuple[Encodings, float], tmp_path: Path
) -> None:
    enc, seconds = encodings
    split = split_people(lfw)
    plot = tmp_path / "rates.png"
    report = identify_report(split, enc, GalleryConfig(), seconds, plot)
    assert report["probes"] == len(split.member_probes) + len(split.stranger_probes)
    assert report["stranger_probes"] > 100 and report["member_probes"] > 500
    assert report["rank1"] >= 0.92
    # The fixed Euclidean baseline (0.50 / 0.03), in-sample: 2.9% with plain encodings, 5.2%
    # with mirror-averaged ones (nearer together, strangers too). The deployed decision is the
    # calibrated normalised policy, held to <= 1% on unseen people in test_calibration.py.
    assert report["false_accept_rate"] <= 0.06
    assert report["misidentification_rate"] <= 0.01
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cross_validation_over_folds(
    lfw: Path, tmp_path: Path, encodings: tuple[Encodings, float]
) -> None:
    """A two-fold file built from the official pairs: the CV accuracy is reported."""
    lines = (lfw.parent / "pairs.txt").read_text().splitlines()[1:]
    same, diff = lines[:300], lines[300:]
    two = ["2\t150", *same[:150], *diff[:150], *same[150:], *diff[150:]]
    (tmp_path / "pairs.txt").write_text("\n".join(two) + "\n")
    pairs = read_pairs(tmp_path / "pairs.txt", lfw)
    assert {p.fold for p in pairs} == {0, 1}
    report = verify_report(pairs, encodings[0], DEFAULT_VERIFY_THRESHOLD, 0.0)
    assert report["folds"] == 2
    assert 0.95 <= report["accuracy_cv"] <= 1.0


@pytest.mark.parametrize(
    "text",
    ["", "1\t2\nA\t1\t2\n", "x y\n", "1\t1\nA\t1\nB\t1\tC\t2\n"],
    ids=["empty", "short", "header", "fields"],
)
def test_pairs_format_errors(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(PairsFormatError):
        read_pairs(tmp_path / "p.txt", tmp_path)
