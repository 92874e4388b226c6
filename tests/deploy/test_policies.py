"""What the manifests promise beyond each container: a disruption budget per workload, network
policies that let each component reach exactly what it uses, the KEDA version the triggers
need, and only FACESTREAM_* variables that the receiving component knows (a worker refuses an
unknown one at start-up, so a typo here would be a crash loop)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from facestream.runtime.environment import check_environment
from facestream.services.api.settings import ApiSettings
from facestream.services.detector.worker import DetectorSettings
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.sink.settings import SinkSettings
from tests.deploy.test_deploy import (
    DOCKERFILE,
    ROOT,
    _container_env,
    _containers,
    _dockerfile_instructions,
    _facestream_services,
)

# rendered: the fixture of test_deploy (every kustomize target), imported to be found by pytest.
from tests.deploy.test_deploy import rendered as rendered

SETTINGS: dict[str, type[BaseSettings]] = {
    "detector": DetectorSettings,
    "matcher": MatcherSettings,
    "sink": SinkSettings,
    "serve": ApiSettings,
    # facestream snapshot reads FACESTREAM_MATCHER_SNAPSHOT_DIR, the matchers' own folder.
    "snapshot": MatcherSettings,
}
"""The settings model of each role (the container's first argument)."""

# Ports each workload may reach (egress) and take connections on (ingress), by name or number.
EGRESS = {
    "detector": {53, 9092},
    "matcher": {53, 9092, 6379},
    "sink": {53, 9092, 6379},
    "api": {53, 6379},
    "topics": {53, 9092},
    "snapshot": {53, 9092},
}
INGRESS = {"detector": {"metrics"}, "matcher": {"metrics"}, "sink": {"metrics"}, "api": {"http"}}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        operator = expr["operator"]
        if operator == "In" and value not in expr["values"]:
            return False
        if operator == "NotIn" and value in expr["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
    return True


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job", "CronJob")]


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    labels: dict[str, str] = spec["template"]["metadata"]["labels"]
    return labels


def test_every_deployment_has_one_disruption_budget(rendered: list[dict[str, Any]]) -> None:
    budgets = [d for d in rendered if d["kind"] == "PodDisruptionBudget"]
    for deployment in (d for d in rendered if d["kind"] == "Deployment"):
        name = deployment["metadata"]["name"]
        mine = [b for b in budgets if _selects(b["spec"]["selector"], _pod_labels(deployment))]
        assert len(mine) == 1, f"{name}: {len(mine)} budgets"
        spec = mine[0]["spec"]
        # One at a time: each worker leaving is a rebalance (and, for a matcher, a rebuild).
        assert spec == {**spec, "maxUnavailable": 1}, name
        assert "minAvailable" not in spec, f"{name}: minAvailable 1 of 1 would block drains"
        # Readiness now means something: a stuck pod must never hold a drain up.
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name


def test_network_policies_allow_exactly_what_each_component_uses(
    rendered: list[dict[str, Any]],
) -> None:
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    deny = [
        p
        for p in policies
        if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "a default deny for both directions"
    for workload in _workloads(rendered):
        name, labels = workload["metadata"]["name"], _pod_labels(workload)
        assert any(_selects(p["spec"]["podSelector"], labels) for p in deny), name
        egress: set[int | str] = set()
        ingress: set[int | str] = set()
        for policy in policies:
            if not _selects(policy["spec"]["podSelector"], labels):
                continue
            for rule in policy["spec"].get("egress", []):
                egress |= {port["port"] for port in rule["ports"]}
            for rule in policy["spec"].get("ingress", []):
                ingress |= {port["port"] for port in rule["ports"]}
        assert egress == EGRESS[name], name
        assert ingress == INGRESS.get(name, set()), name
    for policy in policies:  # a rule without ports would open everything to its peers
        for rule in policy["spec"].get("egress", []) + policy["spec"].get("ingress", []):
            assert rule.get("ports"), policy["metadata"]["name"]


def test_every_facestream_variable_is_known_to_its_component(
    rendered: list[dict[str, Any]],
) -> None:
    for deployment in (d for d in rendered if d["kind"] in ("Deployment", "CronJob")):
        for container in _containers(deployment):
            model = SETTINGS[container["args"][0]]
            env = _container_env(rendered, deployment, container["name"])
            env.update({v["name"]: "from a secret" for v in container.get("env", [])})
            check_environment(env, [model])


def test_compose_and_the_image_set_only_known_variables() -> None:
    image_env = {
        word.split("=", 1)[0]: "x"
        for instruction, arguments in _dockerfile_instructions()
        if instruction == "ENV"
        for word in arguments.split()
        if "=" in word
    }
    assert "FACESTREAM_METRICS_PORT" in image_env, DOCKERFILE
    for service in _facestream_services().values():
        role = service.get("command", [""])[0]
        models = [SETTINGS[role]] if role in SETTINGS else []
        check_environment({**image_env, **service["environment"]}, models)


@pytest.mark.parametrize(
    "path",
    [
        "deploy/k8s/base/detector.yaml",
        "deploy/k8s/base/matcher.yaml",
        "docs/deploy.md",
    ],
)
def test_the_keda_version_is_the_one_the_triggers_need(path: str) -> None:
    # ensureEvenDistributionOfPartitions arrived in KEDA 2.18; the triggers use it.
    text = (ROOT / path).read_text()
    assert re.search(r"KEDA[^\n]{0,40}2\.18", text), path
    for other in Path(ROOT, "deploy").rglob("*.yaml"):
        assert not re.search(r"KEDA[^\n]{0,40}\b2\.1[0-7]\b", other.read_text()), other
    assert not re.search(r"KEDA[^\n]{0,60}\b2\.1[0-7]\b", text), path


def test_the_brokers_are_written_once(rendered: list[dict[str, Any]]) -> None:
    # Only facestream-config names them: containers and KEDA read them from there.
    (config,) = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("facestream-config")
    ]
    brokers = config["data"]["FACESTREAM_KAFKA_BOOTSTRAP"]
    script = "facestream-create-topics"  # its usage text says "e.g. kafka:9092"
    elsewhere = [
        d["metadata"]["name"]
        for d in rendered
        if d is not config and d["metadata"]["name"] != script and brokers in repr(d)
    ]
    assert elsewhere == []
    for path in Path(ROOT, "deploy", "k8s").rglob("*.yaml"):
        assert "bootstrapServers:" not in path.read_text(), path
