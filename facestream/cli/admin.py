"""Administration commands: members published to the pipeline, and erasure everywhere.

* ``facestream enroll --members DIR`` prints its report with :func:`print_members_report`;
* ``facestream erase ID [--gallery FILE ...]`` erases a member (member id) or a visitor
  (``store/face_id``), from the API gallery files named too, waits for every live matcher to
  confirm and says what the dead-letter topics still hold until their retention;
* ``facestream audit ID`` says what every place still holds of one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from facestream.cli.common import (
    emit,
    fail,
    json_option,
    progress_option,
    say,
    show_progress,
)
from facestream.core.enrollment import report_lines
from facestream.runtime.logs import configure_logging
from facestream.runtime.settings import PipelineSettings

if TYPE_CHECKING:
    from facestream.admin.erasure import Erasure
    from facestream.admin.members import MembersReport

gallery_files_option = click.option(
    "--gallery",
    "galleries",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="An API gallery file (facestream serve --gallery FILE) to include (repeatable).",
)


snapshots_option = click.option(
    "--snapshots",
    "snapshot_dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="FACESTREAM_MATCHER_SNAPSHOT_DIR",
    help="The matchers' snapshot folder (facestream snapshot; default: "
    "FACESTREAM_MATCHER_SNAPSHOT_DIR): a visitor's partition snapshot is included.",
)


def print_members_report(report: MembersReport, as_json: bool) -> None:
    """What :func:`facestream.admin.members.publish_members` did, as JSON or as lines."""
    summary = report.as_dict()
    if as_json:
        emit(summary)
        return
    for line in report_lines(summary):
        click.echo(line)
    for member_id, why in report.invalid.items():
        click.echo(f"  not published {member_id}: {why}")
    click.echo(f"published {len(report.published)} members to {report.topic}")


@click.command("erase")
@click.argument("subject")
@gallery_files_option
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the matchers' confirmations.",
)
@click.option(
    "--cut-streams",
    "cut",
    is_flag=True,
    help="Also delete from frames.v1, encodings.v1 and matches.v1 (the partitions that may hold "
    "SUBJECT) every record written before the erasure that every consumer group has read, of "
    "every store in those partitions, and empty the dead-letter topics that hold a payload or "
    "name SUBJECT. Records written before then can no longer be replayed.",
)
@snapshots_option
@progress_option
@json_option
def erase_command(
    subject: str,
    galleries: tuple[Path, ...],
    timeout: float,
    cut: bool,
    snapshot_dir: Path | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Erase SUBJECT everywhere: a member id, or a visitor as STORE/FACE_ID; from each API
    gallery file named too. Then say what the dead-letter topics still hold of it, and until
    when. The stream topics keep the subject's frames, encodings and match events until their
    retention deletes them, unless --cut-streams.

    Exits with status 1 when not every live matcher confirmed in time, or the cut failed."""
    from kafka.errors import KafkaError

    from facestream.admin.erasure import erase
    from facestream.core.gallery import GalleryError
    from facestream.services.matcher.snapshots import SnapshotStore

    settings = PipelineSettings()
    snapshots = SnapshotStore(snapshot_dir) if snapshot_dir else None
    configure_logging(settings.log_level)
    if show_progress(progress):
        say(f"erasing {subject}; waiting up to {timeout:g}s for every live matcher to confirm")
    try:
        result = erase(subject, settings, timeout, galleries, cut=cut, snapshots=snapshots)
    except (GalleryError, OSError, KafkaError) as exc:
        fail(f"{subject} not erased: {exc}")
    if as_json:
        emit(result.as_dict())
    else:
        _print_erasure(result)
    if not result.confirmed or result.cut_error:
        sys.exit(1)


def _print_erasure(result: Erasure) -> None:
    where = result.tombstone
    click.echo(
        f"{result.kind} {result.subject}: tombstone at "
        f"{where.topic}[{where.partition}]@{where.offset}"
    )
    click.echo(
        f"matchers confirmed {len(result.acknowledged)}/{len(result.matchers)}"
        + (f", pending: {', '.join(result.pending)}" if result.pending else "")
    )
    if result.visits_purged is None:
        click.echo("visits in Redis: not purged (the sink's purge is not available)")
    for gallery in result.galleries:
        removed = gallery.samples_removed
        done = "not in it" if removed is None else f"removed ({removed} samples)"
        click.echo(f"gallery {gallery.path}: {done}")
    if result.dead_letters is None:
        click.echo("dead-letter topics: not read in time (facestream audit reads them)")
    for place in result.dead_letters or ():
        click.echo(f"{place.topic}: {place.detail}")
    for path in result.snapshots_removed:
        click.echo(f"snapshot {path}: held the visitor, deleted")
    for cut in result.streams or ():
        click.echo(f"cut {cut.topic}: {cut.detail}")
    if result.cut_error:
        click.echo(f"stream topics NOT cut ({result.cut_error}): run the erasure again to cut")


@click.command("audit")
@click.argument("subject")
@gallery_files_option
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to read each topic to its end.",
)
@snapshots_option
@json_option
def audit_command(
    subject: str,
    galleries: tuple[Path, ...],
    timeout: float,
    snapshot_dir: Path | None,
    as_json: bool,
) -> None:
    """Say what every place still holds of SUBJECT: a member id, or a visitor as
    STORE/FACE_ID (the compacted topics, Redis, API gallery files, dead-letter topics).

    Exits with status 1 while any place holds the subject as current state; older values that
    only await the topic's compaction are reported but do not fail it."""
    from facestream.admin.audit import audit
    from facestream.services.matcher.snapshots import SnapshotStore

    settings = PipelineSettings()
    configure_logging(settings.log_level)
    snapshots = SnapshotStore(snapshot_dir) if snapshot_dir else None
    result = audit(subject, settings, galleries, timeout, snapshots=snapshots)
    if as_json:
        emit(result.as_dict())
    else:
        for place in result.places:
            state = "LIVE" if place.live else "clear" if not place.readable else "erased"
            click.echo(f"{state:6} {place.place}: {place.detail}")
        acked = ", ".join(result.acknowledged_by) or "none"
        click.echo(f"erasure acknowledged by matchers: {acked}")
        verdict = "gone" if result.gone else "erased" if result.erased else "NOT erased"
        click.echo(f"{result.kind} {subject}: {verdict}")
    if not result.erased:
        sys.exit(1)


@click.command("snapshot")
@click.option(
    "--dir",
    "snapshot_dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="FACESTREAM_MATCHER_SNAPSHOT_DIR",
    required=True,
    help="Where to write them (default: FACESTREAM_MATCHER_SNAPSHOT_DIR, the matchers' own).",
)
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Only this partition of identities.v1 (repeatable; default: every partition).",
)
@click.option(
    "--timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to read each partition to its end.",
)
@json_option
def snapshot_command(
    snapshot_dir: Path, partitions: tuple[int, ...], timeout: float, as_json: bool
) -> None:
    """Write the snapshot of each identities.v1 partition, for matchers that take a partition
    over to start from (run it hourly: a snapshot older than
    FACESTREAM_MATCHER_SNAPSHOT_MAX_AGE_HOURS is not used)."""
    from facestream.runtime.bulk import peak_rss_bytes
    from facestream.services.matcher.changelog import ChangelogError
    from facestream.services.matcher.snapshot_job import write_snapshots
    from facestream.services.matcher.snapshots import SnapshotStore

    settings = PipelineSettings()
    configure_logging(settings.log_level)
    try:
        written = write_snapshots(
            settings, SnapshotStore(snapshot_dir), list(partitions) or None, timeout
        )
    except (ChangelogError, ValueError, OSError) as exc:
        fail(f"snapshots not written: {exc}")
    if as_json:
        emit({"snapshots": [w.as_dict() for w in written], "peak_rss_bytes": peak_rss_bytes()})
        return
    for w in written:
        source = "previous snapshot and its tail" if w.previous else "the whole partition"
        if w.path is None:
            click.echo(f"partition {w.partition}: deleted (erasures kept racing it), read again")
        else:
            click.echo(
                f"partition {w.partition}: {w.visitors} visitors, {w.samples} samples at offset "
                f"{w.offset} from {source} in {w.seconds:.1f} s -> {w.path}"
            )
    peak = peak_rss_bytes()
    if peak is not None:
        click.echo(f"peak memory {peak / 2**20:,.0f} MiB")
