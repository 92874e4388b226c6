"""The gallery on real encodings: open-set decisions, every index type, erasure, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from facestream.core.engine import Encoding
from facestream.core.gallery import (
    INDEX_TYPES,
    Decision,
    Gallery,
    GalleryConfig,
    GalleryError,
    Identity,
    UnknownIdentity,
)
from facestream.core.gallery.decide import decide
from facestream.core.photos import encode_many, image_files

MEMBERS = ("Hugo_Chavez", "Gray_Davis", "Jennifer_Garner", "Gordon_Brown", "Clare_Short")
STRANGERS = ("Amber_Tamblyn", "Candice_Bergen", "Carl_Reiner", "Brian_Griese")


@pytest.fixture(scope="module")
def people(lfw: Path) -> dict[str, list[Encoding]]:
    """Up to four real encodings per person (first face of each photo)."""
    paths = [p for n in MEMBERS for p in image_files(lfw / n)[:4]]
    paths += [image_files(lfw / n)[0] for n in STRANGERS]
    out: dict[str, list[Encoding]] = {}
    for enc in encode_many(paths, workers=2):
        face = next((f for f in enc.faces if f.encoding is not None), None)
        assert face is not None and face.encoding is not None, enc.path
        out.setdefault(enc.path.parent.name, []).append(face.encoding)
    return out


def _build(people: dict[str, list[Encoding]], crowd: int = 0, **cfg: object) -> Gallery:
    """Members from three photos each, plus ``crowd`` synthetic people (three samples each,
    drawn per dimension like the real encodings) so that IVF and SQ8 train on enough data."""
    gallery = Gallery(GalleryConfig(**cfg))  # type: ignore[arg-type]
    for name in MEMBERS:
        gallery.add(Identity(name, name.replace("_", " ")), people[name][:3])
    real = np.stack([e for v in people.values() for e in v])
    rng = np.random.default_rng(7)
    for i in range(crowd):
        centre = real.mean(0) + real.std(0) * rng.standard_normal(128)
        samples = centre + 0.02 * rng.standard_normal((3, 128))
        gallery.add(Identity(f"crowd{i}", kind="visitor"), samples.astype(np.float32))
    return gallery


@pytest.mark.parametrize("index", INDEX_TYPES)
def test_members_found_strangers_unknown(people: dict[str, list[Encoding]], index: str) -> None:
    gallery = _build(people, crowd=100, index=index)
    assert gallery.index_bytes() > 0  # IVF kinds trained on 315 samples, not exact fallback
    for name in MEMBERS:
        decision = gallery.identify(people[name][3])  # the held-out fourth photo
        assert decision.identity is not None and decision.identity.id == name, decision
        assert decision.distance is not None and decision.distance <= 0.5
        assert decision.margin is not None and decision.margin >= 0.03
    for name in STRANGERS:
        decision = gallery.identify(people[name][0])
        assert decision.identity is None, (name, decision)
        assert decision.reason in ("over_threshold", "ambiguous")


@pytest.mark.parametrize("aggregate", ["mean", "trimmed"])
def test_per_person_vectors(people: dict[str, list[Encoding]], aggregate: str) -> None:
    gallery = _build(people, aggregate=aggregate)
    assert gallery.index_bytes() < _build(people).index_bytes()  # one vector per person
    for name in MEMBERS:
        assert gallery.identify(people[name][3]).identity == gallery.identity(name)


def test_distances_are_euclidean_not_squared(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people)
    probe = people["Hugo_Chavez"][3]
    expected = min(float(np.linalg.norm(probe - s)) for s in people["Hugo_Chavez"][:3])
    assert gallery.identify(probe).distance == pytest.approx(expected, abs=1e-4)


def test_cosine_metric(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people, metric="cosine", threshold=0.45)
    assert gallery.identify(people["Gray_Davis"][3]).identity == gallery.identity("Gray_Davis")


def test_margin_refuses_a_tie(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people)
    gallery.add(Identity("twin"), people["Hugo_Chavez"][:3])
    decision = gallery.identify(people["Hugo_Chavez"][3])
    assert decision.identity is None and decision.reason == "ambiguous"
    assert decision.margin == pytest.approx(0.0, abs=1e-5)
    assert {c.identity.id for c in decision.candidates[:2]} == {"Hugo_Chavez", "twin"}


@pytest.mark.parametrize("index", INDEX_TYPES)
def test_erasure_removes_from_search_and_disk(
    people: dict[str, list[Encoding]], index: str, tmp_path: Path
) -> None:
    gallery = _build(people, crowd=100, index=index)
    path = tmp_path / "gallery.npz"
    gallery.save(path)
    sample = people["Gordon_Brown"][0].tobytes()
    assert sample in _npz_payload(path)
    assert gallery.remove("Gordon_Brown") == 3
    assert gallery.identify(people["Gordon_Brown"][3]).identity is None
    assert "Gordon_Brown" not in gallery
    gallery.save(path)
    assert sample not in _npz_payload(path)
    loaded = Gallery.load(path)
    assert "Gordon_Brown" not in loaded and len(loaded) == len(MEMBERS) - 1 + 100
    with pytest.raises(UnknownIdentity):
        loaded.remove("Gordon_Brown")
    # Everyone else is still found after the removal (ids were not shuffled).
    for name in MEMBERS:
        if name != "Gordon_Brown":
            assert loaded.identify(people[name][3]).identity == loaded.identity(name)


def _npz_payload(path: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return b"".join(z.read(n) for n in z.namelist())


def test_save_load_round_trip_keeps_settings(
    people: dict[str, list[Encoding]], tmp_path: Path
) -> None:
    gallery = _build(people, index="ivf", min_train=4, nprobe=3)
    gallery.save(tmp_path / "g.npz")
    loaded = Gallery.load(tmp_path / "g.npz", threshold=0.4)
    assert loaded.config.index == "ivf" and loaded.config.nprobe == 3
    assert loaded.config.threshold == 0.4
    assert loaded.sample_count == gallery.sample_count == 15
    assert [i.id for i in loaded.identities()] == sorted(MEMBERS)
    probe = people["Clare_Short"][3]
    assert loaded.identify(probe).distance == pytest.approx(gallery.identify(probe).distance)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "g.npz"
    bad.write_bytes(b"not a gallery")
    with pytest.raises(GalleryError):
        Gallery.load(bad)


@pytest.mark.parametrize(
    "vector",
    [np.full(128, np.nan, dtype=np.float32), np.ones(64, dtype=np.float32)],
    ids=["nan", "wrong_dimension"],
)
def test_bad_vectors_refused(vector: np.ndarray) -> None:
    gallery = Gallery()
    with pytest.raises(GalleryError):
        gallery.add(Identity("x"), vector)
    with pytest.raises(GalleryError):
        gallery.identify(vector)
    assert len(gallery) == 0


def test_empty_gallery_says_so(people: dict[str, list[Encoding]]) -> None:
    decision = Gallery().identify(people["Hugo_Chavez"][0])
    assert decision.identity is None and decision.reason == "empty_gallery"


def test_ivf_exact_until_trained_then_trained(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people, index="ivf", min_train=1000)
    assert gallery.index_bytes() == 0  # not trained yet: exact search over the samples
    assert gallery.identify(people["Hugo_Chavez"][3]).identity == gallery.identity("Hugo_Chavez")
    trained = _build(people, index="ivf", min_train=4)
    assert trained.index_bytes() > 0


def test_reads_in_parallel_with_writes(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people)
    probe = people["Jennifer_Garner"][3]
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(200):
                assert gallery.identify(probe).identity == gallery.identity("Jennifer_Garner")
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(100):
        gallery.add(Identity(f"extra{i}"), people["Carl_Reiner"][0] + i)
        if i % 2:
            gallery.remove(f"extra{i}")
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert len(gallery) == len(MEMBERS) + 50


def test_search_names_its_columns(people: dict[str, list[Encoding]]) -> None:
    gallery = _build(people)
    found = gallery.search(people["Clare_Short"][3], 2)
    assert found.distances.shape == found.labels.shape == (1, 2)
    distances, labels = found  # still unpacks like Faiss's (distances, labels)
    assert distances[0, 0] <= distances[0, 1]
    assert labels[0, 0] >= 0


def _decide(distances: list[float], owners: list[int], **cfg: float) -> Decision:
    config = GalleryConfig(**cfg)  # type: ignore[arg-type]
    people = {n: Identity(f"p{n}") for n in (0, 1, 2)}
    dist = np.array(distances, dtype=np.float32)
    return decide(dist, np.array(owners, dtype=np.int64), people, config)


def test_decide_threshold_margin_and_unknown() -> None:
    # p0's second sample is not a competitor: the margin is to the nearest *other* identity.
    match = _decide([0.30, 0.32, 0.40], [0, 0, 1])
    assert match.reason == "match" and match.identity == Identity("p0")
    assert match.margin == pytest.approx(0.10)
    assert [c.identity.id for c in match.candidates] == ["p0", "p1"]
    assert _decide([0.30, 0.31], [0, 1]).reason == "ambiguous"
    assert _decide([0.30, 0.31], [0, 1], margin=0.0).reason == "match"
    assert _decide([0.55, 0.70], [0, 1]).reason == "over_threshold"
    alone = _decide([0.30, np.inf], [0, -1])
    assert alone.reason == "match" and alone.margin is None
    assert _decide([np.inf], [-1]).reason == "empty_gallery"
    assert len(_decide([0.1, 0.2, 0.3], [0, 1, 2], top_k=2).candidates) == 2


def test_rows_added_as_one_block_are_the_identities_added_one_by_one() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((6, 128)).astype(np.float32)
    people = [Identity("a"), Identity("b"), Identity("c")]
    counts = [1, 3, 2]
    block = Gallery(GalleryConfig(index="flat"))
    block.add_rows(people, counts, vectors)
    one_by_one = Gallery(GalleryConfig(index="flat"))
    one_by_one.add_many(
        [(people[0], vectors[:1]), (people[1], vectors[1:4]), (people[2], vectors[4:])]
    )
    (ids, held), (ids_one, held_one) = block.export(), one_by_one.export()
    assert ids == ids_one == ["a", "b", "b", "b", "c", "c"]
    assert np.array_equal(held, vectors) and np.array_equal(held_one, vectors)
    for probe in vectors + 0.01:
        assert block.identify(probe) == one_by_one.identify(probe)
    with pytest.raises(GalleryError, match="3 identities, 2 counts"):
        block.add_rows(people, [1, 3], vectors[:4])
    with pytest.raises(GalleryError, match="6 samples counted, 5 given"):
        block.add_rows(people, counts, vectors[:5])
    with pytest.raises(GalleryError, match="NaN"):
        block.add_rows([Identity("d")], [1], np.full((1, 128), np.nan, dtype=np.float32))
