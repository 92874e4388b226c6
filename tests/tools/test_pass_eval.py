"""`facestream eval passes`: a walk-by clip rendered from real LFW photos, with the truth the
renderer wrote as a hand-written truth would be (person, enter, leave), through the detector's
own pass code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from facestream.cli.evaluation import eval_passes
from facestream.core.engine import FaceEngine
from facestream.tools import walkby
from facestream.tools.pass_eval import TruthError, TruthPass, evaluate, read_truth
from tests.conftest import render_walkby

PLAN = walkby.ClipPlan(people=3, returning=1, fps=10.0, seed=5)


@pytest.fixture(scope="module")
def clip(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_walkby(PLAN, lfw, engine, tmp_path_factory)


@pytest.fixture(scope="module")
def report(clip: Path, engine: FaceEngine) -> dict[str, Any]:
    truth = read_truth(clip / walkby.PASSES)
    return evaluate(clip / walkby.CLIP, truth, fps=5.0, engine=engine).as_dict()


def test_every_pass_of_the_clip_is_found_once(clip: Path, report: dict[str, Any]) -> None:
    truth = walkby.load_truth(clip)
    assert report["truth_passes"] == len(truth["passes"]) == PLAN.people + PLAN.returning
    assert report["found"] == report["one_to_one"] == report["truth_passes"]
    assert (report["missed"], report["split"], report["stray"]) == (0, 0, 0)
    assert report["observations"] == report["truth_passes"]
    # A few encodings per pass, not one per frame.
    assert 0 < report["encoded"] <= 4 * report["truth_passes"] < report["frames"]
    assert [p["person"] for p in report["passes"]] == [p["person"] for p in truth["passes"]]


def test_the_returning_person_is_nearest_their_own_first_pass(report: dict[str, Any]) -> None:
    reid = report["reidentification"]
    assert reid["returning_passes"] == PLAN.returning
    assert reid["nearest_is_same_person"] == PLAN.returning
    assert reid["same_person_mean"] < 0.6
    assert reid["same_person_mean"] + 0.2 < reid["other_person_mean"]


def test_the_command_prints_the_comparison(clip: Path) -> None:
    done = CliRunner().invoke(
        eval_passes, ["--video", str(clip / walkby.CLIP), "--truth", str(clip / walkby.PASSES)]
    )
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    passes = PLAN.people + PLAN.returning
    assert f"truth passes {passes}, observations {passes}: found {passes}" in lines[1]
    assert "missed 0, split into 0 extra, stray 0" in lines[1]
    assert lines[2].startswith(f"returning passes {PLAN.returning}: nearest earlier pass")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("who,when\nx,1\n", "the first line must be the header person,enter,leave"),
        ("person,enter,leave\n", "no pass"),
        ("person,enter,leave\nann,5,4\n", ":2: leave (4) is before enter (5)"),
        ("person,enter,leave\nann,soon,4\n", ":2: 'soon' is not a time"),
        ("person,enter,leave\nann,-3,4\n", ":2: '-3' is not a time from the video's start"),
        ("person,enter,leave\nann,1\n", ":2: expected person,enter,leave"),
        ("person,enter,leave\nann,inf,4\n", ":2: 'inf' is not a time"),
    ],
)
def test_a_bad_truth_file_is_refused_with_its_line(
    tmp_path: Path, clip: Path, text: str, message: str
) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text(text)
    with pytest.raises(TruthError) as raised:
        read_truth(truth)
    assert message in str(raised.value)
    done = CliRunner().invoke(
        eval_passes, ["--video", str(clip / walkby.CLIP), "--truth", str(truth)]
    )
    assert done.exit_code == 1 and message in done.output


def test_times_may_be_minutes_and_seconds(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("Person,Enter,Leave\nann,1:02.5,1:00:03\n\nbob, 4 ,5\n")
    assert read_truth(truth) == [TruthPass("ann", 62.5, 3603.0), TruthPass("bob", 4.0, 5.0)]
