"""Decode a camera frame: :func:`facestream.core.images.load_image`, plus the two kinds of
frame it must not see.

* **Wide greyscale** (16-bit or 32-bit PNG): the core stretches it through float64 arrays of
  the whole image, about 26 bytes per pixel at its peak; at the 40 MP limit that is over 1 GB,
  more than a detector pod has, and an OOM kill replays the same frame on every restart. Here
  the same stretch runs a block of rows at a time, so the peak is the decoded image plus its
  RGB result, about 5 bytes per pixel (``python -m benchmarks.engine.decode_memory``).
* **MPO** (a phone's multi-picture JPEG: the photo, then depth maps or a second view): its
  first frame is an ordinary JPEG and is what the camera meant; the core refuses the format.

Everything else, and every refusal, is the core's: the same limits and the same
:class:`~facestream.core.images.ImageError` reasons. This belongs in the core (the API and
enrollment decode uploads with it too); it lives here until it moves down.
"""

from __future__ import annotations

import io
import warnings
from typing import Final, cast

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from facestream.core.images import (
    DEFAULT_MAX_BYTES,
    ImageTooLarge,
    NotAnImage,
    RGBImage,
    TruncatedImage,
    load_image,
)

WIDE_GREY_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
BLOCK_PIXELS: Final = 1 << 20
"""Pixels converted at a time (8 MB of float64 scratch)."""


def load_frame(data: bytes, *, max_pixels: int, max_bytes: int = DEFAULT_MAX_BYTES) -> RGBImage:
    """The frame's ``(H, W, 3)`` uint8 RGB pixels; raises an ``ImageError`` for bad input."""
    if not _needs_own_decoding(data):
        return load_image(data, max_pixels=max_pixels, max_bytes=max_bytes)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes, over the limit of {max_bytes}")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # see load_image: refuse half-received frames
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} = {width * height} pixels, "
                f"over the limit of {max_pixels}"
            )
        try:
            img.load()  # an MPO opens on its first frame
            upright: Image.Image = ImageOps.exif_transpose(img) or img
            if upright.mode in WIDE_GREY_MODES:
                return _stretch_grey(upright)
            rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
            return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise TruncatedImage(f"the image data is truncated or corrupt: {exc}") from exc


def _needs_own_decoding(data: bytes) -> bool:
    """Whether ``data`` is an MPO or a wide greyscale image (read from the header only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.format == "MPO" or (img.format == "PNG" and img.mode in WIDE_GREY_MODES)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return False  # the core refuses it with the right reason
    except Exception as exc:  # a Pillow plugin failing otherwise on a hostile header
        raise NotAnImage(f"the image header cannot be read: {exc}") from exc


def _stretch_grey(img: Image.Image) -> RGBImage:
    """Stretch the used range of a wide greyscale image to 0..255, as the core does, with
    float64 scratch for one block of rows at a time."""
    lo, hi = (float(v) for v in cast(tuple[float, float], img.getextrema()))
    pixels = np.asarray(img)  # the image's own width (2 or 4 bytes per pixel)
    img.close()
    height, width = pixels.shape
    out = np.zeros((height, width, 3), dtype=np.uint8)
    if hi > lo:
        scale = 255.0 / (hi - lo)
        rows = max(1, BLOCK_PIXELS // max(1, width))
        for top in range(0, height, rows):
            block = (pixels[top : top + rows].astype(np.float64) - lo) * scale
            out[top : top + rows] = block.astype(np.uint8)[:, :, None]
    return out
