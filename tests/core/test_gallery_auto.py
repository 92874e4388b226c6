"""``index="auto"``: exact while small, then a compressed index re-ranked exactly, built in the
background; raw vectors in a file that erasure overwrites."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.synthetic import Dataset, Synthesizer
from facestream.core.gallery import Gallery, GalleryConfig, Identity, faiss_index

Vectors = np.ndarray


@pytest.fixture(scope="module")
def faces() -> Dataset:
    """30,000 face-like samples of 10,000 people, and 1,000 new photos of some of them."""
    return Synthesizer(seed=3).dataset(30_000, 3, 1000)


def _people(ds: Dataset, first: int, last: int) -> list[tuple[Identity, Vectors]]:
    return [(Identity(f"p{i}"), ds.vectors[ds.owners == i]) for i in range(first, last)]


def _auto(**cfg: Any) -> Gallery:
    return Gallery(GalleryConfig(index="auto", **cfg))


def _top1(gallery: Gallery, probes: Vectors) -> list[str | None]:
    return [c.candidates[0].identity.id for c in gallery.identify_batch(probes)]


def test_exact_below_the_threshold_compressed_from_it(faces: Dataset) -> None:
    gallery = _auto(exact_below=3000, background_build=False)
    gallery.add_many(_people(faces, 0, 999))  # 2,997 samples
    assert not gallery.compressed
    assert gallery.index_bytes() >= 512 * gallery.sample_count  # flat: the vectors themselves
    gallery.add_many(_people(faces, 999, 1000))
    assert gallery.compressed
    assert gallery.index_bytes() < 64 * gallery.sample_count  # 32-byte codes and an id each
    # What stays in RAM beside the index: ids, owners and file rows, not the vectors.
    assert gallery.resident_bytes() - gallery.index_bytes() < 64 * gallery.sample_count


def test_rebuilt_in_the_background_when_grown_4x(
    faces: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    gallery = _auto(exact_below=1500)
    with caplog.at_level(logging.INFO, logger="facestream.core.gallery.gallery"):
        gallery.add_many(_people(faces, 0, 500))  # 1,500 samples: the first build
        gallery.wait_for_build()
        assert gallery.compressed
        for first in range(500, 2000, 100):  # to 6,000 samples: one more build, at 4x
            gallery.add_many(_people(faces, first, first + 100))
            gallery.wait_for_build()
    swaps = [r.getMessage() for r in caplog.records if "swapped in" in r.getMessage()]
    assert len(swaps) == 2, swaps
    assert swaps[1].startswith("compressed index of 6000 samples")


@pytest.fixture
def partitioned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compressed builds put their codes behind an IVF partition from 1,000 samples (off when
    shipped; benchmarks measure it from 300,000)."""
    monkeypatch.setattr(faiss_index, "IVF_FROM", 1000)


@pytest.mark.parametrize("partition", [False, True], ids=["all-codes", "partitioned"])
def test_recall_against_exact_search(
    faces: Dataset, partition: bool, request: pytest.FixtureRequest
) -> None:
    if partition:
        request.getfixturevalue("partitioned")
    exact = Gallery(GalleryConfig(index="flat"))
    auto = _auto(exact_below=10_000, background_build=False)
    for g in (exact, auto):
        g.add_many(_people(faces, 0, faces.identities))
    assert auto.compressed
    # 30,000 samples: about 4*sqrt(N) lists, a quarter of them scanned per probe.
    assert auto.partition_lists == (640 if partition else 0)
    want, got = exact.identify_batch(faces.queries), auto.identify_batch(faces.queries)
    same_top1 = [
        w.candidates[0].identity == g.candidates[0].identity for w, g in zip(want, got, strict=True)
    ]
    assert np.mean(same_top1) >= 0.997
    # Decisions follow: the same verdicts, at the same (true, not approximated) distances.
    same_decision = [
        (w.identity, w.reason) == (g.identity, g.reason) for w, g in zip(want, got, strict=True)
    ]
    assert np.mean(same_decision) >= 0.997
    both = [
        (w, g) for w, g in zip(want, got, strict=True) if w.identity == g.identity and w.identity
    ]
    assert both and all(w.distance == pytest.approx(g.distance, abs=1e-5) for w, g in both)


@pytest.fixture
def paused_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, ...]]:
    """Holds a background build after it has read its samples, until ``go`` is set."""
    reading_done, go = threading.Event(), threading.Event()
    train = faiss_index.train_compressed

    def held(sample: Vectors, lists: int = 0) -> Any:
        reading_done.set()
        assert go.wait(60)
        return train(sample, lists)

    monkeypatch.setattr(faiss_index, "train_compressed", held)
    yield reading_done, go
    go.set()


def test_changes_during_a_build_survive_the_swap(
    faces: Dataset, paused_training: tuple[threading.Event, ...]
) -> None:
    reading_done, go = paused_training
    gallery = _auto(exact_below=3000)
    gallery.add_many(_people(faces, 0, 1000))
    assert reading_done.wait(60) and not gallery.compressed
    gallery.add_many(_people(faces, 1000, 1100))  # added during the build
    for i in (5, 500, 1050):  # erased during it: read by the build, and added meanwhile
        gallery.remove(f"p{i}")
    exact = [d.identity for d in gallery.identify_batch(faces.vectors[:3600])]
    go.set()
    gallery.wait_for_build()
    assert gallery.compressed and gallery.sample_count == 3300 - 9
    after = [d.identity for d in gallery.identify_batch(faces.vectors[:3600])]
    assert after == exact  # the swap changes no decision
    for i in (5, 500, 1050):
        assert _never_found(gallery, f"p{i}", faces.vectors[faces.owners == i])
    found = gallery.identify_batch(faces.vectors[faces.owners == 1099])
    assert all(d.identity == Identity("p1099") and d.distance == 0 for d in found)


def _never_found(gallery: Gallery, identity_id: str, probes: Vectors) -> bool:
    """Whether no probe has ``identity_id`` among its candidates."""
    found = {c.identity.id for d in gallery.identify_batch(probes) for c in d.candidates}
    return identity_id not in found


def _vector_file(folder: Path) -> bytes:
    """What the gallery's vector file in ``folder`` holds on disk (it is unlinked: it is found
    through the process's open files)."""
    for fd in Path("/proc/self/fd").iterdir():
        if os.readlink(fd).startswith(str(folder)):
            with open(fd, "rb") as fh:
                return fh.read()
    raise AssertionError("no vector file open")


def test_erasure_overwrites_the_vector_file(faces: Dataset, tmp_path: Path) -> None:
    gallery = _auto(exact_below=1500, background_build=False, vector_dir=str(tmp_path))
    gallery.add_many(_people(faces, 0, 600))
    assert gallery.compressed
    erased = faces.vectors[faces.owners == 7]
    assert all(v.tobytes() in _vector_file(tmp_path) for v in erased)
    assert gallery.remove("p7") == 3
    held = _vector_file(tmp_path)
    assert not any(v.tobytes() in held for v in erased)
    # The others are intact, moved or not, and still found.
    for i in (0, 8, 599):
        assert np.array_equal(gallery.samples(f"p{i}"), faces.vectors[faces.owners == i])
        assert gallery.identify(faces.vectors[faces.owners == i][0]).identity == Identity(f"p{i}")
    assert _never_found(gallery, "p7", erased)


def test_save_load_round_trip(faces: Dataset, tmp_path: Path) -> None:
    for exact_below in (5000, 1500):  # saved exact, and saved compressed
        gallery = _auto(exact_below=exact_below, background_build=False)
        gallery.add_many(_people(faces, 0, 1000))
        gallery.save(tmp_path / "g.npz")
        loaded = Gallery.load(tmp_path / "g.npz")
        loaded.wait_for_build()
        assert loaded.config == gallery.config and loaded.compressed == gallery.compressed
        assert np.array_equal(loaded.samples("p42"), gallery.samples("p42"))
        probes = faces.queries[:200]
        assert _top1(loaded, probes) == _top1(gallery, probes)


def test_files_saved_before_auto_still_load(faces: Dataset, tmp_path: Path) -> None:
    """A file whose config lacks the settings ``auto`` added (as the previous version wrote
    them) loads, and can be switched to ``auto``."""
    old = Gallery(GalleryConfig(index="ivfsq8"))
    old.add_many(_people(faces, 0, 300))
    path = tmp_path / "old.npz"
    old.save(path)
    with zipfile.ZipFile(path) as z:
        arrays = {n[:-4]: np.load(io.BytesIO(z.read(n))) for n in z.namelist()}
    meta = json.loads(bytes(arrays["meta"]).decode())
    for key in ("exact_below", "rerank", "vector_dir", "background_build"):
        del meta["config"][key]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    loaded = Gallery.load(path)
    assert loaded.config.index == "ivfsq8" and loaded.sample_count == 900
    as_auto = Gallery.load(path, index="auto", exact_below=600, background_build=False)
    assert as_auto.compressed and as_auto.sample_count == 900
    assert as_auto.index_bytes() < old.index_bytes() / 2  # its own index, not the SQ8 one
    assert as_auto.identify(faces.queries[0]).candidates


def test_auto_refuses_per_person_vectors() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        GalleryConfig(index="auto", aggregate="mean")


def test_searches_run_through_the_build_and_swap(faces: Dataset) -> None:
    gallery = _auto(exact_below=3000)
    gallery.add_many(_people(faces, 0, 999))
    probe = faces.vectors[faces.owners == 3][0]
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                found = gallery.identify(probe)
                assert found.identity == Identity("p3") and found.distance == 0
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    gallery.add_many(_people(faces, 999, 1200))  # due: built on a thread, swapped in
    gallery.wait_for_build()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert gallery.compressed and not errors, errors[:1]


# Erased in one remove_many: unknown ids and repeats among them (skipped), people read by a
# compressed build and people added after it, one with the most samples (p1000, below).
ERASED = ["p5", "nobody", "p500", "p5", *(f"p{i}" for i in range(7, 1000, 9)), "p1000", "p0"]


@pytest.mark.parametrize(
    ("cfg", "compressed"),
    [
        ({"index": "flat"}, False),
        ({"index": "flat", "aggregate": "mean"}, False),
        ({"index": "ivf"}, False),
        ({"index": "auto", "exact_below": 100_000}, False),
        ({"index": "auto", "exact_below": 1500, "background_build": False}, True),
    ],
    ids=["flat", "flat-mean", "ivf", "auto-exact", "auto-compressed"],
)
def test_remove_many_leaves_what_removes_one_by_one_leave(
    faces: Dataset, cfg: dict[str, Any], compressed: bool
) -> None:
    def gallery() -> Gallery:
        g = Gallery(GalleryConfig(**cfg))
        g.add_many(_people(faces, 0, 1000))
        g.add(Identity("p1000"), faces.vectors[faces.owners == 1000][:1].repeat(6, axis=0) + 0.01)
        return g

    batch, one_by_one = gallery(), gallery()
    assert batch.compressed == one_by_one.compressed == compressed
    erased = list(dict.fromkeys(i for i in ERASED if i in one_by_one))
    assert len(erased) == len(ERASED) - 2
    removed = 3 * (len(erased) - 1) + 6
    assert batch.remove_many(ERASED) == sum(one_by_one.remove(i) for i in erased) == removed
    assert batch.remove_many(["nobody", "p5"]) == 0 and batch.remove_many([]) == 0

    assert len(batch) == len(one_by_one) == 1001 - len(erased)
    assert batch.sample_count == one_by_one.sample_count == 3006 - removed
    assert batch.identities() == one_by_one.identities()
    for i in (1, 6, 8, 999):
        assert np.array_equal(batch.samples(f"p{i}"), one_by_one.samples(f"p{i}"))
    probes = np.concatenate([faces.queries[:300], faces.vectors[:300]])
    want, got = one_by_one.identify_batch(probes), batch.identify_batch(probes)
    assert [(d.identity, d.reason) for d in got] == [(d.identity, d.reason) for d in want]
    assert [[c.identity.id for c in d.candidates] for d in got] == [
        [c.identity.id for c in d.candidates] for d in want
    ]
    assert all(
        g.distance == pytest.approx(w.distance, abs=1e-5) for g, w in zip(got, want, strict=True)
    )
    # The person with the most samples went: a search looks as far past one person as before.
    assert np.array_equal(batch.search(probes, 10).labels, one_by_one.search(probes, 10).labels)
    for gone in erased:
        assert _never_found(batch, gone, faces.vectors[faces.owners == int(gone[1:])])


def test_remove_many_during_a_build_survives_the_swap(
    faces: Dataset, paused_training: tuple[threading.Event, ...]
) -> None:
    reading_done, go = paused_training
    gallery = _auto(exact_below=3000)
    gallery.add_many(_people(faces, 0, 1000))
    assert reading_done.wait(60) and not gallery.compressed
    gallery.add_many(_people(faces, 1000, 1100))  # added during the build
    # Erased during it, in one call: read by the build, and added meanwhile.
    assert gallery.remove_many(["p5", "p500", "p1050", "p5"]) == 9
    exact = [d.identity for d in gallery.identify_batch(faces.vectors[:3600])]
    go.set()
    gallery.wait_for_build()
    assert gallery.compressed and gallery.sample_count == 3300 - 9
    assert [d.identity for d in gallery.identify_batch(faces.vectors[:3600])] == exact
    for i in (5, 500, 1050):
        assert _never_found(gallery, f"p{i}", faces.vectors[faces.owners == i])


def test_remove_many_overwrites_the_vector_file(faces: Dataset, tmp_path: Path) -> None:
    gallery = _auto(exact_below=1500, background_build=False, vector_dir=str(tmp_path))
    gallery.add_many(_people(faces, 0, 600))
    erased = faces.vectors[np.isin(faces.owners, [7, 300, 599])]
    assert gallery.remove_many(["p7", "p300", "p599"]) == 9
    held = _vector_file(tmp_path)
    assert not any(v.tobytes() in held for v in erased)
    for i in (0, 8, 598):
        assert np.array_equal(gallery.samples(f"p{i}"), faces.vectors[faces.owners == i])


def test_a_partitioned_index_erases_saves_and_grows(
    faces: Dataset, tmp_path: Path, partitioned: None
) -> None:
    """The IVF-partitioned compressed index keeps ids itself: removal, a save and load, and a
    rebuild at 4x growth behave as with every code scanned."""
    gallery = _auto(exact_below=1500, background_build=False)
    gallery.add_many(_people(faces, 0, 1000))
    assert gallery.compressed and gallery.partition_lists == 64
    erased = ["p5", "p500", "p999"]
    assert gallery.remove_many(erased) == 9
    for gone in erased:
        assert _never_found(gallery, gone, faces.vectors[faces.owners == int(gone[1:])])
    # New photos of the people held (a stranger's nearest sample is far, and may differ).
    probes = faces.queries[(faces.query_owners < 1000)]
    assert len(probes) > 50
    exact = Gallery(GalleryConfig(index="flat"))
    exact.add_many([(i, v) for i, v in _people(faces, 0, 1000) if i.id not in erased])
    assert _top1(gallery, probes) == _top1(exact, probes)
    gallery.save(tmp_path / "g.npz")
    loaded = Gallery.load(tmp_path / "g.npz")
    assert loaded.partition_lists == 64
    assert _top1(loaded, probes) == _top1(gallery, probes)
    gallery.add_many(_people(faces, 1000, 4010))  # 12,021 samples: past 4x, rebuilt
    assert gallery.compressed and gallery.partition_lists == 256
    assert _never_found(gallery, "p500", faces.vectors[faces.owners == 500])
    found = gallery.identify_batch(faces.vectors[faces.owners == 4009])
    assert all(d.identity == Identity("p4009") and d.distance == 0 for d in found)
