"""Image decoding: every accepted kind normalised to RGB, every bad kind refused with its type."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facestream.core.images import (
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    load_image,
)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def portrait(multi: Path) -> Image.Image:
    return Image.open(multi / "obama.jpg").convert("RGB")


def test_jpeg_from_path_and_bytes_agree(multi: Path) -> None:
    a = load_image(multi / "obama.jpg")
    b = load_image((multi / "obama.jpg").read_bytes())
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert np.array_equal(a, b)


def test_rgba_png_transparent_areas_become_white(multi: Path) -> None:
    rgba = Image.new("RGBA", (40, 30), (10, 20, 30, 0))
    out = load_image(_encode(rgba, "PNG"))
    assert out.shape == (30, 40, 3)
    assert (out == 255).all()
    real = load_image(multi / "32bit.png")
    assert real.shape[2] == 3


@pytest.mark.parametrize("mode", ["L", "CMYK", "P"])
def test_other_modes_become_rgb(portrait: Image.Image, mode: str) -> None:
    fmt = "PNG" if mode == "P" else "JPEG"
    out = load_image(_encode(portrait.convert(mode), fmt))
    assert out.shape == (portrait.height, portrait.width, 3)


def test_16_bit_png_uses_full_range() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)) % 4096  # 12-bit data
    img = Image.fromarray(ramp)  # uint16 -> mode "I;16"
    assert img.mode == "I;16"
    out = load_image(_encode(img, "PNG"))
    assert out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255  # stretched, not clipped to near-black


def test_bmp_accepted(portrait: Image.Image) -> None:
    assert load_image(_encode(portrait, "BMP")).shape == (portrait.height, portrait.width, 3)


def test_exif_orientation_applied(portrait: Image.Image) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(portrait, "JPEG", exif=exif.tobytes())
    out = load_image(data)
    assert out.shape == (portrait.width, portrait.height, 3)


def test_empty() -> None:
    with pytest.raises(EmptyImage) as err:
        load_image(b"")
    assert err.value.reason == "empty"


def test_not_an_image() -> None:
    with pytest.raises(NotAnImage) as err:
        load_image(b"%PDF-1.4 this is not a picture at all")
    assert err.value.reason == "not_an_image"


def test_unsupported_format(portrait: Image.Image) -> None:
    with pytest.raises(UnsupportedFormat, match="GIF"):
        load_image(_encode(portrait, "GIF"))


def test_truncated_jpeg(multi: Path) -> None:
    data = (multi / "obama.jpg").read_bytes()
    with pytest.raises(TruncatedImage) as err:
        load_image(data[: len(data) // 2])
    assert err.value.reason == "truncated"


def test_decompression_bomb_refused_before_decoding() -> None:
    # 30000x30000 one-bit PNG: a few kB on disk, 900 megapixels decoded.
    bomb = _encode(Image.new("1", (30000, 30000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge, match="pixels"):
        load_image(bomb)


def test_pixel_limit_is_configurable(portrait: Image.Image) -> None:
    data = _encode(portrait, "JPEG")
    with pytest.raises(ImageTooLarge):
        load_image(data, max_pixels=portrait.width * portrait.height - 1)
    assert load_image(data, max_pixels=portrait.width * portrait.height).size


def test_byte_limit(multi: Path) -> None:
    with pytest.raises(ImageTooLarge, match="bytes"):
        load_image(multi / "obama.jpg", max_bytes=1000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotAnImage, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
