"""The gallery file: one ``.npz`` holding a JSON header, the raw samples and, for trained
indexes, the serialised Faiss index. Written atomically: a crash leaves the old file whole.

* ``meta``: UTF-8 JSON with ``format``, ``config``, ``identities`` (each with its number),
  ``next_number`` and ``next_sample``;
* ``sample_ids``, ``owners``, ``vectors``: every sample's id, identity number and vector;
* ``index``: the serialised Faiss index (IVF, HNSW, and ``auto``'s once compressed), so that
  loading does not retrain.

Settings added to the config since a file was written take their defaults when it is read.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from facestream.core.gallery import faiss_index
from facestream.core.gallery.types import (
    FORMAT_VERSION,
    GalleryConfig,
    GalleryError,
    Identity,
    Vectors,
)


@dataclass(frozen=True)
class GalleryFile:
    """Everything a gallery file holds, decoded."""

    config: GalleryConfig
    identities: dict[int, Identity]
    """Identity number -> identity, in number order."""
    next_number: int
    next_sample: int
    sample_ids: NDArray[np.int64]
    owners: NDArray[np.int64]
    vectors: Vectors
    index: Any | None
    """The Faiss index, or None when it is to be rebuilt from the samples on load."""


def write(path: Path, contents: GalleryFile) -> None:
    """Write ``contents`` to ``path`` atomically (through a temporary file and a rename)."""
    meta = {
        "format": FORMAT_VERSION,
        "config": asdict(contents.config),
        "identities": [{**asdict(ident), "number": n} for n, ident in contents.identities.items()],
        "next_number": contents.next_number,
        "next_sample": contents.next_sample,
    }
    arrays: dict[str, Any] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "sample_ids": contents.sample_ids,
        "owners": contents.owners,
        "vectors": contents.vectors,
    }
    if contents.index is not None:
        arrays["index"] = faiss_index.serialize(contents.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path, **overrides: Any) -> GalleryFile:
    """Read a file written by :func:`write`; ``overrides`` replace settings of the saved
    config. Raises :class:`GalleryError` for anything that is not a gallery file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            arrays = {k: data[k] for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise GalleryError(f"{path} is not a facestream gallery: {exc}") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise GalleryError(f"{path}: unsupported gallery format {meta.get('format')!r}")
    config = replace(GalleryConfig(**meta["config"]), **overrides)
    # An index of another kind than the one asked for is rebuilt from the samples, not used.
    saved_index = "index" in arrays and config.index == meta["config"].get("index")
    identities: dict[int, Identity] = {}
    for rec in meta["identities"]:
        number = int(rec.pop("number"))
        identities[number] = Identity(**rec)
    return GalleryFile(
        config=config,
        identities=identities,
        next_number=int(meta["next_number"]),
        next_sample=int(meta["next_sample"]),
        sample_ids=arrays["sample_ids"],
        owners=arrays["owners"],
        vectors=arrays["vectors"],
        index=faiss_index.deserialize(arrays["index"], config) if saved_index else None,
    )
