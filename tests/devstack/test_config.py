"""The stack's configuration from ``FACESTREAM_*`` variables, and its refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from facestream.devstack.config import StackConfig, StackError


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = StackConfig.from_env({"FACESTREAM_STACK_DIR": str(tmp_path)})
    assert (cfg.root, cfg.kafka_port, cfg.redis_port, cfg.partitions) == (tmp_path, 9092, 6379, 4)
    assert cfg.bootstrap_servers == "127.0.0.1:9092"
    cfg = StackConfig.from_env(
        {
            "FACESTREAM_STACK_DIR": str(tmp_path),
            "FACESTREAM_KAFKA_PORT": "19092",
            "FACESTREAM_REDIS_PORT": "16379",
            "FACESTREAM_TOPIC_PARTITIONS": "12",
            "FACESTREAM_KAFKA_HEAP": "1g",
        }
    )
    assert cfg.redis_url == "redis://127.0.0.1:16379/0"
    assert (cfg.kafka_port, cfg.partitions, cfg.kafka_heap) == (19092, 12, "1g")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FACESTREAM_KAFKA_PORT": "ninety"}, "must be an integer"),
        ({"FACESTREAM_REDIS_PORT": "70000"}, "between 1 and 65535"),
        ({"FACESTREAM_KAFKA_HEAP": "lots"}, "must look like 512m"),
        ({"FACESTREAM_KAFKA_CONTROLLER_PORT": "9092"}, "must differ"),
    ],
)
def test_bad_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(StackError, match=message):
        StackConfig.from_env(env)
