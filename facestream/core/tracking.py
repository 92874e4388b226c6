"""Face tracks on one camera's frames: each person's pass through the view becomes one sighting,
encoded from a few of its best frames instead of from every frame.

A camera at 5-10 frames per second sees a person walking through the door in 20-60 frames.
Encoding every one costs about 77 ms of a core per face (docs/pipeline-benchmarks.md) and sends
the matcher as many observations of one visit. A :class:`Tracker` follows the faces instead:

* **Association** on boxes: a face in a new frame continues the track whose last box (moved on by
  the track's recent velocity) it overlaps most, greedily from the best overlap down. Where boxes
  are ambiguous (one face overlapping two tracks, as two people cross), the face is encoded and
  goes to the track whose encodings it is nearest.
* **Best frames**: every face is scored (:func:`utility`: larger, sharper and more confidently
  detected is better; cut by the frame's edge, much worse). A track encodes its first face that
  passes the quality gate, and later only a face wholly in view that beats the best it has
  encoded by ``min_gain``, up to ``max_encodings``: a person walking towards the camera gets
  larger, so the last encodings tend to be the best.
* **Identity checks**: boxes alone can hand a track to someone else (one person leaves by the
  edge where another comes in). So a track also encodes a face every ``check_seconds``, and
  every encoding after the first is compared with the track's: one farther than
  ``split_distance`` ends the track there (its sighting is published) and starts a new one
  with that face. A wrong split costs little (the matcher finds the same person twice, within
  one visit); a missed one loses a person's pass, so the distance is strict.
* **One sighting per pass**, published when the track has not been seen for ``max_gap_seconds``,
  or after ``max_open_seconds`` in view (a person standing at the counter is reported every so
  often, not only when they leave, so latency stays bounded); the sink joins such sightings
  into one visit (its visit gap). A sighting's encoding is the mean of the track's
  ``aggregate`` best encodings (those at least half as good as the best: a face cut by the edge
  is left out when there is a whole one).

No library does this here: the association needs the face encodings on ambiguous boxes, and
the trackers for people and cars (SORT and its descendants: Kalman filters on boxes, scipy or
lap for the assignment) solve a harder problem (dozens of objects, long occlusions) with more
dependencies than a few faces per frame need. Everything is in event time (seconds, from the
frames' timestamps), so a replay of the same frames gives the same sightings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from facestream.core.engine import Candidate, Encoding, Quality
from facestream.schemas.messages import Box

Encoder = Callable[[Sequence[Candidate]], list[Encoding]]
"""Encodes faces of the frame being handled (the tracker asks only for those it needs)."""


@dataclass(frozen=True)
class TrackConfig:
    """How faces are followed and how many frames of each are encoded."""

    min_iou: float = 0.15
    """Least overlap of a face with a track's expected box for it to continue the track."""
    max_gap_seconds: float = 1.0
    """A track not seen for this long has left the view: its sighting is published."""
    max_open_seconds: float = 10.0
    """A track in view this long is published anyway and goes on as a new pass."""
    max_encodings: int = 4
    """Most faces encoded per pass (the first good one, then only better ones)."""
    min_gain: float = 1.15
    """A later face is encoded only when its utility beats the best encoded one by this factor."""
    aggregate: int = 3
    """The sighting's encoding is the mean of this many of the best encoded faces."""
    check_seconds: float = 2.0
    """A track encodes a face at least this often, to check it is still the same person."""
    split_distance: float = 0.5
    """An encoding this far from the track's (dlib's unit; one person's frames are mostly
    within 0.4 of each other, different people mostly beyond 0.6) starts a new track."""

    def __post_init__(self) -> None:
        if not 0 < self.min_iou < 1 or self.max_gap_seconds <= 0 or self.max_open_seconds <= 0:
            raise ValueError("min_iou in (0, 1) and positive max_gap / max_open seconds")
        if self.max_encodings < 1 or not 1 <= self.aggregate <= self.max_encodings:
            raise ValueError("max_encodings >= 1 and 1 <= aggregate <= max_encodings")
        if self.min_gain < 1 or self.check_seconds <= 0 or self.split_distance <= 0:
            raise ValueError("min_gain >= 1, positive check_seconds and split_distance")


def utility(quality: Quality, cut: bool = False) -> float:
    """How good a face is to encode: its size (up to 150 px, beyond which dlib's 150 px chip
    gains nothing), times its sharpness (up to 60, a clear face; the gate refuses below 4),
    times the detector's confidence (HOG scores frontal faces higher); a face ``cut`` by the
    frame's edge (its box touches it: a person entering or leaving) counts a quarter."""
    size = min(quality.size_px, 150) / 150
    sharp = min(quality.sharpness, 60.0) / 60
    confidence = float(np.clip(0.5 + quality.score / 2, 0.25, 1.5))
    return size * sharp * confidence * (0.25 if cut else 1.0)


def cut_by_edge(box: Box, frame: tuple[int, int] | None) -> bool:
    """Whether ``box`` touches the edge of a ``(width, height)`` frame (None: unknown)."""
    if frame is None:
        return False
    width, height = frame
    return box.left <= 0 or box.top <= 0 or box.right >= width or box.bottom >= height


@dataclass
class EncodedFace:
    """A face of a track that was encoded: when, where, how good."""

    at: float
    box: Box
    quality: Quality
    utility: float
    encoding: Encoding
    cut: bool
    """The face was cut by the frame's edge: its encoding is a poor description."""
    frame_id: str = ""
    """The frame it was found in, as given to :meth:`Tracker.update` (empty when none was)."""
    face_index: int = -1
    """Its place among that frame's faces as given to :meth:`Tracker.update`."""
    detector: str = ""
    """The detector that found it (the candidate's)."""


@dataclass
class Sighting:
    """One pass of one face through the view: what the detector publishes as an observation."""

    track: int
    pass_index: int
    """0 for the first sighting of the track, 1... for those published after max_open."""
    first_seen: float
    last_seen: float
    frames: int
    """Frames the face was detected in during this pass."""
    encodings: list[EncodedFace]
    """Every face encoded during this pass, in time order."""
    aggregate: int

    @property
    def best(self) -> list[EncodedFace]:
        """The encodings the sighting's encoding averages, best first: up to ``aggregate``,
        each at least half as good as the best."""
        ranked = sorted(self.encodings, key=lambda e: -e.utility)[: self.aggregate]
        return [e for e in ranked if e.utility >= ranked[0].utility / 2]

    @property
    def encoding(self) -> Encoding:
        """The mean of the best encodings."""
        mean: Encoding = np.mean([e.encoding for e in self.best], axis=0).astype(np.float32)
        return mean

    @property
    def representative(self) -> EncodedFace:
        """The best encoded face: its box, time and quality describe the sighting."""
        return self.best[0]


@dataclass
class _Track:
    id: int
    first_seen: float
    last_seen: float
    box: Box
    velocity: tuple[float, float] = (0.0, 0.0)
    """Pixels per second of the box's centre, from its last two boxes."""
    frames: int = 1
    pass_index: int = 0
    encodings: list[EncodedFace] = field(default_factory=list)
    checked: float = float("-inf")
    """When a face of the track was last encoded."""
    seen_before: float = 0.0
    """The frame before ``last_seen`` in which the face was seen."""

    def expected(self, at: float) -> Box:
        """The box moved on by the track's velocity to time ``at``."""
        dt = at - self.last_seen
        dx, dy = round(self.velocity[0] * dt), round(self.velocity[1] * dt)
        b = self.box
        return Box(top=b.top + dy, right=b.right + dx, bottom=b.bottom + dy, left=b.left + dx)

    def mean(self) -> Encoding | None:
        """The mean of its encodings at least half as good as the best (None: none yet)."""
        if not self.encodings:
            return None
        best = self.best_utility()
        good = [e.encoding for e in self.encodings if e.utility >= best / 2]
        mean: Encoding = np.mean(good, axis=0).astype(np.float32)
        return mean

    def best_utility(self) -> float:
        return max((e.utility for e in self.encodings), default=0.0)

    def follow(self, at: float, box: Box) -> None:
        dt = at - self.last_seen
        if dt > 0:
            (x0, y0), (x1, y1) = _centre(self.box), _centre(box)
            self.velocity = ((x1 - x0) / dt, (y1 - y0) / dt)
        self.box, self.seen_before, self.last_seen = box, self.last_seen, at
        self.frames += 1


class Tracker:
    """The tracks of one camera. Feed it each frame's faces in time order (:meth:`update`);
    it returns the sightings that frame completed. :meth:`flush` ends every open track."""

    def __init__(self, config: TrackConfig | None = None) -> None:
        self.config = config or TrackConfig()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_at: float | None = None
        self._frame: tuple[int, int] | None = None
        """The size of the frame being handled."""
        self._frame_id = ""
        self._indices: dict[int, int] = {}
        """The place of each face (by object id) among the faces of the frame being handled."""
        self.encoded = 0
        """Faces encoded so far (the cost the tracker saves is frames minus this)."""

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    @property
    def open_seen(self) -> float | None:
        """The earliest time an open pass was last seen, or None: no pass open now ends
        before it (a pass ends at its last sighting, which only moves on; one split off a
        track ends at the sighting before the one that split it, which is later still)."""
        return min((t.last_seen for t in self._tracks), default=None)

    def expected_boxes(self, at: float) -> list[Box]:
        """Where each open track's face should be at ``at`` (its last box moved on by its
        velocity): where a detector looks first (:mod:`facestream.core.regions`)."""
        return [t.expected(at) for t in self._tracks]

    def update(
        self,
        at: float,
        faces: Sequence[Candidate],
        encode: Encoder,
        frame: tuple[int, int] | None = None,
        frame_id: str = "",
    ) -> list[Sighting]:
        """Take one frame's faces at event time ``at`` (seconds); ``encode`` encodes faces of
        this frame on demand; ``frame`` is its ``(width, height)``, so that faces cut by its
        edge count less; ``frame_id`` names it in the encoded faces (with each face's place
        in ``faces``). Returns the sightings of tracks that ended by ``at``."""
        if self._last_at is not None and at < self._last_at:
            raise ValueError(f"frames out of order: {at} after {self._last_at}")
        self._last_at = at
        done = self._expire(at)
        self._frame = frame
        self._frame_id = frame_id
        self._indices = {id(face): i for i, face in enumerate(faces)}
        assigned = self._associate(at, faces, encode)
        # Which faces to encode: a new track's first good face, a better face of an old one.
        wanted: list[tuple[_Track, Candidate]] = []
        for track, face, encoded in assigned:
            if encoded is not None:
                done += self._keep(track, at, face, encoded)
            elif face.quality.passed and self._worth_encoding(track, face, at):
                wanted.append((track, face))
        if wanted:
            encodings = self._encode_faces(encode, [face for _, face in wanted])
            for (track, face), enc in zip(wanted, encodings, strict=True):
                done += self._keep(track, at, face, enc)
        return done + self._split_long(at)

    def flush(self) -> list[Sighting]:
        """End every open track (the stream ended): their sightings, oldest first."""
        done = [self._sighting(t) for t in self._tracks if t.encodings]
        self._tracks.clear()
        return done

    # -- internals ---------------------------------------------------------------------------

    def _expire(self, at: float) -> list[Sighting]:
        gone = [t for t in self._tracks if at - t.last_seen > self.config.max_gap_seconds]
        self._tracks = [t for t in self._tracks if t not in gone]
        return [self._sighting(t) for t in gone if t.encodings]

    def _split_long(self, at: float) -> list[Sighting]:
        """Publish tracks open for max_open_seconds; each goes on as its next pass."""
        out = []
        for t in self._tracks:
            if at - t.first_seen >= self.config.max_open_seconds and t.encodings:
                out.append(self._sighting(t))
                t.first_seen, t.frames, t.encodings = at, 0, []
                t.pass_index += 1
        return out

    def _associate(
        self, at: float, faces: Sequence[Candidate], encode: Encoder
    ) -> list[tuple[_Track, Candidate, Encoding | None]]:
        """Each face with its track (new ones for faces that continue none), and the face's
        encoding where it had to be computed to settle an ambiguity."""
        expected = [t.expected(at) for t in self._tracks]
        overlaps = [
            (iou(face.box, box), f, t)
            for f, face in enumerate(faces)
            for t, box in enumerate(expected)
        ]
        candidates = sorted((o for o in overlaps if o[0] >= self.config.min_iou), reverse=True)
        contested = {
            f
            for f in range(len(faces))
            if sum(1 for _, ff, _ in candidates if ff == f) > 1
            and all(self._tracks[t].encodings for _, ff, t in candidates if ff == f)
        }
        encodings: dict[int, Encoding] = {}
        if contested:
            order = sorted(contested)
            encodings = dict(
                zip(order, self._encode_faces(encode, [faces[f] for f in order]), strict=True)
            )
            candidates = self._by_encoding(candidates, encodings)
        taken_faces: set[int] = set()
        taken_tracks: set[int] = set()
        out: list[tuple[_Track, Candidate, Encoding | None]] = []
        for _, f, t in candidates:
            if f in taken_faces or t in taken_tracks:
                continue
            taken_faces.add(f)
            taken_tracks.add(t)
            track = self._tracks[t]
            track.follow(at, faces[f].box)
            out.append((track, faces[f], encodings.get(f)))
        for f, face in enumerate(faces):
            if f not in taken_faces:
                track = _Track(self._next_id, at, at, face.box)
                self._next_id += 1
                self._tracks.append(track)
                out.append((track, face, encodings.get(f)))
        return out

    def _by_encoding(
        self, candidates: list[tuple[float, int, int]], encodings: dict[int, Encoding]
    ) -> list[tuple[float, int, int]]:
        """Re-rank the contested faces' pairs by encoding distance (nearest first), ahead of
        the pairs decided on boxes alone."""
        settled = []
        contested = []
        for overlap, f, t in candidates:
            if f in encodings:
                mean = self._tracks[t].mean()
                assert mean is not None
                distance = float(np.linalg.norm(encodings[f] - mean))
                contested.append((distance, f, t))
            else:
                settled.append((overlap, f, t))
        contested.sort()
        # Decided first, so that a contested face takes the track it resembles.
        return [(2.0 - d, f, t) for d, f, t in contested] + settled

    def _worth_encoding(self, track: _Track, face: Candidate, at: float) -> bool:
        if not track.encodings:
            return True
        if cut_by_edge(face.box, self._frame):
            # Entering or leaving: other frames show more of the face.
            return False
        if at - track.checked >= self.config.check_seconds:
            return True
        if len(track.encodings) >= self.config.max_encodings:
            return False
        return self._utility(face) > self.config.min_gain * track.best_utility()

    def _keep(
        self, track: _Track, at: float, face: Candidate, encoding: Encoding
    ) -> list[Sighting]:
        """Keep an encoded face of ``track`` if it is among its best; first, when it is not
        the track's person, end the track and start another with it (returns the sighting
        that ended)."""
        track.checked = at
        mean = track.mean()
        # Only a whole face is a reference: one cut by the edge encodes too little of it.
        whole = any(not e.cut for e in track.encodings)
        if (
            mean is not None
            and whole
            and np.linalg.norm(encoding - mean) > self.config.split_distance
        ):
            return self._split(track, at, face, encoding)
        self._add(track, at, face, encoding)
        return []

    def _add(self, track: _Track, at: float, face: Candidate, encoding: Encoding) -> None:
        if not face.quality.passed:
            return  # encoded to settle an ambiguity, but not good enough to describe the face
        if len(track.encodings) >= self.config.max_encodings:
            worst = min(range(len(track.encodings)), key=lambda i: track.encodings[i].utility)
            if track.encodings[worst].utility >= self._utility(face):
                return
            del track.encodings[worst]
        track.encodings.append(
            EncodedFace(
                at,
                face.box,
                face.quality,
                self._utility(face),
                encoding,
                cut_by_edge(face.box, self._frame),
                self._frame_id,
                self._indices.get(id(face), -1),
                face.detector,
            )
        )

    def _split(
        self, track: _Track, at: float, face: Candidate, encoding: Encoding
    ) -> list[Sighting]:
        """The face is someone else's: the track's pass ends before this frame, and the face
        goes on as a new track (same place in the list, so association order is kept)."""
        ended = self._sighting(track)
        # This frame's face was counted on the track; it is not theirs.
        ended.frames, ended.last_seen = ended.frames - 1, track.seen_before
        track.id, self._next_id = self._next_id, self._next_id + 1
        track.first_seen, track.frames, track.pass_index = at, 1, 0
        track.encodings = []
        track.velocity = (0.0, 0.0)
        self._add(track, at, face, encoding)
        return [ended]

    def _utility(self, face: Candidate) -> float:
        return utility(face.quality, cut_by_edge(face.box, self._frame))

    def _encode_faces(self, encode: Encoder, faces: Sequence[Candidate]) -> list[Encoding]:
        self.encoded += len(faces)
        return encode(faces)

    def _sighting(self, track: _Track) -> Sighting:
        return Sighting(
            track=track.id,
            pass_index=track.pass_index,
            first_seen=track.first_seen,
            last_seen=track.last_seen,
            frames=track.frames,
            encodings=sorted(track.encodings, key=lambda e: e.at),
            aggregate=self.config.aggregate,
        )


def _centre(box: Box) -> tuple[float, float]:
    return (box.left + box.right) / 2, (box.top + box.bottom) / 2


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    w = min(a.right, b.right) - max(a.left, b.left)
    h = min(a.bottom, b.bottom) - max(a.top, b.top)
    inter = max(0, w) * max(0, h)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0
