"""``facestream matcher`` / ``python -m facestream.services.matcher``: run the matcher worker."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

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
    from facestream.services.matcher.changelog import ChangelogError
    from facestream.services.matcher.settings import MatcherSettings
    from facestream.services.matcher.worker import MatcherHandler

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
