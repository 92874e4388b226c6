"""What a scale table (facestream.core.scales) costs in memory: bytes per entry, by tracemalloc,
for a gallery of one-sample identities whose every scale is computed (``fill``). No Kafka.

    python -m benchmarks.pipeline.scale_table --identities 20000

The encodings are random unit vectors (what is measured is the table's bookkeeping, which does
not depend on where the faces are); the gallery is exact, so that the searches stay short.
Prints the entries, the bytes allocated per entry while filling (the entries, their neighbour
lists, the holders' lists and the heap; the searches' own temporaries are freed), and the
seconds the fill took.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

from facestream.core.gallery import Gallery, GalleryConfig, Identity
from facestream.core.scales import ScaleTable


def measure(identities: int, seed: int = 1) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((identities, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    gallery = Gallery(GalleryConfig(index="flat"))
    gallery.add_rows([Identity(f"m{i}") for i in range(identities)], [1] * identities, v)
    table = ScaleTable(2, [gallery])
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    started = time.perf_counter()
    table.fill()
    seconds = time.perf_counter() - started
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {"entries": len(table), "bytes_per_entry": grown / len(table), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=20_000)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    row = measure(args.identities)
    print(
        f"{row['entries']:,.0f} entries: {row['bytes_per_entry']:,.0f} bytes an entry "
        f"(tracemalloc), filled in {row['seconds']:.1f} s (with tracemalloc on)"
    )


if __name__ == "__main__":
    main()
