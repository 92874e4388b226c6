"""Milliseconds per frame to decode, detect and encode faces, by frame size and detector setting.

Frames are built from the photos in ``$FACESTREAM_DATASETS/multi-face`` (default
``../shared/datasets`` next to the project): ``obama-1080p.jpg`` for one face, and
``two_people.jpg`` beside ``obama_and_biden.jpg`` on a 16:9 canvas for four; each is resized to
240p, 480p, 720p and 1080p and stored as JPEG, as a camera would send it; a frame with no face
shows what an empty frame costs (the fallbacks run on it when it is small). Then the cost of each
detection fallback, on a few LFW portraits and on a frame with no face. Run from the project
root::

    .venv/bin/python -m benchmarks.engine.__main__ --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import fmt, jpeg, machine, markdown_table, median
from facestream.core.datasets import datasets_root
from facestream.core.engine import ALL_FALLBACKS, EngineConfig, FaceEngine
from facestream.core.images import RGBImage, load_image

log = logging.getLogger("bench_engine")

HEIGHTS = (240, 480, 720, 1080)
NO_DOWNSCALE = 1_000_000
DETECT_SIDES = (NO_DOWNSCALE, EngineConfig().max_detect_side, 640)
JPEG_QUALITY = 90


def datasets() -> Path:
    return datasets_root()


# -- frames ----------------------------------------------------------------------------------


def _open(path: Path) -> Image.Image:
    return Image.fromarray(load_image(path))


def scenes(root: Path) -> dict[str, Image.Image]:
    """The 1920x1080 scenes: one face, four faces (two photos side by side), no face."""
    faces = root / "multi-face"
    one = _open(faces / "obama-1080p.jpg").resize((1920, 1080))
    left, right = _open(faces / "two_people.jpg"), _open(faces / "obama_and_biden.jpg")
    # Same height for both, as wide as the canvas allows.
    height = min(1080, int(1920 / (left.width / left.height + right.width / right.height)))
    left = left.resize((round(left.width * height / left.height), height))
    right = right.resize((round(right.width * height / right.height), height))
    several = Image.new("RGB", (1920, 1080), (128, 128, 128))
    top = (1080 - height) // 2
    several.paste(left, (0, top))
    several.paste(right, (1920 - right.width, top))
    empty = Image.fromarray(no_face_image(1920, 1080))
    return {"one face": one, "four faces": several, "no face": empty}


# -- measurements ----------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeats: int, budget: float = 10.0) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` calls after one warm-up call (fewer, at least one,
    once ``budget`` seconds are spent), and the last result."""
    started = time.perf_counter()
    result = fn()
    spent = time.perf_counter() - started
    times: list[float] = []
    while len(times) < repeats and (not times or spent < budget):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
        spent += times[-1]
    return median(times) * 1e3, result


def frame_row(scene: str, height: int, data: bytes, side: int, repeats: int) -> dict[str, Any]:
    engine = FaceEngine(EngineConfig(max_detect_side=side))
    decode_ms, rgb = timed(partial(load_image, data), repeats)
    detect_ms, dets = timed(partial(engine.detect, rgb), repeats)
    faces_ms, faces = timed(partial(engine.faces, rgb), repeats)
    passing = [d.rect for d, f in zip(dets, faces, strict=True) if f.quality.passed]
    encode_ms, _ = timed(partial(engine._encode, rgb, passing), repeats)
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    small = round(max(h, w) * scale)
    return {
        "scene": scene,
        "frame": f"{w}x{h}",
        "height": height,
        "max_detect_side": side,
        "detect_side": small,
        "upsampled": small <= engine.config.upsample_below,
        "jpeg_kb": len(data) / 1024,
        "decode_ms": decode_ms,
        "detect_ms": detect_ms,
        "encode_ms": encode_ms,
        "faces_ms": faces_ms,
        "total_ms": decode_ms + faces_ms,
        "found": len(dets),
        "encoded": len(passing),
    }


def lfw_images(root: Path, count: int) -> list[Path]:
    """``count`` LFW images spread over the alphabet (one per person, deterministic)."""
    people = sorted(p for p in (root / "lfw-fold1" / "images").iterdir() if p.is_dir())
    step = max(1, len(people) // count)
    return [sorted(p.glob("*.jpg"))[0] for p in people[::step][:count]]


def no_face_image(width: int = 250, height: int = 250) -> RGBImage:
    """Nothing a detector could call a face: a smooth gradient (250x250 like LFW by default).
    Detection costs about the same whatever the pixels; what matters is that nothing is found,
    so every configured fallback runs."""
    ramp = np.tile(np.linspace(40, 215, width).astype(np.uint8), (height, 1))
    return np.ascontiguousarray(np.stack([ramp] * 3, axis=-1))


def fallback_rows(images: Sequence[tuple[str, RGBImage]], repeats: int) -> list[dict[str, Any]]:
    """Per image: the first pass alone, each fallback forced on its own, and the whole default
    chain as ``detect`` runs it (which only runs the fallbacks when the first pass is empty)."""
    rows = []
    first = FaceEngine(EngineConfig(fallbacks=()))
    for name, rgb in images:
        upsample = 1 if max(rgb.shape[:2]) <= first.config.upsample_below else 0
        first_ms, dets = timed(partial(first.detect, rgb), repeats)
        row: dict[str, Any] = {"image": name, "first_ms": first_ms, "first_found": len(dets)}
        for fallback in ALL_FALLBACKS:
            engine = FaceEngine(replace(first.config, fallbacks=(fallback,)))
            # The private path that detect() takes when the first pass finds nothing, forced
            # here so that each fallback's cost is measured even where the first pass succeeds.
            ms, hits = timed(partial(engine._fallbacks, rgb, upsample), repeats)
            row[f"{fallback}_ms"], row[f"{fallback}_found"] = ms, len(hits)
        chain_ms, dets = timed(partial(FaceEngine().detect, rgb), repeats)
        row["chain_ms"], row["chain_found"] = chain_ms, len(dets)
        row["chain_detector"] = dets[0].detector if dets else "none"
        rows.append(row)
    return rows


def lfw_scan(root: Path) -> dict[str, Any]:
    """Which detector finds the face in each LFW fold-1 image with the default chain, and the
    mean time of ``detect`` over them all."""
    engine = FaceEngine()
    counts: dict[str, int] = {}
    times = []
    for path in sorted((root / "lfw-fold1" / "images").glob("*/*.jpg")):
        rgb = load_image(path)
        started = time.perf_counter()
        dets = engine.detect(rgb)
        times.append(time.perf_counter() - started)
        key = dets[0].detector if dets else "none"
        counts[key] = counts.get(key, 0) + 1
    return {
        "images": len(times),
        "by_detector": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
        "mean_detect_ms": float(np.mean(times)) * 1e3,
        "median_detect_ms": median(times) * 1e3,
    }


# -- the run ---------------------------------------------------------------------------------

FRAME_HEADERS = [
    "scene", "frame", "max_detect_side", "detect on", "decode ms", "detect ms", "encode ms",
    "faces() ms", "total ms", "found / encoded",
]  # fmt: skip


def _frame_row(r: dict[str, Any]) -> list[str]:
    side = "none" if r["max_detect_side"] == NO_DOWNSCALE else str(r["max_detect_side"])
    detect_on = f"{r['detect_side']} px" + (" x2 (upsample)" if r["upsampled"] else "")
    return [
        r["scene"], r["frame"], side, detect_on, fmt(r["decode_ms"], 1), fmt(r["detect_ms"], 1),
        fmt(r["encode_ms"], 1), fmt(r["faces_ms"], 1), fmt(r["total_ms"], 1),
        f"{r['found']} / {r['encoded']}",
    ]  # fmt: skip


def _fallback_row(r: dict[str, Any]) -> list[str]:
    cells = [r["image"], f"{fmt(r['first_ms'], 1)} ({r['first_found']})"]
    cells += [f"{fmt(r[f + '_ms'], 1)} ({r[f + '_found']})" for f in ALL_FALLBACKS]
    cells.append(f"{fmt(r['chain_ms'], 1)} ({r['chain_detector']})")
    return cells


def report(result: dict[str, Any]) -> str:
    out = [f"machine: {json.dumps(result['machine'])}", f"repeats: {result['repeats']} (median)"]
    out += [
        "",
        "## Per frame",
        "",
        markdown_table(FRAME_HEADERS, map(_frame_row, result["frames"])),
    ]
    out.append(
        "\ndetect on: the longest side HOG sees (frames are downscaled to max_detect_side; "
        "images up to upsample_below=800 px are upsampled once). encode: landmarks and the "
        "128-d encoding of every face that passed the quality gate. faces(): detect + gate + "
        "encode. total: decode + faces()."
    )
    headers = ["image", "first pass ms (faces)"]
    headers += [f"{f} forced ms (faces)" for f in ALL_FALLBACKS]
    headers.append("default chain ms (found by)")
    out += [
        "",
        "## Detection fallbacks",
        "",
        markdown_table(headers, map(_fallback_row, result["fallbacks"])),
    ]
    out.append(
        "\nforced: the fallback run on its own (``FaceEngine._fallbacks`` with only it "
        "configured), whether or not the first pass found a face. default chain: ``detect`` "
        "with every fallback configured; they only run when the first pass finds nothing."
    )
    if result.get("lfw_scan"):
        scan = result["lfw_scan"]
        out += ["", "## Default chain over LFW fold 1", ""]
        out.append(
            f"{scan['images']} images; found by: {json.dumps(scan['by_detector'])}; detect "
            f"mean {fmt(scan['mean_detect_ms'], 1)} ms, "
            f"median {fmt(scan['median_detect_ms'], 1)} ms."
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    p.add_argument("--lfw-images", type=int, default=4, help="LFW images for the fallback table")
    p.add_argument("--lfw-scan", action="store_true", help="also run detect over all of LFW fold 1")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    root = datasets()
    if not (root / "multi-face").is_dir():
        sys.exit(f"no datasets at {root}; set FACESTREAM_DATASETS")
    result: dict[str, Any] = {
        "machine": machine(["dlib-bin", "numpy", "pillow", "face-recognition-models"]),
        "repeats": args.repeats,
        "frames": [],
    }
    for scene, img in scenes(root).items():
        for height in HEIGHTS:
            data = jpeg(img, height)
            for side in DETECT_SIDES:
                log.info("%s %dp max_detect_side=%d", scene, height, side)
                result["frames"].append(frame_row(scene, height, data, side, args.repeats))
    images = [(p.parent.name, load_image(p)) for p in lfw_images(root, args.lfw_images)]
    images.append(("no face (gradient)", no_face_image()))
    log.info("fallbacks on %d images", len(images))
    result["fallbacks"] = fallback_rows(images, args.repeats)
    if args.lfw_scan:
        log.info("scanning LFW fold 1")
        result["lfw_scan"] = lfw_scan(root)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
