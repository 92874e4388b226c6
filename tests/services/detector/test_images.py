"""The detector's frame decoding: 16-bit PNGs without the float64 blow-up, MPO phone photos on
their first frame, everything else exactly as the core decodes it."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facestream.core.images import (
    DEFAULT_MAX_PIXELS,
    ImageTooLarge,
    TruncatedImage,
    UnsupportedFormat,
    load_image,
)
from facestream.services.detector import images
from facestream.services.detector.images import load_frame

ROOT = Path(__file__).resolve().parents[3]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def wide_png(width: int, height: int, lo: int = 1000, hi: int = 4095) -> bytes:
    ramp = np.linspace(lo, hi, width * height).reshape(height, width).astype(np.uint16)
    return encode(Image.fromarray(ramp), "PNG")


def test_a_16_bit_png_decodes_as_the_core_stretches_it(monkeypatch: pytest.MonkeyPatch) -> None:
    data = wide_png(300, 200)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    # Small blocks, so the test crosses block boundaries.
    monkeypatch.setattr(images, "BLOCK_PIXELS", 1000)
    mine, core = load_frame(data, max_pixels=DEFAULT_MAX_PIXELS), load_image(data)
    assert mine.shape == core.shape == (200, 300, 3) and mine.dtype == np.uint8
    assert np.array_equal(mine, core)
    assert mine.min() == 0 and mine.max() >= 254  # the used range stretched, not clipped


def test_a_flat_16_bit_png_is_black_and_limits_still_apply() -> None:
    flat = wide_png(40, 30, lo=500, hi=500)
    assert not load_frame(flat, max_pixels=DEFAULT_MAX_PIXELS).any()
    with pytest.raises(ImageTooLarge):
        load_frame(wide_png(100, 100), max_pixels=9_999)
    with pytest.raises(ImageTooLarge):
        load_frame(wide_png(100, 100), max_pixels=DEFAULT_MAX_PIXELS, max_bytes=100)
    with pytest.raises(TruncatedImage):
        data = wide_png(300, 200)
        load_frame(data[: len(data) // 2], max_pixels=DEFAULT_MAX_PIXELS)


def test_an_mpo_decodes_its_first_frame(datasets: Path) -> None:
    photo = Image.open(datasets / "multi-face" / "obama.jpg")
    second = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((100, 120))
    mpo = encode(photo, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    with pytest.raises(UnsupportedFormat):
        load_image(mpo)  # what the detector used to do
    first = load_image(encode(photo, "JPEG"))
    decoded = load_frame(mpo, max_pixels=DEFAULT_MAX_PIXELS)
    assert decoded.shape == first.shape
    # Both are the same picture through a JPEG encoder at the same settings.
    assert np.abs(decoded.astype(int) - first.astype(int)).mean() < 1.0


def test_other_images_are_the_core_s(datasets: Path) -> None:
    for name in ("obama.jpg", "32bit.png"):
        data = (datasets / "multi-face" / name).read_bytes()
        assert np.array_equal(load_frame(data, max_pixels=DEFAULT_MAX_PIXELS), load_image(data))
    with pytest.raises(UnsupportedFormat):
        load_frame(encode(Image.new("RGB", (10, 10)), "GIF"), max_pixels=DEFAULT_MAX_PIXELS)


@pytest.mark.timeout(120)
def test_the_worst_frame_fits_a_detector_pod() -> None:
    # The benchmark decodes a 40 MP 16-bit PNG in fresh processes and prints the peak growth.
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine.decode_memory"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if "load_frame" in line]
    peaks = [float(row[4]) for row in rows]
    assert peaks and max(peaks) < 400, out  # MiB, against a 1 GiB pod limit
