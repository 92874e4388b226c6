"""When a returning visitor's (or a member's) encoding becomes one of their samples.

A visitor minted from one photo is often missed when they come back lit, turned or dressed
differently, and is then minted again: one person counted as two (UV, new and PV inflate).
So a sighting matched *confidently* to a visitor of this store teaches the visitor a sample,
when it is of good quality and different enough from what the visitor already has. The bar is
stricter than the match's own: a wrong sample would merge two strangers for good, and would
teach the next wrong sample in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from facestream.core.gallery import Decision
from facestream.schemas import FaceObservation
from facestream.services.matcher.settings import MatcherSettings
from facestream.services.matcher.shards import VisitorMatch


@dataclass(frozen=True)
class LearnPolicy:
    """The rules of :func:`refusal`, from ``FACESTREAM_MATCHER_VISITOR_LEARN_*`` settings."""

    threshold: float
    min_distance: float
    max_samples: int
    min_face_px: int
    min_sharpness: float

    @classmethod
    def from_settings(cls, settings: MatcherSettings) -> LearnPolicy:
        """The policy that ``settings`` configure."""
        return cls(
            threshold=settings.visitor_learn_threshold,
            min_distance=settings.visitor_learn_min_distance,
            max_samples=settings.visitor_max_samples,
            min_face_px=settings.visitor_learn_min_face_px,
            min_sharpness=settings.visitor_learn_min_sharpness,
        )

    def refusal(self, obs: FaceObservation, match: VisitorMatch, samples: int) -> str | None:
        """Why ``obs``, matched as ``match`` to a visitor holding ``samples`` samples, is not
        learned (a bounded metric label), or None when it is.

        The margin is not checked again: a match has already beaten the nearest other visitor
        by the configured margin."""
        if self.max_samples <= 1:
            return "off"
        if match.store_id != obs.store_id:
            # A neighbour's visitors belong to the matcher that owns the neighbour's partition:
            # it alone writes their records.
            return "neighbour"
        if match.distance > self.threshold:
            return "not_confident"
        if obs.size_px < self.min_face_px or obs.sharpness < self.min_sharpness:
            return "quality"
        if samples >= self.max_samples:
            return "full"
        # The match distance is the one to the visitor's nearest sample: within the minimum,
        # the sighting is a near-duplicate of a sample already held.
        if match.distance <= self.min_distance:
            return "duplicate"
        return None


@dataclass(frozen=True)
class MemberLearnPolicy:
    """When a sighting decided as a member becomes one of the member's learned samples, from
    ``FACESTREAM_MATCHER_MEMBER_*`` settings.

    The visitors' rule, stricter: a member greeted wrongly is the costly error, and a wrong
    learned sample would greet the same stranger again. Learned samples are capped on their
    own (``max_learned``) and never displace the enrolled ones."""

    threshold: float
    min_distance: float
    max_learned: int
    min_face_px: int
    min_sharpness: float

    @classmethod
    def from_settings(cls, settings: MatcherSettings) -> MemberLearnPolicy:
        """The policy that ``settings`` configure."""
        return cls(
            threshold=settings.member_learn_threshold,
            min_distance=settings.member_learn_min_distance,
            max_learned=settings.member_max_learned,
            min_face_px=settings.member_learn_min_face_px,
            min_sharpness=settings.member_learn_min_sharpness,
        )

    def refusal(self, obs: FaceObservation, decision: Decision, learned: int) -> str | None:
        """Why ``obs``, decided as the member of ``decision`` who holds ``learned`` learned
        samples, is not learned (a bounded metric label), or None when it is. The decision's
        distance is the raw one to the member's nearest sample, enrolled or learned."""
        if self.max_learned <= 0:
            return "off"
        if decision.distance is None or decision.distance > self.threshold:
            return "not_confident"
        if obs.size_px < self.min_face_px or obs.sharpness < self.min_sharpness:
            return "quality"
        if learned >= self.max_learned:
            return "full"
        if decision.distance <= self.min_distance:
            return "duplicate"
        return None
