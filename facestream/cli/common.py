"""What the command groups share: JSON output, errors, progress, the common flags, local
settings.

Flags mean one thing everywhere: ``--json`` prints one JSON object on stdout and nothing else
there; ``--progress/--no-progress`` shows progress on stderr (by default only when stderr is a
terminal); ``--members DIR`` is a folder of members to enroll (Name/*.jpg; ``simulate
--members N`` is the one exception, a count of people to simulate); ``--events`` prints
match events as they arrive, on stderr; ``--out DIR`` is where a command writes its files;
``--timeout`` is in seconds. Older spellings stay as hidden aliases (:func:`hidden_alias`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from facestream.runtime.settings import PipelineSettings

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout (nothing else)."
)
progress_option = click.option(
    "--progress/--no-progress",
    "progress",
    default=None,
    help="Show progress on stderr [default: when stderr is a terminal].",
)
events_option = click.option(
    "--events/--no-events",
    "show_events",
    default=True,
    show_default=True,
    help="Print match events on stderr as they arrive.",
)


def show_progress(flag: bool | None) -> bool:
    """Whether to show progress: as asked, else only on a terminal (never in a pipe or a log)."""
    return sys.stderr.isatty() if flag is None else flag


def say(line: str) -> None:
    """A line of commentary (what a long command is doing): on stderr, so that stdout holds
    only the result (``--json`` output stays parseable)."""
    click.echo(line, err=True)


def commentary(progress: bool | None) -> Callable[[str], None]:
    """Where a run's commentary goes: stderr. The periodic ``progress:`` lines of the stages
    only when progress is shown; the rest (what started, what was published, events) always."""
    shown = show_progress(progress)

    def echo(line: str) -> None:
        if shown or not line.lstrip().startswith("progress:"):
            say(line)

    return echo


def hidden_alias(old: str, dest: str, **attrs: Any) -> Callable[[F], F]:
    """An old spelling of an option, kept working for scripts but left out of ``--help``. The
    command merges ``dest`` into the new option's value (see :func:`pick`)."""
    return click.option(old, dest, hidden=True, **attrs)


def pick(new: Any, old: Any) -> Any:
    """The value of an option given under its new or its old (hidden) name."""
    return old if old is not None else new


def emit(obj: dict[str, Any]) -> None:
    """Print ``obj`` as one line of JSON (anything not JSON-native as its ``str``)."""
    click.echo(json.dumps(obj, default=str))


def fail(message: str) -> NoReturn:
    """Stop the command with ``message`` on stderr and exit status 1."""
    raise click.ClickException(message)


def local_settings(**overrides: str) -> PipelineSettings:
    """Pipeline settings for commands that run the local stack: unless Kafka and Redis are named
    explicitly (FACESTREAM_KAFKA_BOOTSTRAP, FACESTREAM_REDIS_URL), the ones `facestream stack`
    runs, on the ports it is configured with."""
    # Imported here: `facestream verify` and the other core commands need no stack.
    from facestream.devstack import stack

    cfg = stack.StackConfig.from_env()
    local = {
        "kafka_bootstrap": stack.kafka_bootstrap(cfg),
        "redis_url": stack.redis_url(cfg),
    }
    explicit = {
        "kafka_bootstrap": "FACESTREAM_KAFKA_BOOTSTRAP",
        "redis_url": "FACESTREAM_REDIS_URL",
    }
    defaults = {k: v for k, v in local.items() if explicit[k] not in os.environ}
    return PipelineSettings(**{**defaults, **overrides})  # type: ignore[arg-type]
