"""Decode untrusted image bytes into RGB arrays, refusing anything unsafe with a typed error.

Every image that enters facestream (a camera frame, an upload, a photo in an enrollment folder)
goes through :func:`load_image`. It accepts JPEG, PNG and BMP; normalises RGBA, grayscale,
palette, 16-bit and CMYK images to 8-bit RGB; applies the EXIF orientation; and refuses
non-images, other formats, truncated files and decompression bombs before decoding pixels.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

RGBImage = NDArray[np.uint8]

SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG", "BMP"})
DEFAULT_MAX_PIXELS: Final = 40_000_000  # a 12 MP phone photo is 12e6; 8K video is 33e6
DEFAULT_MAX_BYTES: Final = 20 * 1024 * 1024


class ImageError(ValueError):
    """An input that is not a usable image. ``reason`` is a stable machine-readable code."""

    reason: str = "bad_image"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyImage(ImageError):
    reason = "empty"


class NotAnImage(ImageError):
    reason = "not_an_image"


class UnsupportedFormat(ImageError):
    reason = "unsupported_format"


class TruncatedImage(ImageError):
    reason = "truncated"


class ImageTooLarge(ImageError):
    """Too many pixels (a decompression bomb or simply too big) or too many bytes."""

    reason = "too_large"


def _read(source: str | Path | bytes, max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise NotAnImage(f"cannot read {path}: {exc.strerror or exc}") from exc
        if size > max_bytes:
            raise ImageTooLarge(f"{path} is {size} bytes, over the limit of {max_bytes}")
        data = path.read_bytes()
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any decoded mode to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit or float grayscale: stretch the used range to 0..255 rather than clipping,
        # so a 16-bit PNG that only uses 0..4095 is not rendered almost black.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent areas become white, not black: black is what convert("RGB") would give,
        # and a dark halo around a cut-out face confuses the detector.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX, ...


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> RGBImage:
    """Decode ``source`` (a path or the file's bytes) into an ``(H, W, 3)`` uint8 RGB array.

    Raises a subclass of :class:`ImageError`; nothing else escapes for bad input.
    """
    data = _read(source, max_bytes)
    # face_recognition sets this process-wide flag on import, after which Pillow silently pads
    # a truncated file with grey; a half-received frame must be refused, not encoded.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above twice its limit raises) on large images; our own
            # limit below is the one that applies, checked before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise NotAnImage("the data is not a recognised image") from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except OSError as exc:
        raise NotAnImage(f"the image header cannot be read: {exc}") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(
            f"{img.format or 'unknown'} images are not accepted; use JPEG, PNG or BMP"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise NotAnImage("the image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels, "
            f"over the limit of {max_pixels}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img) or img)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt pixel data as OSError (and some plugins as
        # SyntaxError/ValueError); the header was fine, so the file was cut short or damaged.
        raise TruncatedImage(f"the image data is truncated or corrupt: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array)
