"""The whole pipeline on the local stack: ``facestream replay`` and ``facestream demo``.

Both print their result on stdout (the day's figures, or ``--json``) and their running
commentary on stderr: workers started, frames published, match events (``--events``) and the
stages' progress (``--progress``, by default on a terminal only).
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from facestream.cli.common import (
    commentary,
    emit,
    events_option,
    fail,
    hidden_alias,
    json_option,
    local_settings,
    pick,
    progress_option,
    say,
)
from facestream.core.datasets import DATASETS_ENV, datasets_root

if TYPE_CHECKING:
    from facestream.services.sink.stats import StoreStats

# The figures a replay is judged by (against the simulator's truth in `demo`).
_COMPARED = ("pv", "uv", "new", "returning", "members", "dwell_seconds_avg")


def _stats_table(stats: StoreStats, truth: dict[str, Any] | None = None) -> str:
    # The JSON form, so that lists print as lists and compare with the truth's.
    values = stats.as_dict()
    lines = [f"store {values['store']} on {values['date']}"]
    for k in _COMPARED:
        got = values.get(k)
        if truth is None:
            lines.append(f"  {k:<18} {got}")
        else:
            mark = "ok" if got == truth.get(k) else "DIFFERENT"
            lines.append(f"  {k:<18} {got!s:<40} truth {truth.get(k)!s:<40} {mark}")
    return "\n".join(lines)


@click.command()
@click.option("--store", required=True, help="Store id of the frames.")
@click.option(
    "--members",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of members to enroll first (Name/*.jpg).",
)
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV path,captured_at,camera (paths relative to the manifest).",
)
@click.option(
    "--video",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A video file, replayed as one camera's frames (instead of --manifest).",
)
@click.option("--camera", default=None, help="Camera id of the video's frames (with --video).")
@click.option(
    "--start",
    default=None,
    help="When the video's first frame was taken, ISO 8601 with a UTC offset (with --video).",
)
@click.option(
    "--fps",
    type=float,
    default=5.0,
    show_default=True,
    help="At most this many frames per second of video (with --video).",
)
@click.option("--timezone", default="UTC", show_default=True, help="The store's time zone.")
@events_option
@hidden_alias("--quiet", "quiet", is_flag=True, default=False)  # = --no-events
@progress_option
@json_option
def replay(
    store: str,
    members: Path | None,
    manifest: Path | None,
    video: Path | None,
    camera: str | None,
    start: str | None,
    fps: float,
    timezone: str,
    show_events: bool,
    quiet: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Run a whole replay: stack, workers, members, frames; print the day's stats.

    The frames come from a manifest, or from a video file (--video with --camera and --start:
    each frame is stamped START plus its time in the file; the stats are of START's day, and
    also say how many frames were published and how many faces the detectors found in them).
    """
    from facestream.tools import replay as replay_module

    if (manifest is None) == (video is None):
        raise click.UsageError("give exactly one of --manifest or --video")
    if video is None and (camera is not None or start is not None):
        raise click.UsageError("--camera and --start go with --video")
    settings, echo = local_settings(), commentary(progress)
    events = show_events and not quiet
    if manifest is not None:
        stats = replay_module.run(
            store=store,
            members=members,
            manifest=manifest,
            settings=settings,
            timezone=timezone,
            echo=echo,
            show_events=events,
        )
        if as_json:
            emit(stats.as_dict())
            return
        click.echo(_stats_table(stats))
        return
    if camera is None or start is None:
        raise click.UsageError("--video needs --camera and --start")
    try:
        started = datetime.fromisoformat(start)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {start}", param_hint="--start") from None
    if started.tzinfo is None:
        raise click.BadParameter("give a UTC offset (+00:00, Z)", param_hint="--start")
    if fps <= 0:
        raise click.BadParameter("must be positive", param_hint="--fps")
    assert video is not None
    result = replay_module.run_video(
        store=store,
        members=members,
        video=replay_module.VideoInput(video, camera, started, fps),
        settings=settings,
        timezone=timezone,
        echo=echo,
        show_events=events,
    )
    if as_json:
        emit(result.as_dict())
        return
    click.echo(_stats_table(result.stats))
    click.echo(f"  {'frames':<18} {result.frames}")
    click.echo(f"  {'observations':<18} {result.observations}")


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the simulated store's files [default: a temporary folder].",
)
@hidden_alias("--work", "work", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--seed", type=int, default=7, show_default=True, help="Who comes, and when.")
@click.option(
    "--keep-stack/--stop-stack",
    default=True,
    show_default=True,
    help="Leave Kafka and Redis running when the demo started them, so that the store dashboard"
    " (`facestream serve`, printed at the end) can show the day; `facestream stack down` stops"
    " them.",
)
@events_option
@progress_option
def demo(
    out: Path | None,
    work: Path | None,
    seed: int,
    keep_stack: bool,
    show_events: bool,
    progress: bool | None,
) -> None:
    """The main job: a simulated store replayed through the whole pipeline, beside its truth.

    Members (enrolled from photos never seen at a visit), strangers who come once, come back
    the same day or come back the next day pass the store's cameras over two days; every
    sighting is a different photo of the person where they have enough
    ($FACESTREAM_DATASETS/lfw-fold1, people of the evaluation half only). Prints each day's
    PV, UV, new, returning and dwell beside the truth, and the identity errors behind them.
    Exits non-zero when a frame got no decision or a stranger was reported as a member."""
    import tempfile

    from facestream.tools import simulate
    from facestream.tools.store_eval import evaluate, fresh_settings

    root = datasets_root()
    images = root / "lfw-fold1" / "images"
    if not images.is_dir():
        fail(f"no sample photos at {root}; set {DATASETS_ENV} to the datasets folder")
    echo = commentary(progress)
    with tempfile.TemporaryDirectory(prefix="facestream-demo-") as tmp:
        folder = pick(out, work) or Path(tmp)
        scenario = simulate.build(images, simulate.Plan(seed=seed))
        _, manifest, truth = scenario.write(folder)
        stores = ", ".join(f"{s.store_id} ({s.timezone})" for s in scenario.stores)
        echo(
            f"simulated {stores}: {len(scenario.members)} members, "
            f"{len({s.person for s in scenario.sightings})} people, "
            f"{len(scenario.sightings)} sightings over two days"
        )
        settings = fresh_settings(local_settings(), "demo")
        report = evaluate(
            manifest, truth, settings, echo, show_events=show_events, keep_stack=keep_stack
        )
    for line in report.lines():
        click.echo(line)
    if keep_stack:
        zones = json.dumps({s.store_id: s.timezone for s in scenario.stores})
        key = secrets.token_urlsafe(24)  # a local demo's key, shown once, kept nowhere
        say(
            "the store dashboard on this run: start the API, open "
            "http://127.0.0.1:8000/dashboard and log in with the key\n"
            f"  FACESTREAM_API_KEY={key} "
            f"FACESTREAM_REDIS_PREFIX={settings.redis_prefix} "
            f"FACESTREAM_SINK_STORE_TIMEZONES='{zones}' "
            ".venv/bin/facestream serve --gallery demo-gallery.npz"
        )
    ids = report.identities
    if ids.missing or ids.extra or ids.false_members:
        raise SystemExit(1)
