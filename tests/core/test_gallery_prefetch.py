"""``Gallery.prefetch``: a batch's probes searched once, then asked about one by one, must get
exactly the answers one search per probe gives; and a gallery that changed in between must
search again (the matcher mints and teaches between the faces of one batch).

Encodings are random vectors of a face's norm: what is compared is two ways of searching the
same gallery, not a face decision (tests/services/matcher/test_batches.py does that on photos).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from facestream.core.gallery import Gallery, GalleryConfig, Identity

RNG = np.random.default_rng(31)


def _faces(n: int) -> NDArray[np.float32]:
    v = RNG.standard_normal((n, 128)).astype(np.float32)
    faces: NDArray[np.float32] = v / np.linalg.norm(v, axis=1, keepdims=True) * 1.3
    return faces


def _gallery(index: str, people: int, **cfg: Any) -> tuple[Gallery, NDArray[np.float32]]:
    gallery = Gallery(GalleryConfig(index=index, background_build=False, **cfg))  # type: ignore[arg-type]
    looks = _faces(people * 2)
    gallery.add_many((Identity(f"p{i}"), looks[2 * i : 2 * i + 2]) for i in range(people))
    return gallery, looks


def _probes(looks: NDArray[np.float32], n: int) -> NDArray[np.float32]:
    """Half near someone held (a match), half strangers."""
    near = looks[: n // 2] + _faces(n // 2) * 0.04
    return np.concatenate([near, _faces(n - n // 2)]).astype(np.float32)


def _count_searches(gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the probes the gallery searches for (one entry per search call)."""
    calls: list[int] = []
    search = gallery._search

    def counted(q: Any, k: int) -> Any:
        calls.append(len(q))
        return search(q, k)

    monkeypatch.setattr(gallery, "_search", counted)
    return calls


@pytest.mark.parametrize(
    ("index", "people", "cfg"),
    [
        ("flat", 2_000, {}),
        ("auto", 2_000, {}),  # exact below exact_below
        ("auto", 3_000, {"exact_below": 1_000}),  # compressed, re-ranked
    ],
)
def test_a_probe_s_answer_does_not_depend_on_the_probes_searched_with_it(
    index: str, people: int, cfg: dict[str, Any]
) -> None:
    gallery, looks = _gallery(index, people, **cfg)
    assert gallery.compressed == ("exact_below" in cfg)
    probes = _probes(looks, 64)
    one_by_one = [gallery.identify(p) for p in probes]
    assert sum(d.identity is not None for d in one_by_one) >= 30  # the near half matches
    for size in (1, 5, 19, 20, 21, 64):  # Faiss switches to BLAS from 20 probes
        assert gallery.identify_batch(probes[:size]) == one_by_one[:size]
        together = gallery.search(probes[:size], 12)
        for i in range(size):
            alone = gallery.search(probes[i : i + 1], 12)
            assert np.array_equal(together.distances[i], alone.distances[0])
            assert np.array_equal(together.labels[i], alone.labels[0])


def test_prefetched_answers_are_used_until_the_gallery_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gallery, looks = _gallery("flat", 200)
    probes = _probes(looks, 10)
    expected = [gallery.identify(p) for p in probes]
    searches = _count_searches(gallery, monkeypatch)

    gallery.prefetch(probes)
    assert searches == [10]  # one search for the batch
    assert [gallery.identify(p) for p in probes] == expected
    assert searches == [10]  # and none for the probes one by one
    # A probe not prefetched is searched (alone), the others still not.
    stranger = _faces(1)[0]
    gallery.identify_batch(np.stack([probes[0], stranger]))
    assert searches == [10, 1]

    # A new identity near probe 9 (a stranger so far): the prefetched "unknown" must not stand.
    gallery.add(Identity("late"), probes[9:10] + _faces(1) * 0.01)
    late = gallery.identify(probes[9])
    assert late.identity is not None and late.identity.id == "late"
    assert searches == [10, 1, 1]
    assert [gallery.identify(p) for p in probes[:9]] == expected[:9]  # searched again
    assert searches == [10, 1, 1, *[1] * 9]


def test_a_removal_drops_what_was_prefetched(monkeypatch: pytest.MonkeyPatch) -> None:
    gallery, looks = _gallery("auto", 200)
    probes = _probes(looks, 10)
    gallery.prefetch(probes)
    before = gallery.identify(probes[0])
    assert before.identity is not None and before.identity.id == "p0"
    gallery.remove("p0")
    # Not held any longer (it names the erased person), and not used: p0 is gone.
    assert gallery._prefetched is None
    after = gallery.identify(probes[0])
    assert after.identity is None or after.identity.id != "p0"


def test_a_compressed_index_swapped_in_invalidates_the_prefetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gallery, looks = _gallery("auto", 400, exact_below=1_000)  # 800 samples
    assert not gallery.compressed
    probes = _probes(looks, 8)
    gallery.prefetch(probes)
    held = gallery._prefetched
    assert held is not None and held.valid_for(gallery)
    # Crossing exact_below builds and swaps in the compressed index (in the call, here).
    more = _faces(400)
    gallery.add_many((Identity(f"q{i}"), more[i : i + 1]) for i in range(400))
    assert gallery.compressed
    assert not held.valid_for(gallery)
    searches = _count_searches(gallery, monkeypatch)
    gallery.identify(probes[0])
    assert searches == [1]
