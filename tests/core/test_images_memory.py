"""Decoding with bounded memory: 16-bit PNGs stretched a block of rows at a time (the same
pixels as whole-image float64 arithmetic), MPO phone photos on their first picture."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facestream.core import images
from facestream.core.images import (
    ImageTooLarge,
    TruncatedImage,
    UnsupportedFormat,
    load_image,
)

ROOT = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def wide_png(width: int, height: int, lo: int = 1000, hi: int = 4095) -> bytes:
    ramp = np.linspace(lo, hi, width * height).reshape(height, width).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")


def test_a_16_bit_png_is_stretched_in_blocks_as_in_one_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = wide_png(300, 200)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    # What whole-image float64 arithmetic gives (the decoder before blocks).
    arr = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    whole = ((arr - arr.min()) * (255.0 / (arr.max() - arr.min()))).astype(np.uint8)
    # Small blocks, so the test crosses block boundaries.
    monkeypatch.setattr(images, "BLOCK_PIXELS", 1000)
    mine = load_image(data)
    assert mine.shape == (200, 300, 3) and mine.dtype == np.uint8
    assert all(np.array_equal(mine[:, :, c], whole) for c in range(3))
    assert mine.min() == 0 and mine.max() >= 254  # the used range stretched, not clipped


def test_a_flat_16_bit_png_is_black_and_limits_still_apply() -> None:
    flat = wide_png(40, 30, lo=500, hi=500)
    assert not load_image(flat).any()
    with pytest.raises(ImageTooLarge):
        load_image(wide_png(100, 100), max_pixels=9_999)
    with pytest.raises(ImageTooLarge):
        load_image(wide_png(100, 100), max_bytes=100)
    with pytest.raises(TruncatedImage):
        data = wide_png(300, 200)
        load_image(data[: len(data) // 2])


def test_an_mpo_decodes_its_first_frame(datasets: Path) -> None:
    photo = Image.open(datasets / "multi-face" / "obama.jpg")
    second = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((100, 120))
    mpo = encode(photo, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    first = load_image(encode(photo, "JPEG"))
    decoded = load_image(mpo)
    assert decoded.shape == first.shape
    # Both are the same picture through a JPEG encoder at the same settings.
    assert np.abs(decoded.astype(int) - first.astype(int)).mean() < 1.0


def test_other_formats_are_still_refused() -> None:
    with pytest.raises(UnsupportedFormat):
        load_image(encode(Image.new("RGB", (10, 10)), "GIF"))


@pytest.mark.timeout(120)
def test_the_worst_image_fits_a_detector_pod() -> None:
    # The benchmark decodes a 40 MP 16-bit PNG in fresh processes and prints the peak growth.
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine.decode_memory"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if "load_image" in line]
    peaks = [float(row[4]) for row in rows]
    assert peaks and max(peaks) < 400, out  # MiB, against a 1 GiB pod limit
