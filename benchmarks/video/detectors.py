"""dlib's two face detectors on one frame of a video: faces found and seconds, by upsampling.

    python -m benchmarks.video.detectors [--video FILE] [--at 8.4]

The default is the shared real clip's audience shot (8.4 s): four people in three-quarter view,
dimly lit, which the detector's HOG misses (docs/video.md, "Measuring passes on a store's own
footage"). One core (``OMP_NUM_THREADS=1``, as the workers run); each detector is timed on the
frame once after a warm-up call.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import load_average, markdown_table
from facestream.core.datasets import datasets_root


def frame_at(video: str, seconds: float) -> NDArray[np.uint8]:
    """The RGB frame at ``seconds`` into ``video``."""
    import cv2

    capture = cv2.VideoCapture(video)
    try:
        capture.set(cv2.CAP_PROP_POS_MSEC, seconds * 1000)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise SystemExit(f"no frame at {seconds} s in {video}")
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = str(datasets_root() / "video" / "short_hamilton_clip.mp4")
    parser.add_argument("--video", default=default)
    parser.add_argument("--at", type=float, default=8.4, help="seconds into the video")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import face_recognition

    image = frame_at(args.video, args.at)
    rows = []
    for model, upsample in (("hog", 0), ("hog", 1), ("hog", 2), ("cnn", 0), ("cnn", 1)):
        face_recognition.face_locations(image, upsample, model)  # warm-up
        started = time.perf_counter()
        found = face_recognition.face_locations(image, upsample, model)
        seconds = time.perf_counter() - started
        rows.append([model, str(upsample), str(len(found)), f"{seconds:.2f}"])
    print(f"{os.path.basename(args.video)} at {args.at:g} s, {image.shape[1]}x{image.shape[0]}")
    print(markdown_table(["detector", "upsample", "faces", "seconds"], rows))
    print(f"\nLoad average (1 min): {load_average()}")


if __name__ == "__main__":
    main()
