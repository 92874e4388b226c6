"""The member tier: every enrolled member, mirrored from ``members.v1`` into one gallery.

Replicated, not sharded: every matcher holds all members, so a member is recognised in any store
(see docs on Scale for when this should become hash-sharded). A :class:`MemberRecord` replaces
the member's samples; a tombstone erases the member from the gallery and its index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from numpy.typing import NDArray

from facestream.core.gallery import Decision, Gallery, GalleryConfig, Identity
from facestream.core.policy import Judge, Policy
from facestream.runtime.runner import KafkaRecord
from facestream.schemas import MemberRecord, SchemaError, decode
from facestream.services.matcher import metrics
from facestream.services.matcher.changelog import ChangelogReader, is_recent

log = logging.getLogger(__name__)


class MemberTier:
    """A gallery of members kept equal to ``members.v1``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        config: GalleryConfig,
        on_erased: Callable[[str], None],
        client_id: str,
    ) -> None:
        self.topic = topic
        self.gallery = Gallery(config)
        self.judge: Judge | None = None
        self._on_erased = on_erased
        self._partitions: list[int] = []
        self.reader = ChangelogReader(bootstrap, topic, self._apply, client_id=client_id)

    def start(self, timeout: float) -> int:
        """Read every member (to the end offsets of now); returns how many records were read.

        ``members.v1`` has one partition by design; any others are read as well, so that a
        topic created differently still gives every matcher every member."""
        started = time.perf_counter()
        partitions = self._partitions = self.reader.partitions(timeout)
        self.reader.assign(partitions)
        self.reader.rewind(partitions)
        count = self.reader.catch_up(partitions, timeout)
        elapsed = time.perf_counter() - started
        metrics.REBUILD.labels("member").observe(elapsed)
        metrics.IDENTITIES.labels("member").set(len(self.gallery))
        log.info(
            "members read from %s: %d records, %d members, %d samples in %.2f s",
            self.topic,
            count,
            len(self.gallery),
            self.gallery.sample_count,
            elapsed,
        )
        return count

    def poll(self) -> int:
        """Apply the updates that have arrived since the last call (never waits)."""
        applied = self.reader.poll(timeout_ms=0)
        if applied:
            metrics.IDENTITIES.labels("member").set(len(self.gallery))
        return applied

    def catch_up(self, timeout: float) -> int:
        """Apply every update up to the end offsets of now (raises
        :class:`~.changelog.ChangelogError` past ``timeout``); returns the records applied."""
        applied = self.reader.catch_up(self._partitions, timeout)
        if applied:
            metrics.IDENTITIES.labels("member").set(len(self.gallery))
        return applied

    def identify(self, vector: NDArray[Any]) -> Decision:
        """Who ``vector`` is among the members (the normalised policy when one is set)."""
        if self.judge is not None:
            return self.judge.judge(vector).decision
        return self.gallery.identify(vector)

    def use_policy(self, policy: Policy, cohorts: Sequence[Gallery] = ()) -> None:
        """Decide with the normalised ``policy``, against the other members and ``cohorts``."""
        self.judge = Judge(policy, self.gallery, cohorts)

    def close(self) -> None:
        self.reader.close()

    def _apply(self, record: KafkaRecord) -> None:
        # Log lines name no place: the reader applies each record inside its log context.
        try:
            member_id = record.key.decode() if record.key else ""
        except UnicodeDecodeError:
            member_id = ""
        if not member_id:
            metrics.SKIPPED.labels("member", "bad_key").inc()
            log.warning("member record without a usable key; skipped")
            return
        if record.value is None:
            if member_id in self.gallery:
                self.gallery.remove(member_id)
                metrics.ERASURES.labels("member").inc()
                log.info("member %s erased", member_id)
            if is_recent(record):
                self._on_erased(member_id)
            return
        try:
            member = decode(MemberRecord, record.value)
        except SchemaError as exc:
            # The previous version of the member (if any) stays: better than losing them.
            metrics.SKIPPED.labels("member", exc.reason).inc()
            log.error("member record %s does not decode: %s; skipped", member_id, exc)
            return
        if member.member_id != member_id:
            metrics.SKIPPED.labels("member", "key_mismatch").inc()
            log.error("member record: key %s, body %s; skipped", member_id, member.member_id)
            return
        # A new record is the member's whole sample set: replace, never merge.
        if member_id in self.gallery:
            self.gallery.remove(member_id)
        self.gallery.add(Identity(member_id, member.name, "member"), member.vectors)
        log.debug("member %s: %d samples", member_id, len(member.encodings))
