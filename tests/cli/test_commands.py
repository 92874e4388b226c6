"""The command registry: every command resolves lazily, the core ones without Kafka or Redis
clients, and ``facestream stack`` on the running stack."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from facestream.cli import LAZY_COMMANDS, main
from facestream.devstack import stack


def test_every_command_resolves_under_its_name() -> None:
    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(LAZY_COMMANDS)
    for name in LAZY_COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name


def test_core_commands_load_no_kafka_or_redis_client() -> None:
    # A fresh interpreter: this test session has imported the clients long ago.
    code = (
        "import sys, click\n"
        "from facestream.cli import main\n"
        "ctx = click.Context(main)\n"
        "for name in ('enroll', 'identify', 'verify', 'eval', 'serve', 'demo-core'):\n"
        "    main.get_command(ctx, name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kafka', 'redis')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


@pytest.fixture(scope="module")
def running() -> None:
    if not stack.wait_ready(5.0):
        pytest.skip("Kafka/Redis not running: start them with `facestream stack up`")


@pytest.mark.usefixtures("running")
def test_stack_status_prints_the_table_and_json() -> None:
    runner = CliRunner()
    table = runner.invoke(main, ["stack", "status"])
    assert table.exit_code == 0, table.output
    assert table.output.startswith("stack dir    ")
    assert "topics       frames.v1(" in table.output
    shown = runner.invoke(main, ["stack", "status", "--json"])
    assert shown.exit_code == 0, shown.output
    st = json.loads(shown.output)
    assert st["ready"] and st["missing_topics"] == []
    assert set(st) == {"ready", "stack_dir", "kafka", "redis", "topics", "missing_topics"}


def test_stack_errors_exit_1() -> None:
    out = CliRunner().invoke(main, ["stack", "status"], env={"FACESTREAM_KAFKA_PORT": "abc"})
    assert out.exit_code == 1


def test_stack_rejects_unknown_subcommands() -> None:
    out = CliRunner().invoke(main, ["stack", "sideways"])
    assert out.exit_code == 2
