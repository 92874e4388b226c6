"""Unknown FACESTREAM_* variables stop a process at start-up, naming the closest known one."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from facestream.runtime.environment import (
    COMPONENT_PREFIXES,
    NAMESPACE,
    TOOL_VARIABLES,
    UnknownVariable,
    check_environment,
    known_variables,
    settings_variables,
)
from facestream.runtime.settings import PipelineSettings
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.sink.settings import SinkSettings

PACKAGE = Path(__file__).resolve().parents[2] / "facestream"


def every_settings_model() -> list[type[BaseSettings]]:
    """Every class in the package (services and schemas through their links) written as a
    subclass of ``BaseSettings`` or of another settings model (``...Settings``, as
    ``PipelineSettings`` is of ``KafkaSettings``): found in the source, so a new model cannot be
    missed."""
    models = []
    paths = [
        Path(folder, name)
        for folder, _, names in os.walk(PACKAGE, followlinks=True)  # services/, schemas/
        for name in names
        if name.endswith(".py")
    ]
    for path in sorted(paths):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                (isinstance(b, ast.Name) and b.id.endswith("Settings")) for b in node.bases
            ):
                parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
                module = importlib.import_module(".".join(parts))
                models.append(getattr(module, node.name))
    return models


def test_every_settings_model_lives_in_a_namespace() -> None:
    models = every_settings_model()
    assert PipelineSettings in models and MatcherSettings in models and len(models) >= 5
    for model in models:
        prefix = str(model.model_config.get("env_prefix", "")).upper()
        assert prefix == NAMESPACE or prefix in COMPONENT_PREFIXES, model
        for name in settings_variables(model):
            if name.startswith(NAMESPACE):
                assert name.startswith(prefix), (model, name)
        # Each model accepts its own variables, and the others' as theirs.
        environ = {name: "x" for m in models for name in settings_variables(m)}
        check_environment({k: v for k, v in environ.items() if k.startswith(NAMESPACE)}, [model])


def test_this_environment_starts_every_component() -> None:
    # Workers spawned by tests inherit this environment (CI sets FACESTREAM_DATASETS): every
    # component must accept it, whatever the CI sets.
    for model in every_settings_model():
        check_environment(os.environ, [model])
    assert "FACESTREAM_DATASETS" in TOOL_VARIABLES


@pytest.mark.parametrize(
    ("name", "models", "hint"),
    [
        ("FACESTREAM_MATCHER_THRESHHOLD", [MatcherSettings], "FACESTREAM_MATCHER_THRESHOLD"),
        ("FACESTREAM_KAFKA_BOOTSTRAPS", [], "FACESTREAM_KAFKA_BOOTSTRAP"),
        ("facestream_topic_prefx", [SinkSettings], "FACESTREAM_TOPIC_PREFIX"),
        ("FACESTREAM_MATCHR_INDEX", [SinkSettings], "FACESTREAM_MATCHER_*"),
        ("FACESTREAM_SINK_TIMEZON", [SinkSettings], "FACESTREAM_SINK_TIMEZONE"),
    ],
)
def test_an_unknown_variable_names_the_closest_known_one(
    name: str, models: list[type[BaseSettings]], hint: str
) -> None:
    with pytest.raises(UnknownVariable) as raised:
        check_environment({name: "1", "FACESTREAM_LOG_LEVEL": "INFO"}, models)
    assert str(raised.value) == f"unknown variable {name}; did you mean {hint}?"


def test_what_is_accepted() -> None:
    environ = {
        "FACESTREAM_SINK_TIMEZONE": "UTC",  # the sink's, in the matcher's shared environment
        "FACESTREAM_SINK_TIMEZON": "UTC",  # the sink's to refuse, when it starts
        "FACESTREAM_DATASETS": "/data",  # a tool's
        "facestream_log_level": "debug",  # read case-insensitively
        "OTHER_VARIABLE": "anything",  # not ours
    }
    check_environment(environ, [MatcherSettings])
    with pytest.raises(UnknownVariable, match="FACESTREAM_SINK_TIMEZON;"):
        check_environment(environ, [SinkSettings])
    with pytest.raises(UnknownVariable, match=r"unknown variable FACESTREAM_NOPE$"):
        check_environment({"FACESTREAM_NOPE": "1"})  # nothing close: no guess
    assert "FACESTREAM_LIVENESS_SECONDS" in known_variables()


def test_a_worker_with_a_misspelt_variable_does_not_start() -> None:
    env = {**os.environ, "FACESTREAM_METRICS_PORT": "0", "FACESTREAM_SINK_VISIT_GAP": "60"}
    result = subprocess.run(
        [sys.executable, "-m", "facestream.services.sink"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "invalid settings: unknown variable FACESTREAM_SINK_VISIT_GAP; "
        "did you mean FACESTREAM_SINK_VISIT_GAP_SECONDS?"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_line_variable_is_known() -> None:
    # An option read from the environment (click's envvar) that the check does not know makes
    # its command exit 2 with "unknown variable" as soon as the variable is set.
    import click

    from facestream.cli import main

    def options(command: click.Command, context: click.Context) -> list[str]:
        found = [
            name
            for param in command.params
            for name in (
                [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            )
        ]
        if isinstance(command, click.Group):
            for sub in command.list_commands(context):
                child = command.get_command(context, sub)
                if child is not None:
                    found += options(child, click.Context(child, parent=context, info_name=sub))
        return found

    read = options(main, click.Context(main, info_name="facestream"))
    assert "FACESTREAM_CAMERA_KEY_BY" in read
    assert [name for name in read if name not in known_variables()] == []
