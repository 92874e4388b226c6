"""Where the default thresholds come from: sweep them on LFW fold 1 and print the tables.

    .venv/bin/python -m benchmarks.accuracy.calibrate [--images DIR] [--pairs FILE]

Encodes every image once, then prints 1:1 accuracy per threshold on the official pairs, and the
open-set error rates of `facestream eval identify` over a grid of thresholds and margins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facestream.core.datasets import datasets_root
from facestream.core.evaluation import (
    encode_subjects,
    identify_report,
    read_pairs,
    split_people,
    verify_report,
)
from facestream.core.gallery import GalleryConfig
from facestream.core.photos import image_files


def main() -> None:
    default = datasets_root() / "lfw-fold1"
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=default / "images")
    parser.add_argument("--pairs", type=Path, default=default / "pairs.txt")
    args = parser.parse_args()
    paths = [p for d in sorted(args.images.iterdir()) if d.is_dir() for p in image_files(d)]
    encodings, seconds = encode_subjects(paths, progress=True)
    print(f"encoded {len(paths)} images in {seconds:.0f}s\n")

    pairs = read_pairs(args.pairs, args.images)
    print("| 1:1 threshold | accuracy |\n|---|---|")
    for t in np.arange(0.56, 0.69, 0.01):
        report = verify_report(pairs, encodings, round(float(t), 2), seconds)
        print(f"| {t:.2f} | {report['accuracy']:.2%} |")

    split = split_people(args.images)
    print("\n| 1:N threshold | margin | false accept | false reject | wrong person | rank-1 |")
    print("|---|---|---|---|---|---|")
    for t in (0.45, 0.48, 0.50, 0.52, 0.55, 0.58, 0.60):
        for m in (0.0, 0.03, 0.05, 0.08):
            r = identify_report(split, encodings, GalleryConfig(threshold=t, margin=m), seconds)
            print(
                f"| {t:.2f} | {m:.2f} | {r['false_accept_rate']:.2%} | "
                f"{r['false_reject_rate']:.2%} | {r['misidentification_rate']:.2%} | "
                f"{r['rank1']:.2%} |"
            )


if __name__ == "__main__":
    main()
