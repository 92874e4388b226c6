"""``facestream simulate``, ``facestream walkby`` and ``facestream eval store``: a simulated chain
and its counting report, and walk-by video clips.

``simulate`` plans stores, days and people from a photo folder (:mod:`facestream.tools.simulate`)
and writes ``members/``, ``manifest.csv`` and ``truth.json``; ``eval store`` replays them through
the pipeline and prints the figures beside the truth, with the identity errors behind them
(:mod:`facestream.tools.counting`). ``walkby`` renders a camera's view of people crossing it
from the same photos, with where each face is in each frame (:mod:`facestream.tools.walkby`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from facestream.cli.common import (
    commentary,
    emit,
    fail,
    hidden_alias,
    json_option,
    local_settings,
    pick,
    progress_option,
)

images_option = click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Photos in the LFW layout (one folder per person).",
)
split_option = click.option(
    "--split",
    type=click.Choice(["eval", "fit", "all"]),
    default="eval",
    show_default=True,
    help="Only people of this half (facestream.core.splits): report on people not fitted on.",
)


@click.command("simulate")
@images_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for members/, manifest.csv and truth.json (links, no copies).",
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    default=("store-7:Europe/Paris",),
    show_default=True,
    help="A store as ID:Area/City (its time zone); repeat for a chain.",
)
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d"]),
    default="2026-11-27",
    show_default=True,
    help="First day (local to each store).",
)
@click.option(
    "--days", type=click.IntRange(1, 366), default=2, show_default=True, help="Days simulated."
)
@click.option(
    "--member-count",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="People enrolled as members (from photos never used at a visit).",
)
# `--members` means a folder of members everywhere else; the count had the short name.
@hidden_alias("--members", "members_alias", type=click.IntRange(0), default=None)
@click.option(
    "--returning-same-day",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="Strangers who come twice on one day.",
)
@click.option(
    "--returning-later",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Strangers who come back on later days.",
)
@click.option(
    "--once", type=click.IntRange(0), default=4, show_default=True, help="Strangers who come once."
)
@split_option
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Seed of who comes when, with which photo.",
)
@json_option
def simulate(
    images: Path,
    out: Path,
    stores: tuple[str, ...],
    start: datetime,
    days: int,
    member_count: int,
    members_alias: int | None,
    returning_same_day: int,
    returning_later: int,
    once: int,
    split: str,
    seed: int,
    as_json: bool,
) -> None:
    """Write a simulated chain (manifest, truth, members) from a folder of photos."""
    from facestream.tools import simulate as sim

    try:
        plan = sim.Plan(
            stores=tuple(sim.StorePlan.parse(s) for s in stores),
            start=start.date(),
            days=days,
            members=pick(member_count, members_alias),
            returning_same_day=returning_same_day,
            returning_later=returning_later,
            once=once,
            split=None if split == "all" else split,  # type: ignore[arg-type]
            seed=seed,
        )
        scenario = sim.build(images, plan)
    except (sim.NotEnoughPeople, ValueError) as exc:
        fail(str(exc))
    members_dir, manifest, truth = scenario.write(out)
    summary = {
        "members_dir": str(members_dir),
        "manifest": str(manifest),
        "truth": str(truth),
        "sightings": len(scenario.sightings),
        "days": [d.as_dict() for d in scenario.all_days()],
    }
    if as_json:
        emit(summary)
        return
    click.echo(f"{len(scenario.sightings)} sightings -> {manifest}\ntruth -> {truth}")
    for d in scenario.all_days():
        click.echo(
            f"  {d.store} {d.date}: PV {d.pv}, UV {d.uv}, new {d.new}, returning {d.returning}, "
            f"members {len(d.members)}"
        )


@click.command("store")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="manifest.csv written by `facestream simulate`.",
)
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="truth.json written with it.",
)
@click.option(
    "--members",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Members to enroll first [default: members/ beside the truth file].",
)
@click.option(
    "--events/--no-events",
    "show_events",
    default=False,
    show_default=True,
    help="Print match events on stderr as they arrive.",
)
@progress_option
@json_option
def eval_store(
    manifest: Path,
    truth: Path,
    members: Path | None,
    show_events: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Replay a simulated chain and print its counting beside the truth: PV, UV, new,
    returning, dwell, member recall, false members, splits and merges."""
    from facestream.tools.replay import ReplayError
    from facestream.tools.store_eval import evaluate, fresh_settings

    # What the replay is doing goes to stderr (commentary), so stdout holds only the report.
    echo = commentary(progress)
    try:
        report = evaluate(
            manifest,
            truth,
            fresh_settings(local_settings()),
            echo,
            members=members,
            show_events=show_events,
        )
    except ReplayError as exc:
        fail(str(exc))
    if as_json:
        emit(report.as_dict())
        return
    for line in report.lines():
        click.echo(line)


@click.command("walkby")
@images_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for clip.mp4 and truth.json.",
)
@click.option(
    "--people",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="People who cross the view (each passes once, or twice with --returning).",
)
@click.option(
    "--returning",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="Of --people, how many cross the view again later (with another photo).",
)
@click.option(
    "--fps",
    type=click.FloatRange(1, 60),
    default=10.0,
    show_default=True,
    help="Frames per second of the clip.",
)
@split_option
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of who passes when, where, with which photo.",
)
@json_option
def walkby_command(
    images: Path,
    out: Path,
    people: int,
    returning: int,
    fps: float,
    split: str,
    seed: int,
    as_json: bool,
) -> None:
    """Render a walk-by clip (people crossing a camera's view) from photos, with its truth."""
    from facestream.tools import walkby

    try:
        plan = walkby.ClipPlan(
            people=people,
            returning=returning,
            fps=fps,
            split=None if split == "all" else split,  # type: ignore[arg-type]
            seed=seed,
        )
        clip = walkby.render(images, out, plan)
    except (walkby.NotEnoughPhotos, ValueError) as exc:
        fail(str(exc))
    summary = {
        "clip": str(out / walkby.CLIP),
        "truth": str(out / walkby.TRUTH),
        "passes_csv": str(out / walkby.PASSES),
        "frames": clip.frames,
        "fps": fps,
        "people": len(clip.people),
        "passes": len(clip.passes),
    }
    if as_json:
        emit(summary)
        return
    click.echo(
        f"{clip.frames} frames at {fps:g} fps, {len(clip.people)} people in {len(clip.passes)} "
        f"passes -> {summary['clip']}\ntruth -> {summary['truth']} and {summary['passes_csv']}"
    )
