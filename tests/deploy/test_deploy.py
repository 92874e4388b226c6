"""The deployment files, checked without Docker or a cluster.

* ``docker-compose.yml`` against the Compose Specification's JSON schema (the copy that the
  check-jsonschema package ships, so nothing is fetched), plus the start order it relies on.
* ``Dockerfile``, ``.dockerignore`` and ``requirements/``: one non-root image in two variants,
  from locked dependencies (hashes), on a base image pinned by digest; opencv and matplotlib
  only in the ``tools`` variant.
* ``deploy/k8s``: every manifest as written and as kustomize renders each overlay (with
  ``kubectl kustomize`` or ``kustomize``): hardened containers, probes on /healthz and /readyz,
  resources, no literal secrets, a disruption budget per workload, network policies, KEDA
  triggers that read the brokers, topic and group from the workers' environment, ceilings
  within the partition count, and every ``FACESTREAM_*`` variable one the component knows.
* ``create-topics.sh`` against a stand-in for ``kafka-topics.sh`` that prints what Kafka 4.1
  prints, compared with the topics of the local stack.
* ``docs/events.md``: every example message decodes with the real contracts.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from facestream import schemas
from facestream.runtime.topics import topic_specs
from facestream.schemas.wire import vector_from_wire

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
TOPICS_SCRIPT = BASE / "create-topics.sh"
EVENTS_DOC = ROOT / "docs" / "events.md"
TARGETS = ("base", "overlays/dev", "overlays/prod")

WORKERS = ("detector", "matcher", "sink")
LIVE, READY = "/healthz", "/readyz"
# Which consumer group (after the group prefix) and topic (after the topic prefix) each
# autoscaled worker reads: the runtime's naming, PipelineSettings.group() and Topics.
SCALED = {
    "detector": ("detector", "frames.v1"),
    "matcher": ("matcher", "encodings.v1"),
}
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.IGNORECASE)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]+@")
SECRETS_MOUNT = "/etc/facestream/"
"""Where containers mount their Secrets (a *_FILE variable may point there)."""


def _yaml_docs(path: Path) -> list[Any]:
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _in_ci() -> bool:
    return bool(os.environ.get("CI"))


# --- docker-compose.yml -------------------------------------------------------------------------


@cache
def _compose() -> dict[str, Any]:
    docs = _yaml_docs(COMPOSE)
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


@cache
def _compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendored.joinpath("compose-spec.json").read_text())
    return schema


def _schema_errors(document: dict[str, Any]) -> list[str]:
    schema = _compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _facestream_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _services().items() if "build" in svc}


def test_compose_follows_the_compose_specification() -> None:
    assert _compose_schema()["title"] == "Compose Specification"
    assert _schema_errors(_compose()) == []


def test_compose_schema_check_is_not_vacuous() -> None:
    broken = copy.deepcopy(_compose())
    broken["services"]["sink"]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"]["api"]["depends_on"]["redis"]["condition"] = "service_ready"
    broken["services"]["detector"]["replicas_please"] = 2
    errors = _schema_errors(broken)
    assert any("sink" in e for e in errors)
    assert any("api" in e for e in errors)
    assert any("detector" in e for e in errors)


def test_compose_waits_for_healthy_dependencies() -> None:
    services = _services()
    for name, svc in services.items():
        for target, rule in svc.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
    for name, svc in _facestream_services().items():
        deps = svc["depends_on"]
        if name == "api":  # Redis for the dashboard and feed; the API never uses Kafka
            assert deps == {"redis": {"condition": "service_healthy"}}
        else:
            assert deps["kafka"] == {"condition": "service_healthy"}, name
            assert deps["topics"] == {"condition": "service_completed_successfully"}, name
        if "profiles" not in svc:
            test = svc["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL"), name
            port = "8000" if name == "api" else "9100"
            assert f"http://127.0.0.1:{port}/readyz" in test[-1], f"{name} checks /readyz"
    for name in ("matcher", "sink", "api"):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    assert "redis" not in services["detector"]["depends_on"]
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def test_compose_runs_kafka_in_kraft_mode() -> None:
    kafka = _services()["kafka"]
    env = kafka["environment"]
    assert kafka["image"] == "apache/kafka:4.1.2"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    factors = [v for k, v in env.items() if k.endswith(("REPLICATION_FACTOR", "MIN_ISR"))]
    assert factors and all(v == 1 for v in factors)
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    for svc in _facestream_services().values():
        assert svc["environment"]["FACESTREAM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert _services()["redis"]["image"] == "redis:7-alpine"


def test_compose_builds_one_locked_down_image() -> None:
    services = _facestream_services()
    assert {"detector", "matcher", "sink", "api"} <= services.keys()
    for name, svc in services.items():
        if name == "camera":  # a video source needs opencv: the image's tools variant
            assert svc["build"] == {"context": ".", "target": "tools"}
            assert svc["image"] == services["api"]["image"] + "-tools"
        else:
            assert svc["build"] == ".", name  # the default target: runtime
            assert svc["image"] == services["api"]["image"], name
        assert svc["read_only"] is True, name
        assert "/tmp" in svc["tmpfs"], name
        assert svc["cap_drop"] == ["ALL"], name
    assert services["detector"]["deploy"]["replicas"] == 2
    default_partitions = re.fullmatch(
        r"\$\{FACESTREAM_TOPIC_PARTITIONS:-(\d+)\}",
        _services()["topics"]["environment"]["FACESTREAM_TOPIC_PARTITIONS"],
    )
    assert default_partitions is not None
    assert services["detector"]["deploy"]["replicas"] <= int(default_partitions.group(1))


def test_compose_holds_no_secret() -> None:
    api_key = _services()["api"]["environment"]["FACESTREAM_API_KEY"]
    assert re.fullmatch(r"\$\{FACESTREAM_API_KEY:\?[^}]+\}", api_key)
    for name, svc in _services().items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key, value in env.items():
            text = str(value)
            assert not URL_WITH_PASSWORD.search(text), f"{name}.{key}"
            if SECRET_NAME.search(key):
                assert text.startswith("${"), f"{name}.{key} must come from the environment"


def test_compose_topics_service_runs_the_shared_script() -> None:
    topics = _services()["topics"]
    assert topics["image"] == _services()["kafka"]["image"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in topics["volumes"]}
    script = topics["command"][-1]
    assert (ROOT / mounts[script]).resolve() == TOPICS_SCRIPT


# --- Dockerfile ---------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name (``FROM ... AS name``; the last is default)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, arguments in _dockerfile_instructions():
        if instruction == "FROM":
            current = []
            stages[arguments.split()[-1] if " AS " in f" {arguments.upper()} " else ""] = current
        current.append((instruction, arguments))
    return stages


def test_dockerfile_installs_the_package_for_a_non_root_read_only_container() -> None:
    steps = _dockerfile_instructions()
    args = [a for i, a in steps if i == "ARG"]
    (image,) = [a.split("=", 1)[1] for a in args if a.startswith("PYTHON_IMAGE=")]
    # An exact Python release on a named Debian, and the digest of that tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", image), image
    assert all(
        a.split()[0] in ("${PYTHON_IMAGE}", "build", "base") for i, a in steps if i == "FROM"
    )
    runs = " && ".join(a for i, a in steps if i == "RUN")
    assert "pip install --no-deps --no-build-isolation . " in runs + " "
    assert "pip install -e" not in runs and "--editable" not in runs
    for lock in ("runtime.txt", "no-deps.txt", "tools.txt"):
        assert f"pip install --require-hashes --no-deps -r requirements/{lock}" in runs
    assert "pip install -r" not in runs and "pyproject.toml'))" not in runs, "only the lock"
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    stages = _stages()
    assert list(stages)[-1] == "runtime", "the default target is the runtime variant"
    for variant, build in (("runtime", "build"), ("tools", "build-tools")):
        stage = stages[variant]
        assert stage[0] == ("FROM", f"base AS {variant}")
        assert ("COPY", f"--from={build} /opt/venv /opt/venv") in stage
        users = [a for i, a in stage if i == "USER"]
        assert users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), "a numeric non-root user"
    assert not any("tools.txt" in a for i, a in stages["build"]), "no opencv in runtime"
    assert [a for i, a in steps if i == "ENTRYPOINT"] == ['["facestream"]']


def test_dockerignore_admits_exactly_what_the_image_copies() -> None:
    rules = [
        ln.strip()
        for ln in DOCKERIGNORE.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*", "ignore everything, then admit what the build needs"
    admitted = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied: set[str] = set()
    for instruction, arguments in _dockerfile_instructions():
        if instruction == "COPY" and "--from=" not in arguments:
            copied.update(s.rstrip("/") for s in arguments.split()[:-1])
    assert copied == admitted
    assert all((ROOT / path).exists() for path in copied)


# --- Kubernetes manifests -----------------------------------------------------------------------


def _manifest_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def _kustomizations() -> list[Path]:
    return [p for p in _manifest_files() if p.name == "kustomization.yaml"]


def test_every_manifest_parses() -> None:
    assert len(_manifest_files()) >= 8
    for path in _manifest_files():
        docs = _yaml_docs(path)
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict), path
            if path.name == "kustomization.yaml":
                assert doc["kind"] == "Kustomization", path
            else:
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path


def test_kustomizations_list_files_that_exist_and_nothing_is_left_out() -> None:
    referenced: set[Path] = set()
    for kustomization in _kustomizations():
        here = kustomization.parent
        doc = _yaml_docs(kustomization)[0]
        for entry in doc.get("resources", []) + doc.get("components", []):
            target = (here / entry).resolve()
            assert target.exists(), f"{kustomization}: {entry}"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{kustomization}: {entry}"
            referenced.add(target)
        for patch in doc.get("patches", []):
            assert ("path" in patch) != ("patch" in patch), f"{kustomization}: {patch}"
            if "path" in patch:
                assert (here / patch["path"]).is_file(), f"{kustomization}: {patch['path']}"
                referenced.add((here / patch["path"]).resolve())
        for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
            for entry in generator.get("files", []):
                source = entry.split("=", 1)[-1]
                assert (here / source).is_file(), f"{kustomization}: {source}"
                referenced.add((here / source).resolve())
        assert not doc.get("secretGenerator"), "secrets are created in the cluster, not here"
    for path in K8S.rglob("*"):
        if path.is_file() and path.name != "kustomization.yaml":
            assert path.resolve() in referenced, f"{path} is not used by any kustomization"


def _pod(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload (a CronJob's is in its job template)."""
    spec = doc.get("spec", {})
    if doc.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    pod: dict[str, Any] = spec.get("template", {}).get("spec", {})
    return pod


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod(doc)
    containers: list[dict[str, Any]] = pod.get("containers", []) + pod.get("initContainers", [])
    return containers


def _quantity(value: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "768Mi", "1", "2G") as a number of base units."""
    text = str(value)
    factors = {
        "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
        "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
    }  # fmt: skip
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", text)
    assert match and (match.group(2) in factors or not match.group(2)), f"quantity {text!r}"
    return float(match.group(1)) * factors.get(match.group(2), 1.0)


def _workload_problems(docs: list[dict[str, Any]]) -> Iterator[str]:
    """Everything wrong with the workloads in ``docs``, one line each."""
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind not in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"):
            continue
        pod = _pod(doc)
        if pod.get("automountServiceAccountToken") is not False:
            yield f"{kind}/{name}: mounts a service account token it does not need"
        pod_context = pod.get("securityContext", {})
        for c in _containers(doc):
            where = f"{kind}/{name}/{c['name']}"
            image = c.get("image", "")
            tagged = re.fullmatch(r"[^@:]+(:[^/:@]+)?(@sha256:[0-9a-f]{64})?", image)
            if not tagged or not (tagged.group(1) or tagged.group(2)):
                yield f"{where}: image {image!r} has no tag or digest"
            elif tagged.group(1) == ":latest":
                yield f"{where}: image {image!r} uses latest"
            resources = c.get("resources", {})
            requests, limits = resources.get("requests", {}), resources.get("limits", {})
            if not {"cpu", "memory"} <= requests.keys():
                yield f"{where}: resources.requests needs cpu and memory"
            if "memory" not in limits:
                yield f"{where}: resources.limits needs memory"
            for res in ("cpu", "memory"):
                both = res in requests and res in limits
                if both and _quantity(requests[res]) > _quantity(limits[res]):
                    yield f"{where}: {res} request {requests[res]} > limit {limits[res]}"
            ctx = c.get("securityContext", {})
            if ctx.get("readOnlyRootFilesystem") is not True:
                yield f"{where}: readOnlyRootFilesystem must be true"
            if not (ctx.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
                yield f"{where}: runAsNonRoot must be true"
            if ctx.get("allowPrivilegeEscalation") is not False:
                yield f"{where}: allowPrivilegeEscalation must be false"
            if ctx.get("capabilities", {}).get("drop") != ["ALL"]:
                yield f"{where}: capabilities must drop ALL"
            for env in c.get("env", []):
                if "value" in env and (
                    SECRET_NAME.search(env["name"]) or URL_WITH_PASSWORD.search(str(env["value"]))
                ):
                    yield f"{where}: {env['name']} is a literal; use valueFrom.secretKeyRef"
            if kind in ("Job", "CronJob"):
                continue
            paths = {"startupProbe": LIVE, "livenessProbe": LIVE, "readinessProbe": READY}
            for probe, path in paths.items():
                http = c.get(probe, {}).get("httpGet", {})
                if http.get("path") != path:
                    yield f"{where}: {probe} must GET {path}"
        if kind == "Deployment":
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if not 30 <= grace <= 120:
                yield f"{kind}/{name}: terminationGracePeriodSeconds {grace} not in 30..120"


def _raw_docs(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs.extend(_yaml_docs(path))
    return docs


def test_base_manifests_as_written_are_hardened() -> None:
    docs = _raw_docs(BASE)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for worker in WORKERS:
        assert ("Deployment", worker) in kinds
        assert ("Service", f"{worker}-metrics") in kinds
    assert {("Deployment", "api"), ("Service", "api"), ("Job", "topics")} <= kinds
    assert ("CronJob", "snapshot") in kinds
    for name in (*WORKERS, "api"):
        assert ("PodDisruptionBudget", name) in kinds
    assert ("NetworkPolicy", "facestream-default-deny") in kinds
    assert {("ScaledObject", name) for name in SCALED} <= kinds
    assert list(_workload_problems(docs)) == []


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    command = _kustomize_command()
    assert command is not None
    result = subprocess.run(
        [*command, str(K8S / target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


@pytest.fixture(params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    """The manifests of one kustomize target, as the cluster would receive them."""
    if _kustomize_command() is None:
        message = "neither kustomize nor kubectl is installed"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return list(_render(request.param))


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of ``kind`` named ``name`` (a generated ConfigMap may carry a hash suffix)."""
    found = [
        d
        for d in docs
        if d["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _named(doc: dict[str, Any], name: str) -> bool:
    return bool(doc["metadata"]["name"] == name)


def _container_env(
    docs: list[dict[str, Any]], workload: dict[str, Any], container: str
) -> dict[str, str]:
    """The environment of ``container`` as the kubelet builds it: its ConfigMaps (envFrom),
    then its env, literal values with ``$(VAR)`` references expanded (secrets left out)."""
    (found,) = [c for c in _containers(workload) if c["name"] == container]
    env: dict[str, str] = {}
    for source in found.get("envFrom", []):
        ref = source["configMapRef"]
        maps = [d for d in docs if d["kind"] == "ConfigMap" and _named(d, ref["name"])]
        if not maps and ref.get("optional"):
            continue  # left out by an overlay (dev has no facestream-kafka)
        (cm,) = maps
        env.update({k: str(v) for k, v in cm["data"].items()})
    for var in found.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(var["value"])
            )
    return env


def test_rendered_workloads_are_hardened(rendered: list[dict[str, Any]]) -> None:
    assert list(_workload_problems(rendered)) == []
    assert not [d for d in rendered if d["kind"] == "Secret"], "secret values stay out of git"


def test_autoscaling_stays_within_the_partitions(rendered: list[dict[str, Any]]) -> None:
    topics = _one(rendered, "ConfigMap", "facestream-topics")["data"]
    config = _one(rendered, "ConfigMap", "facestream-config")["data"]
    partitions = int(topics["FACESTREAM_TOPIC_PARTITIONS"])
    scaled = [d for d in rendered if d["kind"] == "ScaledObject"]
    for obj in scaled:
        name, spec = obj["metadata"]["name"], obj["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, name
        target = _one(rendered, "Deployment", spec["scaleTargetRef"]["name"])
        assert "replicas" not in target["spec"], f"{name}: the ScaledObject owns the count"
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        # Nothing repeated: the brokers, topic and group come from the worker's environment,
        # resolved the way KEDA resolves them (envFrom, then env with $(VAR) references).
        assert not {"bootstrapServers", "topic", "consumerGroup"} & meta.keys(), name
        assert spec["scaleTargetRef"]["envSourceContainerName"] == name
        env = _container_env(rendered, target, name)
        group, topic = SCALED[name]
        assert env[meta["bootstrapServersFromEnv"]] == config["FACESTREAM_KAFKA_BOOTSTRAP"]
        assert env[meta["topicFromEnv"]] == config["FACESTREAM_TOPIC_PREFIX"] + topic
        assert env[meta["consumerGroupFromEnv"]] == f"{config['FACESTREAM_GROUP_PREFIX']}-{group}"
        assert meta.get("allowIdleConsumers", "false") == "false", name
        assert int(meta["lagThreshold"]) > 0
        fallback = spec["fallback"]
        assert fallback["failureThreshold"] >= 1, name
        assert spec["minReplicaCount"] <= fallback["replicas"] <= spec["maxReplicaCount"], name
        if meta.get("ensureEvenDistributionOfPartitions") == "true":
            assert partitions % fallback["replicas"] == 0, f"{name}: an uneven fallback"
        strategy = target["spec"].get("strategy", {}).get("rollingUpdate", {})
        if strategy.get("maxUnavailable") == 0:
            # The surge pod of a rollout must own a partition to become ready.
            assert spec["maxReplicaCount"] < partitions, name
    names = {d["metadata"]["name"] for d in scaled}
    if names:
        assert names == SCALED.keys()
    else:  # without KEDA every worker has a fixed count
        for worker in SCALED:
            assert _one(rendered, "Deployment", worker)["spec"]["replicas"] >= 1


def test_services_probes_and_budgets_point_at_real_ports(rendered: list[dict[str, Any]]) -> None:
    config = _one(rendered, "ConfigMap", "facestream-config")["data"]
    metrics_port = int(config["FACESTREAM_METRICS_PORT"])
    deployments = [d for d in rendered if d["kind"] == "Deployment"]
    for svc in (d for d in rendered if d["kind"] in ("Service", "PodDisruptionBudget")):
        selector = svc["spec"]["selector"]
        labels = selector.get("matchLabels", selector)
        matched = [
            d
            for d in deployments
            if labels.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{svc['kind']}/{svc['metadata']['name']} selects {labels}"
        ports = {p["name"]: p["containerPort"] for c in _containers(matched[0]) for p in c["ports"]}
        for port in svc["spec"].get("ports", []):
            assert port["targetPort"] in ports, svc["metadata"]["name"]
    for deployment in deployments:
        (container,) = _containers(deployment)
        assert any(
            ref.get("configMapRef", {}).get("name", "").startswith("facestream-config")
            for ref in container["envFrom"]
        )
        if container["args"][0] in WORKERS:
            assert container["ports"] == [{"name": "metrics", "containerPort": metrics_port}]
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(metrics_port)
    budget = _one(rendered, "PodDisruptionBudget", "matcher")
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "matcher"


def test_api_key_comes_from_a_secret(rendered: list[dict[str, Any]]) -> None:
    (api,) = _containers(_one(rendered, "Deployment", "api"))
    (key,) = [e for e in api["env"] if e["name"] == "FACESTREAM_API_KEY"]
    assert set(key) == {"name", "valueFrom"}
    assert key["valueFrom"]["secretKeyRef"] == {"name": "facestream-api", "key": "api-key"}
    for cm in (d for d in rendered if d["kind"] == "ConfigMap"):
        for name, value in cm["data"].items():
            where = f"{cm['metadata']['name']}: {name}"
            # A *_FILE variable names where a Secret is mounted (checked below), no secret.
            if not (name.endswith("_FILE") and value.startswith(SECRETS_MOUNT)):
                assert not SECRET_NAME.search(name), where
            assert not URL_WITH_PASSWORD.search(value), where
            assert name != "FACESTREAM_REDIS_URL", f"{where}: its password belongs in a Secret"


def _secret_mounts(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """mountPath -> Secret name, for the Secret volumes ``container`` mounts."""
    volumes = workload["spec"]["template"]["spec"].get("volumes", [])
    secrets = {v["name"]: v["secret"]["secretName"] for v in volumes if "secret" in v}
    return {
        m["mountPath"]: secrets[m["name"]]
        for m in container.get("volumeMounts", [])
        if m["name"] in secrets
    }


def _secret_ref(container: dict[str, Any], variable: str) -> dict[str, Any] | None:
    found = [e for e in container.get("env", []) if e["name"] == variable]
    if not found:
        return None
    (entry,) = found
    assert set(entry) == {"name", "valueFrom"}, f"{variable} is a literal"
    ref: dict[str, Any] = entry["valueFrom"]["secretKeyRef"]
    return ref


def test_kafka_and_redis_credentials_come_from_secrets(rendered: list[dict[str, Any]]) -> None:
    kafka_maps = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap"
        and re.fullmatch(r"facestream-kafka(-[a-z0-9]{10})?", d["metadata"]["name"])
    ]
    for doc in rendered:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        for container in _containers(doc):
            role = container.get("args", ["topics"])[0]
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            redis_url = _secret_ref(container, "FACESTREAM_REDIS_URL")
            if role in ("matcher", "sink", "serve"):
                assert redis_url == {"name": "facestream-redis", "key": "url"}, where
            if role == "serve":
                continue  # the API never uses Kafka
            env = _container_env(rendered, doc, container["name"])
            if not kafka_maps:  # dev: PLAINTEXT, as its Kafka is
                assert "FACESTREAM_KAFKA_SECURITY_PROTOCOL" not in env, where
                continue
            (kafka,) = kafka_maps
            assert kafka["data"]["FACESTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            assert kafka["data"].items() <= env.items(), f"{where} reads facestream-kafka"
            user = _secret_ref(container, "FACESTREAM_KAFKA_SASL_USERNAME")
            assert user is not None and user["name"] == "facestream-kafka", where
            mounts = _secret_mounts(doc, container)
            for name in ("FACESTREAM_KAFKA_SSL_CAFILE", "FACESTREAM_KAFKA_SASL_PASSWORD_FILE"):
                folder, _, key = env[name].rpartition("/")
                assert mounts.get(folder) == "facestream-kafka", f"{where}: {name}"
                assert key in ("ca.crt", "password"), f"{where}: {name}"
            assert not any(
                SECRET_NAME.search(e["name"]) and "value" in e for e in container.get("env", [])
            ), where


def test_every_scaled_object_authenticates_as_the_workers_do(
    rendered: list[dict[str, Any]],
) -> None:
    scaled = [d for d in rendered if d["kind"] == "ScaledObject"]
    auths = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "TriggerAuthentication"}
    if not scaled:
        assert not auths, "a TriggerAuthentication nothing uses"
    for obj in scaled:
        (trigger,) = obj["spec"]["triggers"]
        auth = auths[trigger["authenticationRef"]["name"]]
        refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert {"sasl", "tls", "username", "password", "ca"} <= refs.keys()
        assert {r["name"] for r in refs.values()} == {"facestream-kafka"}, "the workers' Secret"
        assert refs["ca"]["key"] == "ca.crt" and refs["password"]["key"] == "password"
        assert not {"sasl", "tls", "username", "password"} & trigger["metadata"].keys()


def test_topics_job_runs_the_script_in_the_repository(rendered: list[dict[str, Any]]) -> None:
    job = _one(rendered, "Job", "topics")
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    script = _one(rendered, "ConfigMap", volumes["script"]["configMap"]["name"])
    assert script["data"]["create-topics.sh"] == TOPICS_SCRIPT.read_text()
    (container,) = _containers(job)
    assert container["command"] == ["bash", "/opt/facestream/create-topics.sh"]
    assert container["image"] == _services()["kafka"]["image"]


# --- create-topics.sh ---------------------------------------------------------------------------

# Stands in for kafka-topics.sh: remembers created topics in $STUB_STATE and describes them in the
# format of Kafka 4.1 (a summary line, then one indented line per partition).
FAKE_KAFKA_TOPICS = r"""#!/usr/bin/env bash
set -euo pipefail
mode= topic= parts= configs=()
while (($#)); do
  case "$1" in
    --create) mode=create ;;
    --describe) mode=describe ;;
    --topic) topic=$2; shift ;;
    --partitions) parts=$2; shift ;;
    --config) configs+=("$2"); shift ;;
    --bootstrap-server|--replication-factor) shift ;;
    --command-config) cat "$2" >> "$STUB_STATE.client"; shift ;;
  esac
  shift
done
touch "$STUB_STATE"
if [[ $mode == create ]]; then
  if ! awk -v t="$topic" '$1 == t { found = 1 } END { exit !found }' "$STUB_STATE"; then
    joined=$(IFS=,; echo "min.insync.replicas=1${configs[*]:+,${configs[*]}}")
    echo "$topic $parts $joined" >> "$STUB_STATE"
  fi
else
  summary='Topic: %s\tTopicId: AAAAAAAAAAAAAAAAAAAAAA\tPartitionCount: %s\tReplicationFactor: 1'
  partition='\tTopic: %s\tPartition: 0\tLeader: 1\tReplicas: 1\tIsr: 1\tElr: \tLastKnownElr: \n'
  while read -r t p c; do
    printf "$summary\tConfigs: %s\n" "$t" "$p" "$c"
    printf "$partition" "$t"
  done < "$STUB_STATE"
fi
"""


def _run_topics_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    tool = tmp_path / "kafka-topics.sh"
    tool.write_text(FAKE_KAFKA_TOPICS)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    full_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_TOPICS": str(tool),
        "STUB_STATE": str(tmp_path / "topics.txt"),
        "FACESTREAM_KAFKA_BOOTSTRAP": "kafka:9092",
        **env,
    }
    return subprocess.run(
        ["bash", str(TOPICS_SCRIPT)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _created(tmp_path: Path) -> dict[str, tuple[int, str]]:
    created = {}
    for line in (tmp_path / "topics.txt").read_text().splitlines():
        name, partitions, configs = line.split(" ")
        created[name] = (int(partitions), configs)
    return created


@pytest.mark.parametrize("partitions", [4, 12])
def test_topics_script_creates_the_topics_of_the_local_stack(
    tmp_path: Path, partitions: int
) -> None:
    result = _run_topics_script(tmp_path, FACESTREAM_TOPIC_PARTITIONS=str(partitions))
    assert result.returncode == 0, result.stderr
    created = _created(tmp_path)
    expected = topic_specs(partitions)
    assert set(created) == {spec.name for spec in expected}
    for spec in expected:
        count, configs = created[spec.name]
        assert count == spec.partitions, spec.name
        # The stub adds the broker's min.insync.replicas=1, as Kafka's describe shows it.
        assert set(configs.split(",")) - {"min.insync.replicas=1"} == {
            f"{key}={value}" for key, value in spec.config.items()
        }, spec.name
        assert spec.config["cleanup.policy"] in ("delete", "compact"), spec.name
        if spec.config["cleanup.policy"] == "delete":
            assert "retention.ms" in spec.config and "segment.ms" in spec.config, spec.name
    # Raw face images and their dead letters are kept hours, not days; match events live no
    # longer (retention + one segment) than the sink remembers event ids (7 days).
    day = 24 * 3_600_000
    assert {"retention.ms=21600000", "max.message.bytes=8388608"} <= set(
        created["frames.v1"][1].split(",")
    )
    assert "retention.ms=86400000" in created["frames.v1.dlq"][1].split(",")
    matches = expected[2].config
    assert int(matches["retention.ms"]) + int(matches["segment.ms"]) <= 7 * day
    for spec in expected:
        if spec.config["cleanup.policy"] == "compact":
            bound = int(spec.config["segment.ms"]) + int(spec.config["max.compaction.lag.ms"])
            assert bound <= 12 * 3_600_000, spec.name  # erased values gone within hours
            assert int(spec.config["delete.retention.ms"]) >= 7 * day, spec.name
    assert not any("min.insync.replicas=2" in c for _, c in created.values())
    assert created["identities.v1"][0] == created["encodings.v1"][0]
    # Idempotent: a second run creates nothing and still passes.
    again = _run_topics_script(tmp_path, FACESTREAM_TOPIC_PARTITIONS=str(partitions))
    assert again.returncode == 0, again.stderr
    assert _created(tmp_path) == created


def test_topics_script_requires_two_in_sync_replicas_of_three(tmp_path: Path) -> None:
    result = _run_topics_script(tmp_path, FACESTREAM_TOPIC_REPLICATION_FACTOR="3")
    assert result.returncode == 0, result.stderr
    for name, (_, configs) in _created(tmp_path).items():
        assert "min.insync.replicas=2" in configs.split(","), name
    single = tmp_path / "single"  # replication 1, another (empty) broker
    single.mkdir()
    refused = _run_topics_script(single, FACESTREAM_TOPIC_MIN_INSYNC_REPLICAS="2")
    assert refused.returncode == 2
    assert "exceeds the replication factor" in refused.stderr


def test_topics_script_overrides_retention_and_warns_about_old_topics(tmp_path: Path) -> None:
    (tmp_path / "topics.txt").write_text(
        "frames.v1 4 cleanup.policy=delete,retention.ms=86400000\n"
    )
    result = _run_topics_script(tmp_path, FACESTREAM_ENCODINGS_RETENTION_MS="3600000")
    assert result.returncode == 0, result.stderr
    assert "retention.ms=3600000" in _created(tmp_path)["encodings.v1"][1].split(",")
    # An old frames.v1 keeps its day: a person changes it (deleting data), the script says so.
    assert "frames.v1 lacks retention.ms=21600000" in result.stderr
    assert "encodings.v1 lacks" not in result.stderr


def test_topics_script_applies_the_prefix(tmp_path: Path) -> None:
    result = _run_topics_script(tmp_path, FACESTREAM_TOPIC_PREFIX="acme.")
    assert result.returncode == 0, result.stderr
    assert all(name.startswith("acme.") for name in _created(tmp_path))


def test_topics_script_refuses_existing_topics_with_other_partition_counts(
    tmp_path: Path,
) -> None:
    (tmp_path / "topics.txt").write_text("identities.v1 8 cleanup.policy=compact\n")
    result = _run_topics_script(tmp_path, FACESTREAM_TOPIC_PARTITIONS="4")
    assert result.returncode == 1
    assert "identities.v1 has 8 partitions, expected 4" in result.stderr
    (tmp_path / "topics.txt").write_text("members.v1 1 min.insync.replicas=1\n")
    result = _run_topics_script(tmp_path)
    assert result.returncode == 1
    assert "members.v1 must be compacted" in result.stderr


def test_topics_script_connects_with_the_workers_tls_and_sasl(tmp_path: Path) -> None:
    password = 'pa"ss\\word'  # JAAS and properties quoting both needed
    (tmp_path / "password").write_text(password + "\n")
    result = _run_topics_script(
        tmp_path,
        FACESTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        FACESTREAM_KAFKA_SSL_CAFILE="/etc/facestream/kafka/ca.crt",
        FACESTREAM_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        FACESTREAM_KAFKA_SASL_USERNAME="facestream",
        FACESTREAM_KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "password"),
        TMPDIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    calls = len(topic_specs()) + 1  # a create per topic, one describe
    lines = (tmp_path / "topics.txt.client").read_text().splitlines()
    assert len(lines) == 5 * calls
    assert lines[:5] == [
        "security.protocol=SASL_SSL",
        "ssl.truststore.type=PEM",
        "ssl.truststore.location=/etc/facestream/kafka/ca.crt",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="facestream" password="pa\\\\"ss\\\\\\\\word";',
    ]
    assert password not in result.stdout + result.stderr
    assert not list(tmp_path.glob("create-topics-client.*")), "removed on exit"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _run_topics_script(plain).returncode == 0
    assert not (plain / "topics.txt.client").exists(), "PLAINTEXT: no client config"
    refused = _run_topics_script(plain, FACESTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert refused.returncode != 0 and "FACESTREAM_KAFKA_SASL_USERNAME" in refused.stderr


def test_topics_script_rejects_a_bad_partition_count(tmp_path: Path) -> None:
    result = _run_topics_script(tmp_path, FACESTREAM_TOPIC_PARTITIONS="twelve")
    assert result.returncode == 2
    assert not (tmp_path / "topics.txt").exists()


# --- docs/events.md -----------------------------------------------------------------------------

_MARKED_BLOCK = re.compile(r"<!-- (example|snippet): ([\w-]+) -->\s*```(\w+)\n(.*?)```", re.DOTALL)


def _doc_blocks(kind: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    for found_kind, name, _lang, body in _MARKED_BLOCK.findall(EVENTS_DOC.read_text()):
        if found_kind == kind:
            assert name not in blocks, f"two {kind}s named {name}"
            blocks[name] = body
    return blocks


def test_events_doc_examples_decode_with_the_contracts() -> None:
    examples = _doc_blocks("example")
    models = ("FaceObservation", "MatchEvent", "MemberRecord", "IdentityRecord", "DeadLetter")
    for name in models:
        assert any(key.split("-")[0] == name for key in examples), f"no example of {name}"
    for key, body in examples.items():
        name = key.split("-")[0]
        if name == "FrameMeta":
            headers = json.loads(body)
            schemas.FrameMeta.from_headers([(k, v.encode()) for k, v in headers.items()])
        else:
            schemas.decode(getattr(schemas, name), body.encode())


def test_events_doc_decoding_snippet_works() -> None:
    (snippet,) = _doc_blocks("snippet").values()
    observation = json.loads(_doc_blocks("example")["FaceObservation"])
    namespace: dict[str, Any] = {"message": observation}
    exec(snippet, namespace)
    vector = namespace["vector"]
    assert vector.shape == (128,) and vector.dtype == np.float32
    assert np.array_equal(vector, vector_from_wire(observation["encoding"]))


def test_events_doc_covers_every_topic() -> None:
    text = EVENTS_DOC.read_text()
    for spec in topic_specs():
        assert f"`{spec.name}`" in text, spec.name
