"""Where to run the face detector on one camera's frames: nowhere when nothing moved, near the
faces already followed before the whole frame.

Detection is most of a video frame's cost once a tracker encodes only a few frames of each face
(:mod:`facestream.core.tracking`): HOG over a whole frame, upsampled (docs/video.md has what it
costs here), while a store camera mostly shows an empty entrance or the same few people. A
:class:`DetectionScheduler` decides per frame, in event time, what to search:

* **Motion test**: the frame is reduced to block means about ``motion_width`` pixels wide, in
  grey, and compared with the reference frame (the one analysed up to ``reference_seconds``
  earlier; comparing with the frame just before would miss a slow walker at 30 fps). A cell of
  the grid moved when enough of its pixels changed by more than the sensor noise.
* **Nothing moved and no track open**: no detection at all. Nobody can have come in.
* **Tracks open**: the detector searches a crop around each track's expected face box (its last
  box moved on by its velocity, grown by ``margin``), at the same scale as the whole frame, so a
  face found there has the box the full frame would give. The whole frame is searched when
  something moved outside the tracked people (their faces' crops, and their bodies below), at
  most every ``min_full_seconds``, and at least every ``full_every_seconds`` while anything
  moved: a newcomer is found within that delay even where they walk next to someone followed.

Nothing here reads the clock or keeps more than the reference frame: the same frames give the
same decisions, live or replayed. ``benchmarks/video/regions.py`` measures what each step saves
and what it costs in faces found (docs/video.md, "Detection where it is needed").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from facestream.core.engine import Candidate, FaceEngine
from facestream.core.images import RGBImage
from facestream.schemas.messages import Box

_EPS = 1e-6
"""Slack on event-time comparisons: frame times are fractions (frame / fps) that do not add up
exactly, and 0.7 - 0.5 must count as the 0.2 s it is."""


@dataclass(frozen=True)
class ScheduleConfig:
    """What a camera's detector skips, and how soon it looks at the whole frame again."""

    motion: bool = True
    """Test frames for motion (False: every frame counts as moved, so nothing is skipped)."""
    near_tracks: bool = True
    """With tracks open, search near them and the whole frame only as below (False: the whole
    frame every time something is searched)."""
    motion_width: int = 160
    """The motion test runs on the frame reduced by block means to about this width: cheap,
    and averaging a block takes the sensor noise out."""
    cell: int = 8
    """Side of a motion cell, in pixels of the reduced frame (32 px of a 640 px frame)."""
    pixel_threshold: float = 12.0
    """A reduced pixel changed when its grey level moved by more than this (of 255)."""
    min_changed: float = 0.05
    """A cell moved when at least this fraction of its pixels changed."""
    reference_seconds: float = 0.2
    """How long a reference frame is kept for the motion test."""
    margin: float = 1.0
    """A track's crop is its expected face box grown by this many face sizes on each side: room
    for a change of pace, and the context HOG needs around a face."""
    body_heights: float = 3.0
    """Motion this many face heights below a track's crop is its body, not a newcomer."""
    min_full_seconds: float = 0.2
    """Motion outside the tracked people searches the whole frame at most this often."""
    full_every_seconds: float = 1.0
    """With tracks open and anything moving, the whole frame is searched at least this often."""

    def __post_init__(self) -> None:
        if self.motion_width < 8 or self.cell < 1 or not 0 < self.min_changed <= 1:
            raise ValueError("motion_width >= 8, cell >= 1 and min_changed in (0, 1]")
        if self.margin < 0 or self.body_heights < 0 or self.reference_seconds < 0:
            raise ValueError("margin, body_heights and reference_seconds must not be negative")
        if not 0 <= self.min_full_seconds <= self.full_every_seconds:
            raise ValueError("0 <= min_full_seconds <= full_every_seconds")


@dataclass(frozen=True)
class Scan:
    """What the scheduler searched in one frame, and the faces it found there."""

    at: float
    full: bool
    """The whole frame was searched."""
    regions: tuple[Box, ...]
    """The crops searched instead (empty when the whole frame was, or nothing)."""
    searched_px: int
    """Pixels the detector ran over: the frame's, the crops', or 0."""
    moved_cells: int
    """Cells of the motion grid that moved (0 when no test ran: disabled, or no reference)."""
    candidates: list[Candidate]

    @property
    def skipped(self) -> bool:
        """No detection ran on this frame."""
        return not self.full and not self.regions


def search_region(box: Box, margin: float, width: int, height: int) -> Box:
    """``box`` grown by ``margin`` times its larger side on each side, clipped to the frame."""
    grow = math.ceil(margin * max(box.width, box.height))
    return Box(
        top=max(0, box.top - grow),
        right=min(width, box.right + grow),
        bottom=min(height, box.bottom + grow),
        left=max(0, box.left - grow),
    )


def merge_regions(boxes: Sequence[Box]) -> list[Box]:
    """Overlapping boxes joined into their bounding box, until none overlap: the detector then
    searches no pixel twice and finds no face twice (two people walking side by side)."""
    out = list(boxes)
    joined = True
    while joined:
        joined = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a.left < b.right and b.left < a.right and a.top < b.bottom and b.top < a.bottom:
                    out[i] = Box(
                        top=min(a.top, b.top),
                        right=max(a.right, b.right),
                        bottom=max(a.bottom, b.bottom),
                        left=min(a.left, b.left),
                    )
                    del out[j]
                    joined = True
                    break
            if joined:
                break
    return out


class DetectionScheduler:
    """Decides what to search in each frame of one camera, searches it with the engine and
    returns the faces (:meth:`scan`). Frames must come in event-time order."""

    def __init__(self, engine: FaceEngine, config: ScheduleConfig | None = None) -> None:
        self.engine = engine
        self.config = config or ScheduleConfig()
        self._reference: NDArray[np.float32] | None = None
        self._reference_at = float("-inf")
        self._last_full = float("-inf")
        self._moved_since_full = False
        self._last_at: float | None = None
        self._cell_px = 1
        """Frame pixels per side of a motion cell (set by the motion test from the frame width)."""

    def scan(self, at: float, image: RGBImage, tracks: Sequence[Box]) -> Scan:
        """Search the frame at event time ``at`` (seconds) given the expected face boxes of
        the camera's open ``tracks`` (:meth:`Tracker.expected_boxes
        <facestream.core.tracking.Tracker.expected_boxes>`); returns what was searched and
        the faces found, gated on quality as :meth:`FaceEngine.candidates` gates them."""
        if self._last_at is not None and at < self._last_at:
            raise ValueError(f"frames out of order: {at} after {self._last_at}")
        self._last_at = at
        cfg = self.config
        h, w = image.shape[:2]
        moving = self._motion(at, image) if cfg.motion else None
        moved = moving is None or bool(moving.any())
        self._moved_since_full |= moved
        since_full = at - self._last_full + _EPS
        regions: list[Box] = []
        if not tracks:
            full = moved
        elif not cfg.near_tracks:
            full = True
        else:
            # A track whose face has moved out of the frame (it expires soon) needs no crop.
            crops = [(search_region(b, cfg.margin, w, h), b) for b in tracks]
            crops = [(c, b) for c, b in crops if c.width > 0 < c.height]
            regions = merge_regions([c for c, _ in crops])
            # A followed person's body moves below their face: not a newcomer.
            zones = [
                Box(
                    top=c.top,
                    right=c.right,
                    bottom=c.bottom + round(cfg.body_heights * b.height),
                    left=c.left,
                )
                for c, b in crops
            ]
            outside = moving is None or bool((moving & ~self._covered(zones, moving)).any())
            full = (outside and since_full >= cfg.min_full_seconds) or (
                self._moved_since_full and since_full >= cfg.full_every_seconds
            )
        moved_cells = int(moving.sum()) if moving is not None else 0
        if full:
            self._last_full, self._moved_since_full = at, False
            return Scan(at, True, (), w * h, moved_cells, self.engine.candidates(image))
        if not regions:
            return Scan(at, False, (), 0, moved_cells, [])
        area = sum(r.width * r.height for r in regions)
        found = self.engine.candidates_in(image, regions)
        return Scan(at, False, tuple(regions), area, moved_cells, found)

    # -- motion ------------------------------------------------------------------------------

    def _motion(self, at: float, image: RGBImage) -> NDArray[np.bool_] | None:
        """The cells that moved since the reference frame (None: no comparable reference, so
        everything counts as moved); renews the reference when it is old enough."""
        cfg = self.config
        f = max(1, image.shape[1] // cfg.motion_width)
        self._cell_px = f * cfg.cell
        h, w = (image.shape[0] // f) * f, (image.shape[1] // f) * f
        grey = image[:h, :w].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        small = grey.reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        reference = self._reference
        if reference is None or reference.shape != small.shape:
            self._reference, self._reference_at = small, at
            return None
        if at - self._reference_at + _EPS >= cfg.reference_seconds:
            self._reference, self._reference_at = small, at
        changed = np.abs(small - reference) > cfg.pixel_threshold
        rows, cols = -(-changed.shape[0] // cfg.cell), -(-changed.shape[1] // cfg.cell)
        padded = np.zeros((rows * cfg.cell, cols * cfg.cell), bool)
        padded[: changed.shape[0], : changed.shape[1]] = changed
        counts = padded.reshape(rows, cfg.cell, cols, cfg.cell).sum(axis=(1, 3))
        moving: NDArray[np.bool_] = counts >= cfg.min_changed * cfg.cell * cfg.cell
        return moving

    def _covered(self, zones: Sequence[Box], grid: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """The cells of ``grid`` that ``zones`` (boxes in frame pixels) touch."""
        step = self._cell_px
        covered = np.zeros_like(grid)
        for z in zones:
            covered[
                z.top // step : math.ceil(z.bottom / step),
                z.left // step : math.ceil(z.right / step),
            ] = True
        return covered
