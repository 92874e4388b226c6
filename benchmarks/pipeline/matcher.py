"""Matcher observations per second: ``MatcherHandler.handle`` on in-memory records.

The handler is the real one, started against the real broker and Redis on topics of its own
(members, identities and shards empty), owning every partition. Its member tier's gallery is then
replaced by a synthetic gallery built in bulk through ``Gallery.load``: filling it through
``members.v1`` would cost O(N^2) (every ``Gallery.add`` copies all stored samples, see
:mod:`benchmarks.pipeline.rebuild`). Each observation then takes the matcher's own path:
decode, members, the store's visitor shard, mint or match, event.

Probes come in thirds: a new photo of a member (a member match, one search), a new photo of a
stranger minted in an earlier round (a returning visitor: members then the shard) and a new
stranger (both searches, then a mint into the shard).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from kafka.structs import TopicPartition
from numpy.typing import NDArray

from benchmarks.common import median
from benchmarks.pipeline.synthetic import EncodingModel, Vectors
from facestream.core.engine import MODEL_VERSION
from facestream.core.gallery import FORMAT_VERSION, Gallery, GalleryConfig, Identity
from facestream.runtime.runner import Record
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import (
    Box,
    FaceObservation,
    MatchEvent,
    decode,
    derived_id,
    vector_to_wire,
)
from facestream.schemas.keys import partition_for
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.worker import MatcherHandler

STORE = "store-1"
PER_PERSON = 3
KINDS = ("member", "returning", "new")


# -- galleries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    gallery: Gallery
    label: str
    seconds: float
    """Index training and adding (outside the gallery for a pre-trained IVF) plus Gallery.load."""
    train_seconds: float = 0.0
    """Of which k-means training of a pre-trained IVF index."""


def _threads(n: int) -> None:
    faiss.omp_set_num_threads(max(1, n))


def build_gallery(
    config: GalleryConfig,
    vectors: Vectors,
    owners: NDArray[np.int64],
    workdir: Path,
    rng: np.random.Generator,
    *,
    train_on: int | None = None,
) -> Built:
    """A gallery of members ``m{i}`` holding ``vectors`` (owned by ``owners``), loaded whole
    through ``Gallery.load`` from a file in the format ``Gallery.save`` writes.

    With ``train_on``, an IVF index of ``config.nlist`` lists is trained on that many random
    samples and filled outside the gallery (using every core), then loaded with the file, as a
    saved gallery would be; without it the gallery builds (and trains) its index itself."""
    people = int(owners.max()) + 1
    meta = {
        "format": FORMAT_VERSION,
        "config": asdict(config),
        "identities": [
            {"id": f"m{i}", "name": "", "kind": "member", "meta": {}, "number": i}
            for i in range(people)
        ],
        "next_number": people,
        "next_sample": len(vectors),
    }
    arrays: dict[str, Any] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "sample_ids": np.arange(len(vectors), dtype=np.int64),
        "owners": owners,
        "vectors": vectors,
    }
    seconds = train_seconds = 0.0
    label: str = config.index
    if train_on is not None:
        _threads(os.cpu_count() or 1)
        dim = vectors.shape[1]
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, config.nlist)
        sample = np.sort(rng.choice(len(vectors), size=min(train_on, len(vectors)), replace=False))
        started = time.perf_counter()
        index.train(vectors[sample])
        train_seconds = time.perf_counter() - started
        index.add_with_ids(vectors, arrays["sample_ids"])
        arrays["index"] = faiss.serialize_index(index)
        seconds += time.perf_counter() - started
        _threads(1)
        label = f"ivf (nlist {config.nlist}, trained on {len(sample):,})"
    path = workdir / f"gallery-{config.index}-{len(vectors)}.npz"
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    del arrays
    started = time.perf_counter()
    gallery = Gallery.load(path)
    seconds += time.perf_counter() - started
    path.unlink()
    if train_on is None and config.index == "ivf":
        label = f"ivf (nlist {_nlist(gallery)}, gallery-trained)"
    return Built(gallery, label, seconds, train_seconds)


def _nlist(gallery: Gallery) -> int:
    index: Any = faiss.extract_index_ivf(gallery._index)  # the gallery has no public accessor
    return int(index.nlist)


def add_seconds(
    gallery: Gallery, model: EncodingModel, rng: np.random.Generator, times: int
) -> float:
    """Median seconds of one ``Gallery.add`` of a new one-sample identity: what minting a
    visitor costs in a shard of this size, and each record of a shard rebuild. Changes
    ``gallery`` (adds ``times`` identities)."""
    vectors = model.photos(model.people(times, rng), rng)
    out = []
    for i, v in enumerate(vectors):
        started = time.perf_counter()
        gallery.add(Identity(f"added-{i}-{rng.integers(1 << 62)}", kind="visitor"), v)
        out.append(time.perf_counter() - started)
    return median(out)


# -- the handler -----------------------------------------------------------------------------


@dataclass
class Probe:
    expected: str
    vector: Vectors
    person: str = ""
    """Member id (member probes) or the stranger's key (returning probes)."""


@dataclass
class RoundResult:
    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    identify: list[float] = field(default_factory=list)
    """Seconds of the member tier's ``Gallery.identify`` alone, on the member probes."""
    search: list[float] = field(default_factory=list)
    """Seconds of its raw k-nearest ``Gallery.search`` (the Faiss part of identify)."""
    decided: dict[str, dict[str, int]] = field(default_factory=dict)
    """Expected kind -> decided kind -> count."""
    wrong_person: int = 0
    total_seconds: float = 0.0
    count: int = 0


class MatcherBench:
    """A started :class:`MatcherHandler` owning every partition, fed fake records."""

    def __init__(self, pipeline: PipelineSettings, partitions: int, tag: str) -> None:
        settings = MatcherSettings(matcher_id=f"bench-{tag}", startup_timeout=60.0)
        self.handler = MatcherHandler(settings, pipeline)
        self.handler.start()
        self.topic = pipeline.topics.encodings
        self.handler.on_assigned([TopicPartition(self.topic, p) for p in range(partitions)])
        self.handler.idle()  # builds the (empty) shards of the assigned partitions
        self.partition = partition_for(STORE, partitions)
        self.offset = 0
        self.strangers: dict[str, Vectors] = {}
        """Centres of strangers decided 'new', by key, for later returning probes."""
        self.minted: dict[str, str] = {}
        """Stranger key -> FaceId minted for them."""

    def close(self) -> None:
        self.handler.close()

    def _record(self, vector: Vectors) -> Record:
        self.offset += 1
        frame = derived_id("bench-frame", str(self.offset), str(time.time_ns()))
        obs = FaceObservation(
            observation_id=f"{frame}:0",
            frame_id=frame,
            face_index=0,
            store_id=STORE,
            camera_id="cam-1",
            captured_at=datetime.now(UTC),
            box=Box(top=100, right=220, bottom=220, left=100),
            size_px=120,
            sharpness=50.0,
            detector="hog",
            model_version=MODEL_VERSION,
            encoding=vector_to_wire(vector),
        )
        return Record(self.topic, self.partition, self.offset, STORE.encode(), obs.to_bytes())

    def probes(
        self,
        model: EncodingModel,
        centres: Vectors,
        per_kind: int,
        rng: np.random.Generator,
    ) -> list[Probe]:
        """``per_kind`` probes of each kind, shuffled."""
        members = rng.choice(len(centres), size=per_kind, replace=False)
        photos = model.photos(centres[members], rng)
        out = [Probe("member", photos[i], f"m{m}") for i, m in enumerate(members)]
        known = sorted(self.minted)
        for key in [known[i] for i in rng.permutation(len(known))[:per_kind]]:
            out.append(Probe("returning", model.photos(self.strangers[key][None, :], rng)[0], key))
        fresh = model.people(per_kind, rng)
        for i, v in enumerate(model.photos(fresh, rng)):
            key = f"s{self.offset}-{i}-{rng.integers(1 << 62)}"
            self.strangers[key] = fresh[i]
            out.append(Probe("new", v, key))
        return [out[i] for i in rng.permutation(len(out))]

    def run(
        self, gallery: Gallery, probes: list[Probe], result: RoundResult, batch: int = 0
    ) -> None:
        """Handle every probe once, timing each call; tally the decisions into ``result``.

        ``batch``: hand the handler ``batch`` records at a time first (``prepare``, as the
        runner does with a poll batch), each probe's time then including its share of that;
        0 handles them one by one without it."""
        if self.handler.members.gallery is not gallery:
            self.handler.members.gallery = gallery
            # The normalised policy's judges hold the gallery they were made for (the members'
            # for their tier, and as the visitors' cohort): made again for this one, or the
            # members would be decided against the gallery the handler started with.
            self.handler._use_policies(self.handler.settings)
        records = [self._record(p.vector) for p in probes]
        outputs = []
        handle = self.handler.handle
        step = batch or len(records)
        started = time.perf_counter()
        for first in range(0, len(records), step):
            chunk = records[first : first + step]
            t = time.perf_counter()
            if batch:
                self.handler.prepare(chunk)
            share = (time.perf_counter() - t) / len(chunk)
            for probe, record in zip(probes[first : first + step], chunk, strict=True):
                t = time.perf_counter()
                outputs.append(handle(record))
                result.seconds[probe.expected].append(time.perf_counter() - t + share)
        result.total_seconds += time.perf_counter() - started
        result.count += len(probes)
        # identify asks Faiss for this many neighbours (top_k + the most samples of anyone).
        k = gallery.config.top_k + PER_PERSON
        for probe in probes:
            if probe.expected == "member":
                t = time.perf_counter()
                gallery.identify(probe.vector)
                result.identify.append(time.perf_counter() - t)
                t = time.perf_counter()
                gallery.search(probe.vector, k)
                result.search.append(time.perf_counter() - t)
        for probe, outs in zip(probes, outputs, strict=True):
            event = decode(MatchEvent, outs[-1].value)
            row = result.decided.setdefault(probe.expected, {})
            row[event.kind] = row.get(event.kind, 0) + 1
            if probe.expected == "member" and event.kind == "member":
                result.wrong_person += event.member_id != probe.person
            elif probe.expected == "returning" and event.kind == "returning":
                result.wrong_person += event.face_id != self.minted[probe.person]
            if probe.expected == "new" and event.kind == "new" and event.face_id:
                self.minted[probe.person] = event.face_id


def handle_rounds(
    bench: MatcherBench,
    model: EncodingModel,
    centres: Vectors,
    galleries: list[Built],
    rounds: int,
    per_kind: int,
    rng: np.random.Generator,
) -> list[tuple[Built, list[RoundResult]]]:
    """``rounds`` rounds over every gallery (alternating within each round), after one untimed
    round that seeds the shard with strangers for the returning probes."""
    bench.run(galleries[0].gallery, bench.probes(model, centres, per_kind, rng), RoundResult())
    results: list[list[RoundResult]] = [[] for _ in galleries]
    for r in range(rounds):
        order = list(range(len(galleries)))
        if r % 2:
            order.reverse()
        for i in order:
            result = RoundResult()
            bench.run(galleries[i].gallery, bench.probes(model, centres, per_kind, rng), result)
            results[i].append(result)
    return list(zip(galleries, results, strict=True))


def summary(rounds: list[RoundResult]) -> dict[str, Any]:
    """Medians over rounds: observations per second of the whole mix, and per-kind and
    member-search microseconds; decisions summed over rounds."""
    decided: dict[str, dict[str, int]] = {}
    for r in rounds:
        for expected, row in r.decided.items():
            for kind, n in row.items():
                decided.setdefault(expected, {}).setdefault(kind, 0)
                decided[expected][kind] += n
    per_round = [r.count / r.total_seconds for r in rounds]
    return {
        "obs_per_s": median(per_round),
        "obs_per_s_rounds": per_round,
        "us": {k: median([median(r.seconds[k]) for r in rounds]) * 1e6 for k in KINDS},
        "identify_us": median([median(r.identify) for r in rounds]) * 1e6,
        "search_us": median([median(r.search) for r in rounds]) * 1e6,
        "decided": decided,
        "wrong_person": sum(r.wrong_person for r in rounds),
    }
