"""The topic list on the real broker: what the local stack creates is what topic_specs says.

Retention, segment rolling and compaction are what bound how long face images, encodings and
erased records stay readable (docs/privacy.md), so they are read back from the broker itself.
"""

from __future__ import annotations

from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType

from facestream.devstack import stack
from facestream.devstack.kafka_broker import admin_client
from facestream.runtime.settings import PipelineSettings
from facestream.runtime.topics import topic_specs
from tests.kafka_fixtures import PARTITIONS


def broker_configs(names: list[str]) -> dict[str, dict[str, str]]:
    """The topic-level configs each topic was given (not the broker's defaults)."""
    admin = admin_client(stack.StackConfig.from_env(), 20.0)
    try:
        found: dict[str, Any] = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        admin.close()
    return {
        name: {
            key: entry["value"]
            for key, entry in entries.items()
            if entry["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        }
        for name, entries in found["topic"].items()
    }


def test_the_broker_holds_the_configs_of_topic_specs(pipeline: PipelineSettings) -> None:
    specs = topic_specs(PARTITIONS, pipeline.topic_prefix)
    configs = broker_configs([spec.name for spec in specs])
    assert configs.keys() == {spec.name for spec in specs}
    for spec in specs:
        assert configs[spec.name] == dict(spec.config), spec.name
        # One local broker: requiring more in-sync replicas than it has would refuse writes.
        assert "min.insync.replicas" not in configs[spec.name], spec.name
    t = pipeline.topics
    hour = 3_600_000
    for name in (t.frames, t.dlq(t.frames), t.encodings, t.dlq(t.encodings)):
        assert int(configs[name]["retention.ms"]) <= 48 * hour, name  # hours, not days
        assert int(configs[name]["segment.ms"]) <= hour, name
    for name in (t.members, t.identities):
        assert configs[name]["cleanup.policy"] == "compact", name
        assert int(configs[name]["segment.ms"]) + int(configs[name]["max.compaction.lag.ms"]) <= (
            7 * hour
        ), name
