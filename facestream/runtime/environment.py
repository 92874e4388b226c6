"""An unknown ``FACESTREAM_*`` variable is an error at start-up, not silently ignored.

A typo (``FACESTREAM_MATCHER_THRESHHOLD``) would otherwise leave the default in force with no
sign of it. Which names are known is derived from the pydantic settings models, so a field
added to a model is known at once; nothing here lists fields by hand.

Each process checks what it can see: the shared :class:`PipelineSettings`, its own settings
model, and :data:`TOOL_VARIABLES`. The other components' namespaces (:data:`COMPONENT_PREFIXES`)
are theirs to check: one environment (a compose anchor, a ConfigMap) is often shared by every
component, so the matcher must accept ``FACESTREAM_SINK_TIMEZONE``, and the sink refuses a
misspelt ``FACESTREAM_SINK_TIMEZON`` when it starts. ``tests/runtime/test_environment.py``
checks that every settings model lives in one of these namespaces.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Final

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from facestream.runtime.settings import PipelineSettings

NAMESPACE: Final = "FACESTREAM_"

COMPONENT_PREFIXES: Final = (
    "FACESTREAM_API_",
    "FACESTREAM_DETECTOR_",
    "FACESTREAM_MATCHER_",
    "FACESTREAM_SINK_",
)
"""The ``env_prefix`` of each component's settings model: checked by that component."""

TOOL_VARIABLES: Final = frozenset(
    {
        # The matchers' snapshot folder (MatcherSettings.snapshot_dir), which facestream
        # snapshot, erase and audit also read as their default folder.
        "FACESTREAM_MATCHER_SNAPSHOT_DIR",
        # facestream.core.datasets: where the sample photos are (tests, demos, CI).
        "FACESTREAM_DATASETS",
        # facestream.devstack: the local Kafka and Redis.
        "FACESTREAM_STACK_DIR",
        "FACESTREAM_KAFKA_PORT",
        "FACESTREAM_KAFKA_CONTROLLER_PORT",
        "FACESTREAM_KAFKA_HEAP",
        "FACESTREAM_REDIS_PORT",
        # deploy/k8s/base/create-topics.sh (the devstack reads the partitions too).
        "FACESTREAM_TOPIC_PARTITIONS",
        "FACESTREAM_TOPIC_REPLICATION_FACTOR",
        "FACESTREAM_FRAMES_RETENTION_MS",
        "FACESTREAM_MATCHES_RETENTION_MS",
        # docker-compose.yml's own substitutions (exported in a shell that also runs workers).
        "FACESTREAM_CAMERA_SOURCE",
        "FACESTREAM_CAMERA_STORE",
        "FACESTREAM_CAMERA_ID",
        # facestream camera's own option (--key-by), read by click.
        "FACESTREAM_CAMERA_KEY_BY",
    }
)
"""Variables read by tools, tests and deploy scripts rather than by a settings model."""


class UnknownVariable(ValueError):
    """A ``FACESTREAM_*`` variable no settings model or tool reads."""


def settings_variables(model: type[BaseSettings]) -> frozenset[str]:
    """The environment variables ``model`` reads, upper-cased: ``env_prefix`` + field name, or
    the field's aliases where it has them (pydantic-settings then ignores the prefix)."""
    prefix = str(model.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.validation_alias or info.alias
        if alias is None:
            names.add(f"{prefix}{name}".upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
        elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
            names.add(alias.path[0].upper())
    return frozenset(names)


def known_variables(models: Iterable[type[BaseSettings]] = ()) -> frozenset[str]:
    """Every name this process knows exactly: the pipeline's, ``models``' and the tools'."""
    known = set(TOOL_VARIABLES) | settings_variables(PipelineSettings)
    for model in models:
        known |= settings_variables(model)
    return frozenset(n for n in known if n.startswith(NAMESPACE))


def check_environment(
    environ: Mapping[str, str], models: Iterable[type[BaseSettings]] = ()
) -> None:
    """Raise :class:`UnknownVariable` for the first ``FACESTREAM_*`` variable in ``environ``
    that neither :func:`known_variables` nor another component's namespace accounts for. Names
    are compared upper-cased, as pydantic-settings reads them."""
    models = tuple(models)
    known = known_variables(models)
    own = {str(m.model_config.get("env_prefix", "")).upper() for m in models}
    others = tuple(p for p in COMPONENT_PREFIXES if p not in own)
    for raw in sorted(environ):
        name = raw.upper()
        if not name.startswith(NAMESPACE) or name in known or name.startswith(others):
            continue
        raise UnknownVariable(f"unknown variable {raw}{_hint(name, known, others)}")


def _hint(name: str, known: Iterable[str], others: Iterable[str]) -> str:
    """The "; did you mean X?" for the nearest known name, else for the nearest other component's
    namespace (FACESTREAM_MATCHR_INDEX in the sink: FACESTREAM_MATCHER_*), else nothing.
    Compared without the shared ``FACESTREAM_``, which would make every name look close."""
    strip = len(NAMESPACE)
    by_rest = {k[strip:]: k for k in known}
    close = difflib.get_close_matches(name[strip:], sorted(by_rest), n=1, cutoff=0.75)
    if close:
        return f"; did you mean {by_rest[close[0]]}?"
    segment = name[strip:].split("_", 1)[0]
    by_segment = {p[strip:].rstrip("_"): p for p in others}
    close = difflib.get_close_matches(segment, sorted(by_segment), n=1, cutoff=0.75)
    return f"; did you mean {by_segment[close[0]]}*?" if close else ""
