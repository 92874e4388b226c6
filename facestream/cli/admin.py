"""Administration commands: members published to the pipeline, and erasure everywhere.

* ``facestream enroll --members DIR`` prints its report with :func:`print_members_report`;
* ``facestream erase ID`` erases a member (member id) or a visitor (``store/face_id``) and
  waits for every live matcher to confirm.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from facestream.core.enrollment import report_lines
from facestream.runtime.logs import configure_logging
from facestream.runtime.settings import PipelineSettings


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, default=str))


def print_members_report(report: dict[str, Any], as_json: bool) -> None:
    """What :func:`facestream.admin.members.publish_members` did, as JSON or as lines."""
    if as_json:
        _emit(report)
        return
    for line in report_lines(report):
        click.echo(line)
    for member_id, why in report["invalid"].items():
        click.echo(f"  not published {member_id}: {why}")
    click.echo(f"published {len(report['published'])} members to {report['topic']}")


@click.command("erase")
@click.argument("subject")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def erase_command(subject: str, timeout: float, as_json: bool) -> None:
    """Erase SUBJECT everywhere: a member id, or a visitor as STORE/FACE_ID.

    Exits with status 1 when not every live matcher confirmed in time."""
    from facestream.admin.members import erase

    settings = PipelineSettings()
    configure_logging(settings.log_level)
    result = erase(subject, settings, timeout)
    if as_json:
        _emit(result)
    else:
        click.echo(
            f"{result['kind']} {subject}: tombstone at {result['tombstone']['topic']}"
            f"[{result['tombstone']['partition']}]@{result['tombstone']['offset']}"
        )
        click.echo(
            f"matchers confirmed {len(result['acknowledged'])}/{len(result['matchers'])}"
            + (f", pending: {', '.join(result['pending'])}" if result["pending"] else "")
        )
        if result["visits_purged"] is None:
            click.echo("visits in Redis: not purged (the sink's purge is not available)")
    if not result["confirmed"]:
        sys.exit(1)
