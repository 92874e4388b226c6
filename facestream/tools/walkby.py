"""Walk-by clips: people crossing a camera's view, rendered from still photos, with the truth.

A store's entrance camera sees people walk in, cross the view and leave; some come back a while
later. The shared data has one short real clip and many still photos, so this renders clips from
the photos (LFW layout, ``DIR/<Name>/*.jpg``) and writes, beside each clip, what is in it:

* ``clip.mp4``: the frames (MPEG-4 part 2, which OpenCV writes without extra codecs);
* ``truth.json``: every *pass* (one person crossing the view once): who, from which photo, its
  first and last frame, its direction, and the face's box in every frame where the face is wholly
  in view, marked where another person walks in front of it.

What makes it a test of tracking and re-identification rather than of image copies: each pass
of a person uses a different photo of them; a face grows as the person walks towards the camera
(so its size changes from frame to frame); walking blurs it a little, more in some frames than in
others (a random exposure); two people can be in view at once and cross each other; and the
background carries sensor noise, so no two frames are equal even where nothing moves.

The face boxes come from the face engine run on each source photo, carried through the same
scaling and placement as the pixels: the truth is where the face is, not where a detector on the
clip finds it. Only photos in which the engine finds exactly one face that passes its quality gate
are used. Nothing is copied: the clip is rendered, and the truth names the photos by path.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facestream.core.engine import FaceEngine
from facestream.core.images import ImageError, load_image
from facestream.core.photos import image_files
from facestream.core.splits import Split, person_split
from facestream.schemas.messages import Box

CLIP = "clip.mp4"
TRUTH = "truth.json"
PASSES = "passes.csv"
"""The truth's passes as times (person,enter,leave), the form `facestream eval passes` reads."""


@dataclass(frozen=True)
class ClipPlan:
    """What one clip shows. Sizes are of the face box, in pixels of the clip."""

    people: int = 5
    returning: int = 2
    """Of ``people``, how many cross the view a second time (with another photo)."""
    fps: float = 10.0
    width: int = 640
    height: int = 360
    face_px: tuple[int, int] = (56, 84)
    """The face's width as a person enters, drawn from this range; it grows by ``approach``
    until they leave."""
    approach: float = 1.2
    crossing_seconds: tuple[float, float] = (3.0, 6.0)
    gap_seconds: tuple[float, float] = (0.5, 4.0)
    """Between the starts of consecutive passes (while ``max_in_view`` allows)."""
    return_after_seconds: float = 8.0
    """A second pass starts at least this long after the person's first one ended."""
    max_in_view: int = 2
    split: Split | None = "eval"
    """Only people of this half (:mod:`facestream.core.splits`); None for everyone."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.returning <= self.people or self.people < 1:
            raise ValueError("a clip needs people >= 1 and 0 <= returning <= people")
        if self.fps <= 0 or self.width < 64 or self.height < 64 or self.max_in_view < 1:
            raise ValueError("fps must be positive, the frame at least 64x64, max_in_view >= 1")
        if not 0 < self.face_px[0] <= self.face_px[1] or self.approach < 1:
            raise ValueError("face_px must be a positive (low, high) range and approach >= 1")


@dataclass
class Pass:
    """One person crossing the view once."""

    person: str
    photo: Path
    first_frame: int
    last_frame: int
    left_to_right: bool
    face_px: int
    """The face's width as the person enters."""
    lane: float
    """Height of the face's centre, as a fraction of the frame's."""
    boxes: dict[int, Box] = field(default_factory=dict)
    """Frame -> the face's box, for frames where it is wholly in view."""
    occluded: set[int] = field(default_factory=set)
    """Frames where someone drawn later overlaps the face's box."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "photo": str(self.photo),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "direction": "left_to_right" if self.left_to_right else "right_to_left",
            "boxes": [
                [f, b.top, b.right, b.bottom, b.left, int(f in self.occluded)]
                for f, b in sorted(self.boxes.items())
            ],
        }


@dataclass
class Clip:
    """A rendered clip's plan and truth (what ``truth.json`` holds)."""

    plan: ClipPlan
    frames: int
    passes: list[Pass]

    @property
    def people(self) -> list[str]:
        return sorted({p.person for p in self.passes})

    def as_dict(self) -> dict[str, Any]:
        return {
            "clip": CLIP,
            "fps": self.plan.fps,
            "frames": self.frames,
            "size": [self.plan.width, self.plan.height],
            "seed": self.plan.seed,
            "split": self.plan.split,
            "people": self.people,
            "passes": [p.as_dict() for p in self.passes],
            "box_columns": ["frame", "top", "right", "bottom", "left", "occluded"],
        }


class NotEnoughPhotos(ValueError):
    """The photo folder cannot supply the people the plan asks for."""


@dataclass(frozen=True)
class _Sprite:
    """A head-and-shoulders cut-out of a photo, with a soft oval mask and the face's box in it."""

    pixels: NDArray[np.float32]
    mask: NDArray[np.float32]
    face: Box


def render(images: Path, out: Path, plan: ClipPlan, engine: FaceEngine | None = None) -> Clip:
    """Plan a clip from the people photographed in ``images``, render it to ``out/clip.mp4``
    and write ``out/truth.json`` and ``out/passes.csv``; returns the truth."""
    import cv2  # heavy, and only rendering needs it

    rng = random.Random(plan.seed)
    photos = _people(images, plan, rng, engine or FaceEngine())
    passes = _schedule(plan, photos, rng)
    frames = max(p.last_frame for p in passes) + int(plan.fps)  # a second of empty view at the end
    sprites = {p.photo: _sprite(p.photo, photos.faces[p.photo]) for p in passes}
    background = _background(plan, np.random.default_rng(plan.seed))
    noise = np.random.default_rng(plan.seed + 1)
    out.mkdir(parents=True, exist_ok=True)
    size = (plan.width, plan.height)
    writer = cv2.VideoWriter(str(out / CLIP), cv2.VideoWriter.fourcc(*"mp4v"), plan.fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out / CLIP}")
    try:
        for frame in range(frames):
            canvas = background + noise.normal(0.0, 2.0, background.shape).astype(np.float32)
            drawn: list[tuple[Pass, Box]] = []
            for p in passes:
                if p.first_frame <= frame <= p.last_frame:
                    drawn.append((p, _draw(canvas, p, sprites[p.photo], frame, plan, rng)))
            _mark_occlusions(drawn, frame)
            rgb = np.clip(canvas, 0, 255).astype(np.uint8)
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    clip = Clip(plan, frames, passes)
    (out / TRUTH).write_text(json.dumps(clip.as_dict(), indent=1) + "\n")
    lines = ["person,enter,leave"] + [
        f"{p.person},{p.first_frame / plan.fps:.2f},{p.last_frame / plan.fps:.2f}" for p in passes
    ]
    (out / PASSES).write_text("\n".join(lines) + "\n")
    return clip


# -- who, with which photos ------------------------------------------------------------------


@dataclass
class _Photos:
    by_person: dict[str, list[Path]]
    faces: dict[Path, Box]


def _people(images: Path, plan: ClipPlan, rng: random.Random, engine: FaceEngine) -> _Photos:
    """``plan.people`` people with a usable photo per pass; the returning ones first need two."""
    folders = sorted(
        d
        for d in images.iterdir()
        if d.is_dir() and (plan.split is None or person_split(d.name) == plan.split)
    )
    rng.shuffle(folders)
    found = _Photos({}, {})
    wanted = [2] * plan.returning + [1] * (plan.people - plan.returning)
    for need in wanted:
        for folder in folders:
            if folder.name in found.by_person or len(image_files(folder)) < need:
                continue
            usable = _usable(folder, need, engine, found.faces)
            if len(usable) >= need:
                found.by_person[folder.name] = usable
                break
        else:
            raise NotEnoughPhotos(f"{images}: no more people with {need} usable photo(s)")
    return found


def _usable(folder: Path, need: int, engine: FaceEngine, faces: dict[Path, Box]) -> list[Path]:
    """Up to ``need`` photos of one person with exactly one face that passes the gate."""
    out = []
    for photo in image_files(folder):
        try:
            found = engine.faces(load_image(photo))
        except ImageError:
            continue
        if len(found) == 1 and found[0].encoding is not None:
            faces[photo] = found[0].box
            out.append(photo)
            if len(out) == need:
                break
    return out


# -- when ------------------------------------------------------------------------------------


def _schedule(plan: ClipPlan, photos: _Photos, rng: random.Random) -> list[Pass]:
    """Passes in start order: first passes in a random order, a returning person's second pass
    once ``return_after_seconds`` have gone by, never more than ``max_in_view`` at once."""
    first = list(photos.by_person)
    rng.shuffle(first)
    returns: list[tuple[int, str]] = []  # (earliest frame, person)
    passes: list[Pass] = []
    frame = int(plan.fps)  # a second of empty view first
    while first or returns:
        returns.sort()
        if returns and (returns[0][0] <= frame or not first):
            due, person = returns.pop(0)
            frame = max(frame, due)
            photo = photos.by_person[person][1]
        else:
            person = first.pop(0)
            photo = photos.by_person[person][0]
        in_view = sorted(p.last_frame for p in passes if p.last_frame >= frame)
        if len(in_view) >= plan.max_in_view:
            frame = in_view[len(in_view) - plan.max_in_view] + 1
        length = max(2, round(rng.uniform(*plan.crossing_seconds) * plan.fps))
        p = Pass(
            person=person,
            photo=photo,
            first_frame=frame,
            last_frame=frame + length - 1,
            left_to_right=rng.random() < 0.5,
            face_px=rng.randint(*plan.face_px),
            lane=rng.uniform(0.35, 0.55),
        )
        passes.append(p)
        if len(photos.by_person[person]) > 1 and photo == photos.by_person[person][0]:
            returns.append((p.last_frame + round(plan.return_after_seconds * plan.fps), person))
        frame += max(1, round(rng.uniform(*plan.gap_seconds) * plan.fps))
    return passes


# -- pixels ----------------------------------------------------------------------------------


def _background(plan: ClipPlan, rng: np.random.Generator) -> NDArray[np.float32]:
    """A plain shop interior: a wall with shelves over a floor, the same in every frame."""
    h, w = plan.height, plan.width
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    wall = np.array([196, 188, 170], np.float32) * (1.0 - 0.15 * rows)
    floor = np.array([120, 112, 104], np.float32) * (0.8 + 0.2 * rows)
    image = np.where(rows < 0.7, wall, floor) * np.ones((1, w, 1), np.float32)
    for _ in range(6):
        x0 = int(rng.integers(0, w - 40))
        y0 = int(rng.integers(int(0.1 * h), int(0.6 * h)))
        colour = rng.uniform(60, 200, 3).astype(np.float32)
        image[y0 : y0 + int(rng.integers(20, 60)), x0 : x0 + int(rng.integers(40, 160))] = colour
    return image.astype(np.float32)


def _sprite(photo: Path, face: Box) -> _Sprite:
    """The photo cut to the head and shoulders around ``face``, with an oval, feathered mask."""
    import cv2

    image = load_image(photo).astype(np.float32)
    h, w = image.shape[:2]
    top = max(0, face.top - face.height // 2)
    bottom = min(h, face.bottom + face.height)
    # Narrow at the sides: news photos often show part of someone else beside the subject.
    left = max(0, face.left - face.width * 3 // 10)
    right = min(w, face.right + face.width * 3 // 10)
    pixels = np.ascontiguousarray(image[top:bottom, left:right])
    ch, cw = pixels.shape[:2]
    yy, xx = np.mgrid[0:ch, 0:cw].astype(np.float32)
    # An oval inside the cut-out, feathered, so that no straight photo edge shows.
    inside = ((yy - ch / 2) / (ch * 0.48)) ** 2 + ((xx - cw / 2) / (cw * 0.48)) ** 2 <= 1.0
    mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), max(1.0, cw * 0.03))
    inner = Box(
        top=face.top - top, right=face.right - left, bottom=face.bottom - top, left=face.left - left
    )
    return _Sprite(pixels, mask, inner)


def _draw(
    canvas: NDArray[np.float32],
    p: Pass,
    sprite: _Sprite,
    frame: int,
    plan: ClipPlan,
    rng: random.Random,
) -> Box:
    """Blend the pass's person into ``canvas`` at ``frame``; returns the face's box there (it
    is recorded in the pass only when wholly in view)."""
    import cv2

    progress = (frame - p.first_frame) / max(1, p.last_frame - p.first_frame)
    face_w = p.face_px * (1.0 + (plan.approach - 1.0) * progress)
    scale = face_w / sprite.face.width
    sh, sw = sprite.pixels.shape[:2]
    size = (max(1, round(sw * scale)), max(1, round(sh * scale)))
    pixels = np.asarray(cv2.resize(sprite.pixels, size, interpolation=cv2.INTER_AREA), np.float32)
    mask = np.asarray(cv2.resize(sprite.mask, size, interpolation=cv2.INTER_AREA), np.float32)
    # Walking blurs the person along the way they go, by how far they move while the shutter
    # is open (1/200 s to 1/30 s: a camera's auto exposure indoors).
    speed = (plan.width + 1.2 * size[0]) * plan.fps / max(1, p.last_frame - p.first_frame)
    streak = round(speed * rng.uniform(1 / 200, 1 / 30))
    if streak >= 2:
        kernel = np.full((1, streak), 1.0 / streak, np.float32)
        pixels = np.asarray(cv2.filter2D(pixels, -1, kernel), np.float32)
        mask = np.asarray(cv2.filter2D(mask, -1, kernel), np.float32)
    face_cx = (sprite.face.left + sprite.face.right) / 2 * scale
    face_cy = (sprite.face.top + sprite.face.bottom) / 2 * scale
    start, end = -0.6 * size[0], plan.width + 0.6 * size[0]
    x = start + (end - start) * (progress if p.left_to_right else 1.0 - progress)
    bob = 0.03 * face_w * math.sin(2 * math.pi * 1.8 * frame / plan.fps)
    y = p.lane * plan.height + bob
    left, top = round(x - face_cx), round(y - face_cy)
    _blend(canvas, pixels, mask, left, top)
    box = Box(
        top=top + round(sprite.face.top * scale),
        right=left + round(sprite.face.right * scale),
        bottom=top + round(sprite.face.bottom * scale),
        left=left + round(sprite.face.left * scale),
    )
    if box.left >= 0 and box.top >= 0 and box.right <= plan.width and box.bottom <= plan.height:
        p.boxes[frame] = box
    return Box(top=top, right=left + size[0], bottom=top + size[1], left=left)


def _blend(
    canvas: NDArray[np.float32],
    pixels: NDArray[np.float32],
    mask: NDArray[np.float32],
    left: int,
    top: int,
) -> None:
    """Alpha-blend ``pixels`` into ``canvas`` with its top-left corner at (``left``, ``top``),
    clipped to the canvas."""
    h, w = canvas.shape[:2]
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(h, top + pixels.shape[0]), min(w, left + pixels.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    src = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    alpha = mask[src][..., None]
    canvas[y0:y1, x0:x1] = alpha * pixels[src] + (1.0 - alpha) * canvas[y0:y1, x0:x1]


def _mark_occlusions(drawn: Sequence[tuple[Pass, Box]], frame: int) -> None:
    """A face drawn under a later person's cut-out is marked occluded in that frame."""
    for i, (p, _) in enumerate(drawn):
        face = p.boxes.get(frame)
        if face is None:
            continue
        for _, cover in drawn[i + 1 :]:
            if overlap(face, cover):
                p.occluded.add(frame)
                break


def overlap(a: Box, b: Box) -> bool:
    """Whether two boxes share any pixel."""
    return a.left < b.right and b.left < a.right and a.top < b.bottom and b.top < a.bottom


def load_truth(folder: Path) -> dict[str, Any]:
    """The ``truth.json`` of a rendered clip."""
    truth: dict[str, Any] = json.loads((folder / TRUTH).read_text())
    return truth
