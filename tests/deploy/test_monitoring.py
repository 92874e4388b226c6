"""The monitoring files: Prometheus alert rules, their unit tests and an example configuration
(checked by Debian's promtool), the Prometheus Operator's PrometheusRule and PodMonitor, and
the Grafana dashboard. Every metric they name must be one the code exports, with the labels
and histogram buckets they use; every alert must have a section in docs/monitoring.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from facestream.core.gallery import Gallery
from facestream.devstack.install import ensure_debian_package
from facestream.devstack.stack import StackError
from facestream.runtime import metrics as runtime_metrics
from facestream.services.api.metrics import create_metrics
from facestream.services.detector import worker as detector_worker
from facestream.services.matcher import metrics as matcher_metrics
from facestream.services.sink import worker as sink_worker

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "facestream-rules.yml"
RULE_TESTS = PROMETHEUS / "facestream-rules.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "facestream-pipeline.json"
MONITORING = ROOT / "deploy" / "k8s" / "base" / "monitoring"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
DOC = ROOT / "docs" / "monitoring.md"

WORKERS = ("detector", "matcher", "sink")
JOBS = (*WORKERS, "api")
# Series that Prometheus itself makes, not the code.
PROMETHEUS_OWN = {"up"}
# Labels every scraped series gets from Prometheus.
TARGET_LABELS = {"job", "instance"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool, installed with apt-get (package ``prometheus``) when missing."""
    try:
        return ensure_debian_package("promtool", "prometheus", None, ("/usr/bin/promtool",))
    except StackError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"promtool is needed: {exc}")
        pytest.skip(f"promtool is not available: {exc}")


def _promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- what the code exports --------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    family: str
    labels: frozenset[str]
    buckets: frozenset[str]
    """Histogram upper bounds as Prometheus prints them in ``le`` ("60.0", "+Inf")."""


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}


@cache
def _exported() -> dict[str, Exported]:
    """Every series name the code exports -> its family's labels and buckets."""
    wrappers: list[MetricWrapperBase] = []
    for module in (runtime_metrics, matcher_metrics, detector_worker, sink_worker):
        wrappers += [v for v in vars(module).values() if isinstance(v, MetricWrapperBase)]
    api = create_metrics(Gallery())
    wrappers += [
        getattr(api, f.name)
        for f in fields(api)
        if isinstance(getattr(api, f.name), MetricWrapperBase)
    ]
    found: dict[str, Exported] = {}
    for wrapper in wrappers:
        kind = str(wrapper._type)
        bounds = getattr(wrapper, "_upper_bounds", [])
        family = Exported(
            wrapper._name,
            frozenset(wrapper._labelnames),
            frozenset(floatToGoString(b) for b in bounds),  # type: ignore[no-untyped-call]
        )
        for suffix in _SUFFIXES[kind]:
            found[wrapper._name + suffix] = family
    # The API's gallery gauges are read at scrape time and have no handle: take their names
    # from the registry (they have no labels).
    for metric in api.registry.collect():
        if metric.type == "gauge":
            found.setdefault(metric.name, Exported(metric.name, frozenset(), frozenset()))
    return found


def test_the_inventory_of_exported_metrics_is_complete() -> None:
    exported = _exported()
    for name in (
        "facestream_messages_total",
        "facestream_consumer_lag",
        "facestream_event_delay_seconds_bucket",
        "facestream_matcher_rebuild_seconds_bucket",
        "facestream_sink_events_total",
        "facestream_frames_total",
        "facestream_api_requests_total",
        "facestream_api_gallery_identities",
    ):
        assert name in exported, name


# --- PromQL, as far as these files use it -----------------------------------------------------


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: dict[str, str]


_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACED = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf"}


def selectors(expr: str) -> list[Selector]:
    """The series selectors of a PromQL expression: metric names and their label matchers."""
    found: list[Selector] = []
    text = _GROUPING.sub(" ", expr)

    def braced(match: re.Match[str]) -> str:
        body = match.group(2)
        matchers = {m.group(1): m.group(3) for m in _MATCHER.finditer(body)}
        assert _MATCHER.sub("", body).strip() == "", f"cannot read matchers {body!r} in {expr}"
        name = match.group(1) or matchers.pop("__name__")
        found.append(Selector(name, matchers))
        return " "

    text = _BRACED.sub(braced, text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges: [10m], [$__rate_interval]
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?\b", " ", text)
    for token in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\()?", text):
        name, call = token.groups()
        if call is None and name.lower() not in _KEYWORDS:
            found.append(Selector(name, {}))
    return found


def test_selectors_reads_what_the_files_write() -> None:
    expr = (
        "sum by (tier) (increase(x_count[30m])) - sum by (tier, le) "
        '(rate(x_bucket{le="60.0", tier=~"v.*"}[$__rate_interval])) > 0 and on (stage) up == 0'
    )
    assert selectors(expr) == [
        Selector("x_bucket", {"le": "60.0", "tier": "v.*"}),
        Selector("x_count", {}),
        Selector("up", {}),
    ]


def _check_selector(selector: Selector, where: str) -> None:
    if selector.metric in PROMETHEUS_OWN:
        return
    exported = _exported().get(selector.metric)
    assert exported is not None, f"{where}: {selector.metric} is not exported by the code"
    known = exported.labels | TARGET_LABELS | ({"le"} if exported.buckets else set())
    unknown = set(selector.matchers) - known
    assert not unknown, f"{where}: {selector.metric} has no label {unknown}"
    if "le" in selector.matchers:
        le = selector.matchers["le"]
        assert le in exported.buckets, f"{where}: {exported.family} has no bucket le={le}"


# --- alert rules --------------------------------------------------------------------------------


@cache
def _rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rules()["groups"] for rule in group["rules"]]


def test_the_rules_pass_promtool_check(promtool: str) -> None:
    out = _promtool(promtool, "check", "rules", RULES.name)
    assert f"SUCCESS: {len(_alerts())} rules found" in out


def test_the_rules_fire_as_their_unit_tests_expect(promtool: str) -> None:
    _promtool(promtool, "test", "rules", RULE_TESTS.name)


def test_the_example_configuration_passes_promtool_check(promtool: str) -> None:
    _promtool(promtool, "check", "config", CONFIG.name)


def test_the_alerts_asked_for_exist() -> None:
    names = {rule["alert"] for rule in _alerts()}
    assert {
        "FacestreamConsumerLagGrowing",
        "FacestreamDeadLetters",
        "FacestreamDeadLetterRateHigh",
        "FacestreamHandlerErrors",
        "FacestreamStageSilent",
        "FacestreamShardRebuildSlow",
    } <= names


def test_every_metric_the_rules_name_exists() -> None:
    for rule in _alerts():
        found = selectors(rule["expr"])
        assert found, rule["alert"]
        for selector in found:
            _check_selector(selector, rule["alert"])


def test_the_rules_name_only_the_jobs_that_are_scraped() -> None:
    for rule in _alerts():
        for selector in selectors(rule["expr"]):
            if "job" in selector.matchers:
                assert set(selector.matchers["job"].split("|")) == set(JOBS), rule["alert"]


def test_every_alert_is_labelled_and_explained() -> None:
    doc = DOC.read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^###\s+(\w+)\s*$", doc, re.MULTILINE)}
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook"] == f"docs/monitoring.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"docs/monitoring.md has no ### {rule['alert']}"


# --- the Prometheus Operator's objects ----------------------------------------------------------


def _monitoring_docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(MONITORING.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                docs[doc["kind"]] = doc
    return docs


def test_the_prometheusrule_holds_exactly_the_rules_file() -> None:
    rule = _monitoring_docs()["PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == _rules()["groups"], (
        "deploy/k8s/base/monitoring/prometheusrule.yaml differs from "
        "deploy/prometheus/facestream-rules.yml: edit both"
    )


def test_the_prometheusrule_passes_promtool_check(promtool: str, tmp_path: Path) -> None:
    spec = _monitoring_docs()["PrometheusRule"]["spec"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(spec))
    _promtool(promtool, "check", "rules", "rules.yml", cwd=tmp_path)


def _render_base() -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (or kustomize) is needed to render deploy/k8s")
        pytest.skip("kubectl is not installed")
    rendered = []
    for target in (K8S_BASE, MONITORING):
        out = subprocess.run(
            ["kubectl", "kustomize", str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        rendered += [d for d in yaml.safe_load_all(out) if d]
    return rendered


def test_the_podmonitor_scrapes_every_worker_as_its_job() -> None:
    rendered = _render_base()
    monitor = next(d for d in rendered if d["kind"] == "PodMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    job_label = monitor["spec"]["jobLabel"]
    ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    selected = {}
    for doc in rendered:
        if doc["kind"] != "Deployment":
            continue
        template = doc["spec"]["template"]
        labels = template["metadata"]["labels"]
        if wanted.items() <= labels.items():
            names = {p.get("name") for c in template["spec"]["containers"] for p in c["ports"]}
            assert ports <= names, f"{doc['metadata']['name']} has no port {ports - names}"
            selected[doc["metadata"]["name"]] = labels[job_label]
    # The workers, each under the job name the rules and the dashboard use; not the API, whose
    # /metrics needs the API key.
    assert selected == {w: w for w in WORKERS}


def test_the_dashboard_ships_for_grafanas_sidecar() -> None:
    maps = [d for d in _render_base() if d["kind"] == "ConfigMap"]
    dashboards = [m for m in maps if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert len(dashboards) == 1
    (text,) = dashboards[0]["data"].values()
    assert json.loads(text) == _dashboard()


# --- the Grafana dashboard ----------------------------------------------------------------------


@cache
def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_every_metric_the_dashboard_names_exists() -> None:
    for panel in _panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for selector in selectors(target["expr"]):
                _check_selector(selector, panel["title"])


def test_the_dashboard_covers_what_operators_watch() -> None:
    used = {s.metric for p in _panels() for t in p["targets"] for s in selectors(t["expr"])}
    families = {_exported()[name].family for name in used}
    for family in (
        "facestream_messages",  # throughput
        "facestream_consumer_lag",  # lag
        "facestream_dead_lettered",  # dead letters
        "facestream_matcher_decisions",  # decisions by kind
        "facestream_event_delay_seconds",  # event delay
        "facestream_processing_seconds",  # processing time
        "facestream_matcher_shards",  # shard sizes
        "facestream_matcher_identities",
        "facestream_matcher_rebuild_seconds",  # rebuilds
        "facestream_api_requests",  # the API
        "facestream_api_request_seconds",
    ):
        assert family in families, family


def test_the_dashboard_is_importable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [
            chr(ord("A") + i) for i in range(len(panel["targets"]))
        ], panel["title"]
    # No two panels overlap.
    cells = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
