"""A walk-by clip replayed as one camera's video through the real pipeline (detector, matcher and
sink processes on the real broker and Redis): the frames published, the faces the detectors
found and the store's day against the clip's truth."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from facestream.cli.pipeline import replay as replay_command
from facestream.core.engine import FaceEngine
from facestream.runtime.settings import PipelineSettings
from facestream.tools import replay, walkby
from tests.conftest import render_walkby

PLAN = walkby.ClipPlan(people=4, returning=2, fps=10.0, seed=3)
FPS = 5.0
START = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def clip(lfw: Path, engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_walkby(PLAN, lfw, engine, tmp_path_factory)


@pytest.mark.timeout(600)
def test_a_walk_by_clip_is_counted_as_its_truth(clip: Path, pipeline: PipelineSettings) -> None:
    truth = json.loads((clip / walkby.TRUTH).read_text())
    result = replay.run_video(
        store="s-video",
        members=None,
        video=replay.VideoInput(clip / walkby.CLIP, "door", START, FPS),
        settings=pipeline,
        timezone="UTC",
        echo=lambda _: None,
        show_events=False,
        timeout=420,
    )
    # Every other frame of the 10 fps clip, stamped START + its time in the clip.
    step = round(PLAN.fps / FPS)
    assert result.frames == math.ceil(truth["frames"] / step)
    # The detector follows each face across the frames: one observation per person pass.
    assert result.observations == len(truth["passes"]), (result.observations, truth["passes"])
    # Each person comes back within seconds, well inside the sink's visit gap: one visit each,
    # every one a first visit. The second pass of each returning person was re-identified.
    stats = result.stats.as_dict()
    people = len(truth["people"])
    assert len(truth["passes"]) == people + PLAN.returning
    counts = (stats["pv"], stats["uv"], stats["new"], stats["returning"])
    assert counts == (people, people, people, 0), stats
    assert stats["members"] == []
    # Dwell: from a person's first sighting to their last, at least their first pass.
    shortest = min(p["last_frame"] - p["first_frame"] for p in truth["passes"]) / PLAN.fps
    assert stats["dwell_seconds_avg"] >= shortest * 0.8
    assert result.as_dict()["frames"] == result.frames


def test_video_replay_usage_errors(tmp_path: Path) -> None:
    """Refused before anything starts: no stack, no worker."""
    video = tmp_path / "door.mp4"
    video.write_bytes(b"never read")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,captured_at,camera\n")
    runner = CliRunner()
    base = ["--store", "s1"]
    video_at = [*base, "--video", str(video), "--camera", "c1", "--start"]
    cases = [
        (base, "exactly one of --manifest or --video"),
        ([*base, "--manifest", str(manifest), "--video", str(video)], "exactly one of"),
        ([*base, "--manifest", str(manifest), "--camera", "c1"], "go with --video"),
        ([*base, "--video", str(video), "--start", START.isoformat()], "needs --camera"),
        ([*video_at, "monday"], "not an ISO"),
        ([*video_at, "2026-12-03T10:00"], "UTC"),
        ([*video_at, START.isoformat(), "--fps", "0"], "positive"),
    ]
    for args, message in cases:
        result = runner.invoke(replay_command, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
