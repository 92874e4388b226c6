"""Peak memory to decode the worst image facestream accepts: a 16-bit greyscale PNG at the
40 MP limit (a smooth ramp, so the file stays under the 20 MB byte limit), through
``load_image`` and, for comparison, through whole-image float64 arithmetic (how ``load_image``
stretched it before it worked in blocks of rows); and a 12 MP MPO (a phone photo with a second
frame) through ``load_image``. Each decode runs in a fresh process, which reports its peak
resident memory (VmHWM) minus what it held before decoding. Run from the project root::

    .venv/bin/python -m benchmarks.engine.decode_memory
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

MIB = 1024 * 1024
LIMIT = 40_000_000


def _status(field: str) -> int:
    """A ``/proc/self/status`` figure, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _whole_image_float64(data: bytes, max_pixels: int) -> np.ndarray:
    """The stretch done on the whole image at once (the old decoder), for comparison."""
    import io

    arr = np.asarray(Image.open(io.BytesIO(data)), dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.asarray(Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB"))


def _child(decoder: str, path: Path) -> None:
    from facestream.core.images import load_image

    data = path.read_bytes()
    before = _status("VmRSS")
    decode = _whole_image_float64 if decoder == "whole" else load_image
    image = decode(data, max_pixels=LIMIT)
    peak = _status("VmHWM")
    print(f"{peak - before} {image.shape[0] * image.shape[1]}")


def _wide_png(path: Path) -> None:
    width, height = 8000, 5000  # 40 MP
    ramp = np.linspace(0, 65535, width, dtype=np.float64).astype(np.uint16)
    pixels = np.broadcast_to(ramp, (height, width))
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, "PNG")


def _mpo(path: Path) -> None:
    width, height = 4000, 3000  # 12 MP, a phone photo
    x = np.linspace(0, 255, width, dtype=np.float32)
    rgb = np.stack([np.broadcast_to(x, (height, width))] * 3, axis=-1).astype(np.uint8)
    first = Image.fromarray(rgb)
    first.save(path, "MPO", save_all=True, append_images=[first.resize((width // 4, height // 4))])


def _measure(decoder: str, path: Path) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.engine.decode_memory", "--child", decoder, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    grown, pixels = (int(v) for v in out.stdout.split())
    return grown / MIB, grown / pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("DECODER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        png, mpo = Path(tmp) / "wide.png", Path(tmp) / "phone.mpo"
        _wide_png(png)
        _mpo(mpo)
        rows = [
            ("16-bit grey PNG, 40 MP", png, "whole-image float64 (before)"),
            ("16-bit grey PNG, 40 MP", png, "load_image"),
            ("MPO, 12 MP + a second frame", mpo, "load_image"),
        ]
        print("| image | file MB | decoder | peak growth MiB | bytes per pixel |")
        print("|---|---|---|---|---|")
        for name, path, decoder in rows:
            mib, per_pixel = _measure("whole" if decoder.startswith("whole") else "load", path)
            size = path.stat().st_size / 1e6
            print(f"| {name} | {size:.1f} | {decoder} | {mib:.0f} | {per_pixel:.1f} |")


if __name__ == "__main__":
    main()
