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
class _SampleRule:
    """What visitors and members share: a sighting is learned when it is confident, of good
    quality, the identity has room, and it is not a near-duplicate of a sample held."""

    threshold: float
    min_distance: float
    min_face_px: int
    min_sharpness: float

    def _refusal(
        self, obs: FaceObservation, distance: float | None, held: int, cap: int
    ) -> str | None:
        """The shared checks, in order; ``distance`` is to the identity's nearest sample."""
        if distance is None or distance > self.threshold:
            return "not_confident"
        if obs.size_px < self.min_face_px or obs.sharpness < self.min_sharpness:
            return "quality"
        if held >= cap:
            return "full"
        # Within the minimum, the sighting is a near-duplicate of a sample already held.
        if distance <= self.min_distance:
            return "duplicate"
        return None


@dataclass(frozen=True)
class LearnPolicy(_SampleRule):
    """The rules of :func:`refusal`, from ``FACESTREAM_MATCHER_VISITOR_LEARN_*`` settings."""

    max_samples: int

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
        return self._refusal(obs, match.distance, samples, self.max_samples)


@dataclass(frozen=True)
class MemberLearnPolicy(_SampleRule):
    """When a sighting decided as a member becomes one of the member's learned samples, from
    ``FACESTREAM_MATCHER_MEMBER_*`` settings.

    The visitors' rule, stricter: a member greeted wrongly is the costly error, and a wrong
    learned sample would greet the same stranger again. Learned samples are capped on their
    own (``max_learned``) and never displace the enrolled ones."""

    max_learned: int

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
        return self._refusal(obs, decision.distance, learned, self.max_learned)
