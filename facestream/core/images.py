"""Decode untrusted image bytes into RGB arrays, refusing anything unsafe with a typed error.

Every image that enters facestream (a camera frame, an upload, a photo in an enrollment folder)
goes through :func:`load_image`. It accepts JPEG, PNG and BMP, and MPO (a phone's multi-picture
JPEG: the photo, then depth maps or a second view; its first picture is the photo); normalises
RGBA, grayscale, palette, 16-bit and CMYK images to 8-bit RGB; applies the EXIF orientation; and
refuses non-images, other formats, truncated files and decompression bombs before decoding
pixels.

Memory is bounded per pixel: a 16- or 32-bit greyscale image is stretched to 8 bits a block of
rows at a time, so decoding costs about the decoded image plus its RGB result (6 bytes per pixel
for a 16-bit PNG instead of 26 through whole-image float64 arrays: 230 MiB instead of 994 MiB at
the 40 MP limit, ``python -m benchmarks.engine.decode_memory``). An out-of-memory kill would
replay the same frame on every restart of a detector.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

RGBImage = NDArray[np.uint8]

SUPPORTED_FORMATS: Final = frozenset({"JPEG", "PNG", "BMP", "MPO"})
WIDE_GREY_MODES: Final = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
BLOCK_PIXELS: Final = 1 << 20
"""Pixels of a wide greyscale image converted at a time (8 MB of float64 scratch)."""
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


def _stretch_grey(img: Image.Image) -> RGBImage:
    """A 16-bit or float greyscale image as RGB, its used range stretched to 0..255 rather than
    clipped (a 16-bit PNG that only uses 0..4095 is not rendered almost black), with float64
    scratch for one block of rows at a time."""
    lo, hi = (float(v) for v in cast(tuple[float, float], img.getextrema()))
    pixels = np.asarray(img)  # a copy, at the image's own width: 2 or 4 bytes per pixel
    img.close()  # Pillow's buffer is not needed any more
    height, width = pixels.shape
    out = np.zeros((height, width, 3), dtype=np.uint8)
    if hi > lo:
        scale = 255.0 / (hi - lo)
        rows = max(1, BLOCK_PIXELS // max(1, width))
        for top in range(0, height, rows):
            block = (pixels[top : top + rows].astype(np.float64) - lo) * scale
            out[top : top + rows] = block.astype(np.uint8)[:, :, None]
    return out


def _to_rgb(img: Image.Image) -> Image.Image:
    """Normalise any decoded mode but wide greyscale (:func:`_stretch_grey`) to 8-bit RGB."""
    mode = img.mode
    if mode == "RGB":
        return img
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
    except MemoryError:
        raise
    except Exception as exc:  # a Pillow plugin failing otherwise on a hostile header (MPO's)
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
            img.load()  # an MPO loads its first picture
            upright = ImageOps.exif_transpose(img) or img
            if upright.mode in WIDE_GREY_MODES:
                if upright is not img:
                    img.close()  # the transposed copy is the one kept
                return _stretch_grey(upright)
            rgb = _to_rgb(upright)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Pillow reports truncated and corrupt pixel data as OSError (and some plugins as
        # SyntaxError/ValueError); the header was fine, so the file was cut short or damaged.
        raise TruncatedImage(f"the image data is truncated or corrupt: {exc}") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array)
