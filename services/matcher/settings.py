"""Settings of the matcher, read from ``FACESTREAM_MATCHER_*`` environment variables.

Built in ``__main__`` (or by a test), never at import time. Kafka, Redis and topic names come
from :class:`facestream.runtime.settings.PipelineSettings`; this class holds what only the
matcher decides: the index type and the open-set thresholds of both tiers, when a visitor learns a
new sample, the neighbour stores searched as replicas, and the bounds on its reads of state.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from facestream.core.gallery import DEFAULT_MARGIN, DEFAULT_THRESHOLD, IndexType
from facestream.core.policy import (
    MEMBER_LEARN_MIN_DISTANCE,
    MEMBER_LEARN_THRESHOLD,
    VISITOR_LEARN_MIN_DISTANCE,
    VISITOR_LEARN_THRESHOLD,
    VISITOR_MAX_SAMPLES,
)
from facestream.schemas.messages import MAX_MEMBER_LEARNED, MAX_VISITOR_SAMPLES
from facestream.services.matcher.snapshots import SnapshotStore

ENV_PREFIX: Final = "FACESTREAM_MATCHER_"


def default_matcher_id() -> str:
    """``hostname-pid``: unique among live processes, and readable in erasure reports."""
    return f"{socket.gethostname()}-{os.getpid()}"


class MatcherSettings(BaseSettings):
    """Configuration of one matcher process. Every field is ``FACESTREAM_MATCHER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    policy: Literal["normalized", "distance"] = "normalized"
    """How both tiers decide: ``normalized`` (the distance against the face's neighbourhood,
    facestream.core.policy: holds across populations and gallery sizes) or ``distance`` (the
    raw distance against ``threshold``/``visitor_threshold`` with a margin, as before)."""
    policy_dir: Path | None = None
    """A folder written by ``facestream calibrate``: the deployment's own member and visitor
    policies and the cohort of reference people they were fitted with. Without it the shipped
    thresholds apply and the members are the visitors' only cohort."""
    index: IndexType = "auto"
    """Faiss index of both tiers: ``auto`` (the default) searches exactly, as ``flat``, below
    20,000 samples and on a compressed index re-ranked at the true distances above, built off
    the hot path (docs/benchmarks.md, ``index="auto"``); or flat, ivf, ivfsq8, hnsw (IVF stays
    exact until trained)."""
    vector_dir: str = ""
    """Where ``auto`` galleries keep their raw vectors, in unlinked files mapped into memory
    (512 bytes a sample): a disk-backed folder, not a tmpfs. Empty: the temporary directory."""
    snapshot_dir: Path | None = None
    """Where ``facestream snapshot`` writes the snapshots of ``identities.v1``'s partitions
    (a volume every matcher mounts): a partition taken over starts from its snapshot and reads
    only the changelog after it. None: every take-over reads the partition from its start."""
    snapshot_max_age_hours: float = Field(default=24.0, gt=0, le=144)
    """Snapshots older than this are not used (at most 6 days: tombstones leave
    ``identities.v1`` after 7, and a tail read from an older offset could miss one)."""
    member_scales: Literal["background", "lazy"] = "background"
    """With ``policy=normalized``: ``background`` computes every member's scale (its distance to
    its nearest other members, facestream.core.scales) on a thread once the members are read,
    so that member decisions find them ready (a search of the member's samples each, about
    2.4 ms at 1e6 samples, spent off the hot path; docs/pipeline-benchmarks.md); ``lazy``
    computes each at the member's first match. Either way the scales are kept while the
    members change."""
    member_probe_cohort: Literal["none", "store", "store_both"] = "none"
    """With ``policy=normalized``: ``store`` counts the store's own visitors in a face's scale
    when it is judged against the members (only the face's: a member's scale is the same in
    every store); ``store_both`` in the member's scale too (one member table per store, its
    scales computed as members are matched there). Experiments measured in docs/accuracy.md,
    not the default."""
    order: Literal["capture", "arrival"] = "capture"
    """``capture``: a store's faces are decided in capture order, from the progress its
    cameras' detectors report (services/matcher/ordering.py; docs/pipeline.md, "Capture
    order"), so that a run and its replay decide alike whichever detectors the cameras went
    through. ``arrival``: each face as it arrives (progress records are then only read)."""
    order_wait_seconds: float = Field(default=10.0, gt=0, le=600)
    """A camera that reported no progress for this long (wall time) holds no face back until
    it reports again: a camera gone dark, a detector down, the last faces of a replay. Longer
    than a detector's restart keeps the order through it; it is also how long such faces wait."""
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=2)
    """With ``policy=distance``: largest distance at which a face is taken for a member."""
    margin: float = Field(default=DEFAULT_MARGIN, ge=0, le=2)
    """Lead a member needs over the nearest other member."""
    # Visitors use the members' calibration: a store's shard is also an open-set 1:N search,
    # and a false "returning" merges two strangers' visits just as a false member would.
    visitor_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=2)
    visitor_margin: float = Field(default=DEFAULT_MARGIN, ge=0, le=2)
    # Learning: a confident sighting of a visitor adds its encoding to the visitor's samples,
    # so a returning visitor photographed differently is still recognised (docs/events.md).
    visitor_learn_threshold: float = Field(default=VISITOR_LEARN_THRESHOLD, gt=0, le=2)
    """Largest distance at which a sighting is confident enough to be learned: stricter than
    ``visitor_threshold``, because a wrong sample would merge two strangers for good."""
    visitor_learn_min_distance: float = Field(default=VISITOR_LEARN_MIN_DISTANCE, ge=0, le=2)
    """A sighting nearer than this to one of the visitor's samples adds nothing new."""
    visitor_max_samples: int = Field(default=VISITOR_MAX_SAMPLES, ge=1, le=MAX_VISITOR_SAMPLES)
    """Samples a visitor keeps, the minting one included (never displaced); 1 = no learning."""
    visitor_learn_min_face_px: int = Field(default=60, ge=0)
    """Smallest face (``size_px``) learned from; the detector lets faces from 40 px through."""
    visitor_learn_min_sharpness: float = Field(default=10.0, ge=0)
    """Least ``sharpness`` learned from (the detector's gate lets heavy blur down to 4 pass)."""
    # Members learn too, under stricter rules: a confident sighting of a member adds a sample
    # to member-samples.v1, beside (never instead of) the enrolled encodings.
    member_max_learned: int = Field(default=0, ge=0, le=MAX_MEMBER_LEARNED)
    """Learned samples a member keeps besides the enrolled ones; 0 (the default) = members do
    not learn. Off by default: on the simulated store days it gained nothing and added a
    visitor split in 2 of 4 runs (docs/accuracy.md); ``core.policy.MEMBER_MAX_LEARNED`` (3)
    is the cap it was measured with."""
    member_learn_threshold: float = Field(default=MEMBER_LEARN_THRESHOLD, gt=0, le=2)
    """Largest raw distance to the member's nearest sample at which a sighting is learned."""
    member_learn_min_distance: float = Field(default=MEMBER_LEARN_MIN_DISTANCE, ge=0, le=2)
    """A sighting nearer than this to one of the member's samples adds nothing new."""
    member_learn_min_face_px: int = Field(default=80, ge=0)
    """Smallest face (``size_px``) a member learns from."""
    member_learn_min_sharpness: float = Field(default=15.0, ge=0)
    """Least ``sharpness`` a member learns from."""
    visitor_retention_days: int = Field(default=90, ge=0, le=3650)
    """Days an anonymous visitor is kept after it was last seen (event time; members are never
    retired); 0 keeps visitors for ever. The default is the sink's visit history retention
    (``FACESTREAM_SINK_HISTORY_TTL_DAYS``): change the two together (docs/privacy.md)."""
    catch_up_timeout: float = Field(default=5.0, gt=0)
    """Longest wait, before each batch, to read members.v1 and the kept partitions of
    identities.v1 up to their end offsets (so decisions do not depend on read timing); past
    it the batch is decided anyway, and counted."""
    neighbours: dict[str, list[str]] = Field(default_factory=dict)
    """Store -> stores whose visitors it also recognises (JSON: ``{"s1": ["s2"]}``)."""
    max_batch: int = Field(default=100, ge=1, le=10_000)
    matcher_id: str = Field(default_factory=default_matcher_id, min_length=1, max_length=200)
    """Names this process in the heartbeat set and in erasure acknowledgements."""
    group_instance_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Static group membership (KIP-345), as the sink's: a matcher restarted with the same id
    gets its partitions back at once instead of waiting out its dead predecessor's session
    (45 s). One stable id per replica (the StatefulSet pod name); never two live ones alike."""
    startup_timeout: float = Field(default=120.0, gt=0)
    """Longest wait for reading members.v1 at start, or a partition's changelog on assignment;
    past it the matcher stops rather than decide with half its state."""
    heartbeat_seconds: float = Field(default=5.0, gt=0, le=60)
    """How often the matcher tells Redis it is alive (erase waits for live matchers only)."""

    @property
    def snapshots(self) -> SnapshotStore | None:
        """The snapshot store of :attr:`snapshot_dir`; None without one."""
        if self.snapshot_dir is None:
            return None
        return SnapshotStore(self.snapshot_dir, timedelta(hours=self.snapshot_max_age_hours))

    @property
    def visitor_retention(self) -> timedelta | None:
        """:attr:`visitor_retention_days` as a period; None when visitors are kept for ever."""
        return timedelta(days=self.visitor_retention_days) if self.visitor_retention_days else None

    @model_validator(mode="after")
    def _learning_is_stricter(self) -> MatcherSettings:
        # A learned sample must at least be a match, and something must lie between "close
        # enough to learn" and "too close to add anything", or learning silently never happens.
        if self.visitor_learn_threshold > self.visitor_threshold:
            raise ValueError("visitor_learn_threshold must not exceed visitor_threshold")
        if self.visitor_max_samples > 1 and (
            self.visitor_learn_min_distance >= self.visitor_learn_threshold
        ):
            raise ValueError("visitor_learn_min_distance must be below visitor_learn_threshold")
        if self.member_max_learned > 0 and (
            self.member_learn_min_distance >= self.member_learn_threshold
        ):
            raise ValueError("member_learn_min_distance must be below member_learn_threshold")
        return self

    @field_validator("neighbours")
    @classmethod
    def _no_self_neighbours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # A store is always searched; listing it as its own neighbour would search it twice.
        return {
            store: sorted({n for n in near if n and n != store})
            for store, near in value.items()
            if store
        }
