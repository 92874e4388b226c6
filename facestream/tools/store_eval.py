"""``facestream eval store``: replay a simulated chain through the pipeline and report its counting.

The manifest and truth come from ``facestream simulate`` (or any tool that writes the same
``truth.json``). The replay runs on topics, consumer groups and Redis keys of its own, so two
evaluations of the same input start from the same empty state and must give the same figures.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facestream.runtime.settings import PipelineSettings
from facestream.tools import counting
from facestream.tools.replay import ReplayError, session


def fresh_settings(settings: PipelineSettings, label: str = "eval") -> PipelineSettings:
    """``settings`` with a topic, group and Redis prefix that no earlier run used."""
    tag = f"{label}-{os.getpid()}-{time.time_ns() // 1_000_000}"
    return settings.model_copy(
        update={"topic_prefix": f"{tag}.", "group_prefix": tag, "redis_prefix": tag}
    )


def load_truth(path: Path) -> dict[str, Any]:
    """The truth document written by the simulator (checked for the keys the report needs)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReplayError(f"cannot read the truth file {path}: {exc}") from exc
    missing = [k for k in ("stores", "days", "sightings") if k not in document]
    if missing:
        raise ReplayError(f"{path} is not a simulator truth file (no {', '.join(missing)})")
    return dict(document)


def evaluate(
    manifest: Path,
    truth_path: Path,
    settings: PipelineSettings,
    echo: Callable[[str], None],
    *,
    members: Path | None = None,
    show_events: bool = False,
    timeout: float = 1800.0,
    worker_env: dict[str, str] | None = None,
    keep_stack: bool = False,
) -> counting.CountingReport:
    """Replay ``manifest`` (members first) and compare what the pipeline said with the truth.

    ``members`` defaults to the ``members/`` folder beside the truth file, where the simulator
    writes it. ``keep_stack`` leaves Kafka and Redis running when this started them."""
    from facestream.services.sink.stats import store_stats

    document = load_truth(truth_path)
    zones = {s["store"]: s["timezone"] for s in document["stores"]}
    if members is None and (truth_path.parent / "members").is_dir():
        members = truth_path.parent / "members"
    with session(
        settings, echo, zones, show_events=show_events, worker_env=worker_env, keep_stack=keep_stack
    ) as s:
        if members is not None and document.get("members"):
            s.publish_members(members)
        s.publish_manifest(manifest, next(iter(zones)))
        s.wait(timeout)
        events = s.events()
        measured = {
            (d["store"], d["date"]): store_stats(d["store"], d["date"], settings).as_dict()
            for d in document["days"]
        }
    return counting.report(document, events, measured)
