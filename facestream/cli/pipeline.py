"""The whole pipeline on the local stack: ``facestream replay`` and ``facestream demo``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from facestream.cli.common import emit, fail, json_option, local_settings
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
    required=True,
    help="CSV path,captured_at,camera (paths relative to the manifest).",
)
@click.option("--timezone", default="UTC", show_default=True, help="The store's time zone.")
@click.option("--quiet", is_flag=True, help="Do not print match events as they arrive.")
@json_option
def replay(
    store: str, members: Path | None, manifest: Path, timezone: str, quiet: bool, as_json: bool
) -> None:
    """Run a whole replay: stack, workers, members, frames; print the day's stats."""
    from facestream.tools import replay as replay_module

    stats = replay_module.run(
        store=store,
        members=members,
        manifest=manifest,
        settings=local_settings(),
        timezone=timezone,
        echo=lambda line: click.echo(line, err=as_json),
        show_events=not quiet,
    )
    if as_json:
        emit(stats.as_dict())
        return
    click.echo(_stats_table(stats))


@click.command()
@click.option(
    "--work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the simulated frames [default: a temporary folder].",
)
def demo(work: Path | None) -> None:
    """The main job: a simulated store day replayed through the whole pipeline, with truth.

    Members, returning strangers and new strangers pass two cameras of one store over two
    days ($FACESTREAM_DATASETS photos); the day's stats are printed beside the known truth."""
    import tempfile

    from facestream.tools import replay as replay_module
    from facestream.tools import simulate

    root = datasets_root()
    if not (root / "lfw-fold1" / "images").is_dir():
        fail(f"no sample photos at {root}; set {DATASETS_ENV} to the datasets folder")
    with tempfile.TemporaryDirectory(prefix="facestream-demo-") as tmp:
        folder = work or Path(tmp)
        scenario = simulate.build(root, folder)
        truth = scenario.truth()
        click.echo(
            f"simulated store {scenario.store} ({scenario.timezone}): "
            f"{len(scenario.appearances)} frames over two days, two cameras"
        )
        # A fresh topic prefix per run: the demo's numbers are its own, whatever ran before.
        tag = f"demo-{os.getpid()}-{int(time.time())}"
        settings = local_settings(topic_prefix=f"{tag}.", group_prefix=tag, redis_prefix=tag)
        stats = replay_module.run(
            store=scenario.store,
            members=scenario.members_dir,
            manifest=scenario.manifest,
            settings=settings,
            timezone=scenario.timezone,
            echo=click.echo,
        )
    click.echo(_stats_table(stats, truth))
    values = stats.as_dict()
    if any(values.get(k) != truth.get(k) for k in _COMPARED):
        raise SystemExit(1)
