"""The sections of ``benchmarks.pipeline``: each runs its measurements and keeps the raw
results, which :mod:`benchmarks.pipeline.report` turns into tables."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import redis

from benchmarks.common import machine, median
from benchmarks.pipeline import detector as det
from benchmarks.pipeline import live as live
from benchmarks.pipeline import matcher as mat
from benchmarks.pipeline import rebuild as rebuild
from benchmarks.pipeline import workers as workers
from benchmarks.pipeline.frames import Frames, build_frames
from benchmarks.pipeline.synthetic import EncodingModel, describe_real, lfw_encodings
from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery, GalleryConfig
from facestream.devstack import stack
from facestream.runtime.redis_clients import redis_client
from facestream.runtime.settings import PipelineSettings
from facestream.services.detector.worker import DetectorSettings

HEIGHTS = (480, 720)


@dataclass(frozen=True)
class Plan:
    """How much of each measurement a run makes (:data:`FULL` and :data:`QUICK`)."""

    detector_rounds: int
    detector_per_round: int
    breakdown_repeats: int
    lfw_encodings: int
    gallery_sizes: tuple[int, ...]
    ivf_pretrain_from: int
    """Galleries this large get an IVF index trained on a subsample outside the gallery (the
    gallery itself would train on every sample; see docs/pipeline-benchmarks.md)."""
    ivf_nlist: int
    ivf_train: int
    matcher_rounds: int
    probes_per_kind: dict[int, int]
    add_repeats: int
    rebuild_records: int
    e2e_rate: float
    e2e_seconds: float
    e2e_warmup: int
    scaling_backlog: int
    scaling_repeats: int


FULL = Plan(
    detector_rounds=7,
    detector_per_round=3,
    breakdown_repeats=5,
    lfw_encodings=200,
    gallery_sizes=(10_000, 1_000_000),
    ivf_pretrain_from=100_000,
    ivf_nlist=1024,
    ivf_train=100_000,
    matcher_rounds=5,
    probes_per_kind={10_000: 100, 1_000_000: 30},
    add_repeats=3,
    rebuild_records=10_000,
    e2e_rate=2.0,
    e2e_seconds=60.0,
    e2e_warmup=3,
    scaling_backlog=120,
    scaling_repeats=4,
)
QUICK = Plan(
    detector_rounds=2,
    detector_per_round=1,
    breakdown_repeats=1,
    lfw_encodings=30,
    gallery_sizes=(2_000,),
    ivf_pretrain_from=100_000,
    ivf_nlist=1024,
    ivf_train=100_000,
    matcher_rounds=2,
    probes_per_kind={2_000: 10},
    add_repeats=2,
    rebuild_records=300,
    e2e_rate=2.0,
    e2e_seconds=4.0,
    e2e_warmup=1,
    scaling_backlog=8,
    scaling_repeats=1,
)


@dataclass
class Runs:
    plan: dict[str, Any]
    quick: bool
    machine: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)
    detector_results: dict[str, Any] = field(default_factory=dict)
    matcher_results: dict[str, Any] = field(default_factory=dict)
    latency_results: dict[str, Any] = field(default_factory=dict)
    scaling_results: list[dict[str, Any]] = field(default_factory=list)
    store_scaling_results: list[dict[str, Any]] = field(default_factory=list)
    logdir: str = ""

    # -- shared inputs -----------------------------------------------------------------------

    @cached_property
    def engine(self) -> FaceEngine:
        """The engine as the detector worker builds it (its settings' defaults)."""
        return FaceEngine(DetectorSettings().engine_config())

    @cached_property
    def frames(self) -> Frames:
        return build_frames(self.engine, HEIGHTS)

    @cached_property
    def base(self) -> PipelineSettings:
        cfg = stack.StackConfig.from_env()
        if not stack.wait_ready(10.0, config=cfg):
            raise SystemExit("Kafka/Redis not running: start them with `facestream stack up`")
        return PipelineSettings(
            kafka_bootstrap=stack.kafka_bootstrap(cfg),
            redis_url=stack.redis_url(cfg),
            metrics_port=0,
        )

    def _logdir(self) -> Path:
        if not self.logdir:
            self.logdir = tempfile.mkdtemp(prefix="facestream-bench-logs-")
        return Path(self.logdir)

    # -- sections ----------------------------------------------------------------------------

    def start(self, packages: Sequence[str]) -> None:
        self.machine = machine(packages)
        self.machine["kafka_broker"] = stack.KAFKA_VERSION
        try:
            client = redis_client(self.base)
            self.machine["redis_server"] = str(client.info("server").get("redis_version"))
            client.close()
        except redis.RedisError:
            self.machine["redis_server"] = "unreachable"

    def detector(self, plan: Plan) -> None:
        rows = det.measure_handler(
            self.engine, self.frames, plan.detector_rounds, plan.detector_per_round
        )
        self.detector_results = {
            "cases": [
                {
                    "name": r.name,
                    "frame": r.frame,
                    "kb": r.kb,
                    "fps": r.fps,
                    "cpu_fps": r.cpu_fps,
                    "wall": r.wall,
                    "cpu": r.cpu,
                    "spread": det.spread([1 / w for w in r.wall]),
                }
                for r in rows
            ],
            "breakdown": {
                h: det.breakdown(self.engine, self.frames.one_face[h], plan.breakdown_repeats)
                for h in HEIGHTS
            },
        }

    def matcher(self, plan: Plan) -> None:
        rng = np.random.default_rng(7)
        real = lfw_encodings(self.engine, plan.lfw_encodings)
        model = EncodingModel.fit(real)
        out: dict[str, Any] = {
            "model": {
                "fitted_on": model.fitted_on,
                "between": model.between,
                "within": model.within,
                **model.check(rng),
                **describe_real(real),
            },
            "sizes": [],
        }
        with (
            workers.fresh_pipeline(self.base, "match") as settings,
            tempfile.TemporaryDirectory(prefix="facestream-bench-") as tmp,
        ):
            bench = mat.MatcherBench(settings, workers.PARTITIONS, settings.group_prefix)
            try:
                for size in plan.gallery_sizes:
                    out["sizes"].append(
                        self._matcher_size(plan, bench, model, size, Path(tmp), rng)
                    )
                    bench.handler.members.gallery = Gallery(GalleryConfig())
                    gc.collect()
            finally:
                bench.close()
        with workers.fresh_pipeline(self.base, "rebuild") as settings:
            out["rebuild"] = rebuild.measure_rebuild(
                settings, model, plan.rebuild_records, workers.PARTITIONS, rng, timeout=900
            )
        self.matcher_results = out

    def _matcher_size(
        self,
        plan: Plan,
        bench: mat.MatcherBench,
        model: EncodingModel,
        size: int,
        tmp: Path,
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        vectors, owners, centres = model.gallery(size, mat.PER_PERSON, rng)
        flat = mat.build_gallery(GalleryConfig(index="flat"), vectors, owners, tmp, rng)
        if size >= plan.ivf_pretrain_from:
            config = GalleryConfig(index="ivf", nlist=plan.ivf_nlist)
            ivf = mat.build_gallery(config, vectors, owners, tmp, rng, train_on=plan.ivf_train)
        else:
            ivf = mat.build_gallery(GalleryConfig(index="ivf"), vectors, owners, tmp, rng)
        del vectors
        per_kind = plan.probes_per_kind[size]
        rounds = mat.handle_rounds(
            bench, model, centres, [flat, ivf], plan.matcher_rounds, per_kind, rng
        )
        galleries = []
        for built, results in rounds:
            row = mat.summary(results)
            row["label"] = built.label
            row["build_seconds"] = built.seconds
            row["train_seconds"] = built.train_seconds
            row["add_ms"] = mat.add_seconds(built.gallery, model, rng, plan.add_repeats) * 1e3
            galleries.append(row)
        return {
            "samples": size,
            "people": len(centres),
            "probes_per_round": per_kind * len(mat.KINDS),
            "galleries": galleries,
        }

    def latency(self, plan: Plan, env: Mapping[str, str]) -> None:
        self.latency_results = live.latency_run(
            self.base,
            env,
            self._logdir(),
            self.frames.one_face[480],
            rate=plan.e2e_rate,
            seconds=plan.e2e_seconds,
            warmup=plan.e2e_warmup,
            drain_timeout=60.0,
        )

    def scaling(self, plan: Plan, env: Mapping[str, str]) -> None:
        """1 and 2 detectors on a backlog of many stores (one per partition)."""
        self.scaling_results = self._scaling(plan, env, live.spread_stores())

    def store_scaling(self, plan: Plan, env: Mapping[str, str]) -> None:
        """1 and 2 detectors on a backlog of one store's cameras (one per partition): what
        camera keys buy a store too busy for one detector."""
        self.store_scaling_results = self._scaling(plan, env, live.spread_cameras())

    def _scaling(
        self, plan: Plan, env: Mapping[str, str], cameras: list[live.Camera]
    ) -> list[dict[str, Any]]:
        # 1 and 2 alternate, so that a change in the machine's load hits both alike.
        return [
            live.scaling_run(
                self.base,
                env,
                self._logdir(),
                self.frames.one_face[480],
                cameras=cameras,
                detectors=detectors,
                backlog=plan.scaling_backlog,
                timeout=600.0,
            )
            for _ in range(plan.scaling_repeats)
            for detectors in (1, 2)
        ]

    def finish(self, loads: list[float]) -> None:
        if loads:
            self.machine["load_during_run"] = {
                "min": min(loads),
                "median": median(loads),
                "max": max(loads),
                "samples": len(loads),
            }

    def as_dict(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "plan": self.plan,
            "machine": self.machine,
            "sections": self.sections,
            "detector": self.detector_results,
            "matcher": self.matcher_results,
            "latency": self.latency_results,
            "scaling": self.scaling_results,
            "store_scaling": self.store_scaling_results,
            "logdir": self.logdir,
        }
