"""Click commands of the matcher stage, registered on ``facestream`` by facestream/cli.py.

* ``matcher``: run the matcher worker (also ``python -m services.matcher``);
* members are published by ``facestream enroll --members DIR`` (printed by
  :func:`print_members_report`);
* ``erase ID``: erase a member (member id) or a visitor (``store/face_id``), with confirmation.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from facestream.enrollment import report_lines
from facestream.runtime.logs import configure_logging
from facestream.runtime.settings import PipelineSettings

log = logging.getLogger(__name__)


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, default=str))


@click.command("matcher")
@click.option(
    "--max-idle-seconds",
    type=float,
    default=None,
    help="Stop once the input has been idle this long (tests, replays) [default: run forever].",
)
def matcher_command(max_idle_seconds: float | None) -> None:
    """Run the matcher: encodings.v1 -> matches.v1 (+ identities.v1), until SIGTERM."""
    from facestream.runtime.metrics import serve_metrics
    from facestream.runtime.runner import Runner
    from services.matcher.changelog import ChangelogError
    from services.matcher.settings import MatcherSettings
    from services.matcher.worker import MatcherHandler

    pipeline = PipelineSettings()
    settings = MatcherSettings()
    configure_logging(pipeline.log_level)
    serve_metrics(pipeline.metrics_port)
    handler = MatcherHandler(settings, pipeline)
    try:
        handler.start()
        runner = Runner(
            handler,
            bootstrap=pipeline.kafka_bootstrap,
            topic=pipeline.topics.encodings,
            group=pipeline.group("matcher"),
            max_batch=settings.max_batch,
        )
        runner.install_signal_handlers()
        runner.run(max_idle_seconds=max_idle_seconds)
    except ChangelogError as exc:
        # State that cannot be read in time: stop (non-zero) and let a restart try again.
        raise click.ClickException(f"matcher stopped: {exc}") from exc
    finally:
        handler.close()


def print_members_report(report: dict[str, Any], as_json: bool) -> None:
    """What :func:`facestream.members.publish_members` did, as JSON or as lines."""
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
    from facestream.members import erase

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
