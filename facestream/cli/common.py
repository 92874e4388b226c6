"""What the command groups share: JSON output, errors, the ``--json`` flag, local settings."""

from __future__ import annotations

import json
import os
from typing import Any, NoReturn

import click

from facestream.runtime.settings import PipelineSettings

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


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
