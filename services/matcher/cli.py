"""``facestream matcher`` / ``python -m facestream.services.matcher``: run the matcher worker.

What is the matcher's own: its handler over ``encodings.v1``, started (members read, identities
followed) before the first poll and closed after the last, and :class:`ChangelogError` as a
reason to stop and be restarted. The rest is :func:`~facestream.runtime.entry.run_worker`'s.
"""

from __future__ import annotations

from contextlib import ExitStack

import click

from facestream.runtime.entry import Subscription, Worker, run_worker
from facestream.runtime.settings import PipelineSettings
from facestream.services.matcher.changelog import ChangelogError
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler


def subscribe(
    pipeline: PipelineSettings, settings: MatcherSettings, resources: ExitStack
) -> Subscription:
    """The matcher's handler over ``encodings.v1``, its state read (ChangelogError if not)."""
    handler = MatcherHandler(settings, pipeline)
    resources.callback(handler.close)
    handler.start()
    topics = pipeline.topics
    return Subscription(
        handler,
        topic=topics.encodings,
        max_batch=settings.max_batch,
        # Static membership (KIP-345) when configured, as the sink's.
        consumer_options=(
            {"group_instance_id": settings.group_instance_id}
            if settings.group_instance_id
            else None
        ),
        note=f"-> {topics.matches} (+ {topics.identities}), index {settings.index}",
    )


# State that cannot be read in time: stop (non-zero) and let a restart try again.
MATCHER = Worker("matcher", MatcherSettings, subscribe, stop_on=(ChangelogError,))


@click.command("matcher")
@click.option(
    "--max-idle-seconds",
    type=float,
    default=None,
    help="Stop once the input has been idle this long (tests, replays) [default: run forever].",
)
def matcher_command(max_idle_seconds: float | None) -> None:
    """Run the matcher: encodings.v1 -> matches.v1 (+ identities.v1), until SIGTERM."""
    run_worker(MATCHER, max_idle_seconds=max_idle_seconds)
