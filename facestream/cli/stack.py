"""``facestream stack up|down|status``: the local Kafka + Redis of :mod:`facestream.devstack`.

Every command exits 0 on success and 1 on a :class:`~facestream.devstack.config.StackError`;
``status`` exits 0 only when both Kafka and Redis answer, so scripts can test it. Progress (the
first ``up`` installs Kafka, which takes minutes) goes to stderr, the status to stdout.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click

from facestream.cli.common import emit, json_option, progress_option, say, show_progress
from facestream.devstack import stack
from facestream.devstack.stack import StackError

log = logging.getLogger(__name__)


def _describe_service(name: str, info: Mapping[str, Any], endpoint: str) -> str:
    state = "ready" if info["ready"] else ("listening" if info["listening"] else "down")
    owner = f"pid {info['pid']}, started by this stack" if info["managed"] else "not ours"
    if not info["listening"] and not info["managed"]:
        owner = "not running"
    return f"{name:<12} {state:<9} {endpoint:<28} {owner}"


def format_status(st: Mapping[str, Any]) -> str:
    """The human-readable form of :func:`facestream.devstack.stack.status`."""
    kafka, redis_info = st["kafka"], st["redis"]
    lines = [
        f"stack dir    {st['stack_dir']}",
        _describe_service(f"kafka {kafka['version']}", kafka, kafka["bootstrap_servers"]),
        _describe_service("redis", redis_info, redis_info["url"]),
    ]
    if kafka["ready"]:
        topics = " ".join(f"{name}({n})" for name, n in st["topics"].items()) or "none"
        lines.append(f"topics       {topics}")
        if st["missing_topics"]:
            lines.append(f"missing      {' '.join(st['missing_topics'])}")
    if not kafka["installed"] and not kafka["ready"]:
        lines.append("note         Kafka jars not installed yet: `up` fetches them")
    lines.append(f"logs         {kafka['log']}  {redis_info['log']}")
    return "\n".join(lines)


def _stack_error(exc: StackError) -> NoReturn:
    # Logged, not raised as a click error: the message is often a log tail of several lines.
    log.error("%s", exc)
    sys.exit(1)


def _narrate(progress: bool | None) -> None:
    """Let the stack's own log lines (installing, starting, waiting, topics) through to stderr:
    they are the progress of ``up`` and ``down``."""
    if show_progress(progress):
        logging.getLogger("facestream.devstack").setLevel(logging.INFO)


@click.group("stack")
@click.option("-v", "--verbose", is_flag=True, hidden=True, help="Debug logging.")
def stack_group(verbose: bool) -> None:
    """Local Kafka and Redis without Docker: up | down | status."""
    if verbose:
        # The old spelling of `facestream --log-level DEBUG stack ...`; kafka-python included.
        logging.getLogger().setLevel(logging.DEBUG)
        logging.getLogger("kafka").setLevel(logging.DEBUG)


def _show(st: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        emit(dict(st))
    else:
        click.echo(format_status(st))


@stack_group.command("up")
@click.option("--no-topics", is_flag=True, help="Do not create the topics.")
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="Readiness wait, seconds."
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of the store-keyed topics [default: $FACESTREAM_TOPIC_PARTITIONS or 4].",
)
@progress_option
@json_option
def up_command(
    no_topics: bool, timeout: float, partitions: int | None, progress: bool | None, as_json: bool
) -> None:
    """Install if needed, start, create the topics; print the status."""
    _narrate(progress)
    if show_progress(progress):
        say("starting Kafka and Redis (the first run installs Kafka: minutes)...")
    try:
        st = stack.up(not no_topics, timeout, partitions=partitions)
    except StackError as exc:
        _stack_error(exc)
    _show(st, as_json)


@stack_group.command("down")
@click.option(
    "--timeout", type=float, default=30.0, show_default=True, help="Grace before SIGKILL, seconds."
)
@progress_option
@json_option
def down_command(timeout: float, progress: bool | None, as_json: bool) -> None:
    """Stop what this stack started."""
    _narrate(progress)
    try:
        stopped = stack.down(timeout)
    except StackError as exc:
        _stack_error(exc)
    if as_json:
        emit({"stopped": list(stopped)})
    else:
        click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing"))


@stack_group.command("status")
@json_option
def status_command(as_json: bool) -> None:
    """Show what runs; exit 1 unless Kafka and Redis are both ready."""
    try:
        st = stack.status()
    except StackError as exc:
        _stack_error(exc)
    _show(st, as_json)
    if not st["ready"]:
        sys.exit(1)
