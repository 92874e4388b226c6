"""``facestream stack up|down|status``: the local Kafka + Redis of :mod:`facestream.devstack`.

Every command exits 0 on success and 1 on a :class:`~facestream.devstack.config.StackError`;
``status`` exits 0 only when both Kafka and Redis answer, so scripts can test it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import click

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


@click.group("stack", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def stack_group(verbose: bool) -> None:
    """Local Kafka and Redis without Docker: up | down | status [--json]."""
    # Under `facestream` the root logger is already set up (--log-level), and then this
    # basicConfig does nothing; what -v changes there is that kafka-python is not silenced.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        # kafka-python logs every refused connection while the broker boots; that is expected.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


@stack_group.command("up")
@click.option("--no-topics", is_flag=True, help="do not create the topics")
@click.option("--timeout", type=float, default=120.0, help="readiness wait, seconds")
@click.option("--partitions", type=int, default=None, help="partitions of keyed topics")
def up_command(no_topics: bool, timeout: float, partitions: int | None) -> None:
    """install if needed, start, create topics"""
    try:
        st = stack.up(not no_topics, timeout, partitions=partitions)
    except StackError as exc:
        _stack_error(exc)
    click.echo(format_status(st))


@stack_group.command("down")
@click.option("--timeout", type=float, default=30.0, help="grace before SIGKILL")
def down_command(timeout: float) -> None:
    """stop what this stack started"""
    try:
        stopped = stack.down(timeout)
    except StackError as exc:
        _stack_error(exc)
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing"))


@stack_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status_command(as_json: bool) -> None:
    """show what runs"""
    try:
        st = stack.status()
    except StackError as exc:
        _stack_error(exc)
    click.echo(json.dumps(st, indent=2) if as_json else format_status(st))
    if not st["ready"]:
        sys.exit(1)
