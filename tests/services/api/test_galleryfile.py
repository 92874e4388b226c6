"""The API's gallery file shared with ``facestream erase --gallery``: an erasure made in the file
by another process reaches the running server, and no later save of the server brings it back.
Real photos, real dlib (conftest's ``engine`` and ``datasets``)."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery
from facestream.services.api.galleryfile import erase_identity, locked, save, signature
from tests.services.api.test_api import client_for, enroll_via, lfw_photo, make_app


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_erasure_in_the_file_reaches_the_running_server_and_stays(
    engine: FaceEngine, datasets: Path, tmp_path: Path
) -> None:
    path = tmp_path / "gallery.npz"
    app, gallery = make_app(engine, gallery_path=path)
    client = client_for(app)
    chavez = [lfw_photo(datasets, "Hugo_Chavez", n) for n in (1, 2, 3)]
    assert enroll_via(client, "Hugo_Chavez", chavez).status_code == 200
    assert enroll_via(client, "Tom_Ridge", [lfw_photo(datasets, "Tom_Ridge", 1)]).status_code == 200
    path.chmod(0o640)  # as an operator set it: every rewrite keeps it

    # Another process (facestream erase --gallery) erases Hugo Chavez from the file.
    assert erase_identity(path, "Hugo_Chavez") == 3
    assert "Hugo_Chavez" not in Gallery.load(path) and mode_of(path) == 0o640
    assert "Hugo_Chavez" in gallery  # the server has not looked at the file yet

    # The server follows the file before it answers: no longer recognised, nor listed.
    probe = client.post("/recognize", files={"image": lfw_photo(datasets, "Hugo_Chavez", 4)})
    assert [f["identity"] for f in probe.json()["faces"]] == [None]
    assert "Hugo_Chavez" not in gallery and gallery.sample_count == 1
    assert [i["id"] for i in client.get("/identities").json()["items"]] == ["Tom_Ridge"]

    # Its next save (an enrollment) does not bring the erased person back.
    r = enroll_via(client, "Tom_Ridge", [lfw_photo(datasets, "Tom_Ridge", 2)])
    assert r.status_code == 200, r.text
    on_disk = Gallery.load(path)
    assert "Hugo_Chavez" not in on_disk and on_disk.sample_count == 2
    assert mode_of(path) == 0o640
    # Erased already: the API's own DELETE finds nobody, and erasing again changes nothing.
    assert client.delete("/identities/Hugo_Chavez").status_code == 404
    before = signature(path)
    assert erase_identity(path, "Hugo_Chavez") is None
    assert signature(path) == before
    # The API's own erasure writes the file it persists to, keeping its mode too.
    r = client.delete("/identities/Tom_Ridge")
    assert r.status_code == 200 and r.json()["persisted"] is True
    assert len(Gallery.load(path)) == 0 and mode_of(path) == 0o640


def test_a_save_of_the_server_waits_for_an_erasure_in_progress(
    engine: FaceEngine, datasets: Path, tmp_path: Path
) -> None:
    """The server's read-change-write and the erasure's take the same file lock: an enrollment
    that arrives while the file is being erased saves after it, and keeps the erasure."""
    path = tmp_path / "gallery.npz"
    app, _ = make_app(engine, gallery_path=path)
    client = client_for(app)
    assert enroll_via(client, "Hugo_Chavez", [lfw_photo(datasets, "Hugo_Chavez", 1)]).is_success
    answers: list[int] = []
    photo = lfw_photo(datasets, "Tom_Ridge", 1)
    with locked(path):
        enrolling = threading.Thread(
            target=lambda: answers.append(enroll_via(client, "Tom_Ridge", [photo]).status_code)
        )
        enrolling.start()
        time.sleep(1.0)
        assert enrolling.is_alive() and not answers  # waiting for the lock
        # What erase_identity does while it holds the lock.
        erased = Gallery.load(path)
        erased.remove("Hugo_Chavez")
        save(erased, path)
    enrolling.join(timeout=30)
    assert answers == [200]
    on_disk = Gallery.load(path)
    assert [i.id for i in on_disk.identities()] == ["Tom_Ridge"]


def test_no_file_or_no_such_identity_changes_nothing(tmp_path: Path) -> None:
    assert erase_identity(tmp_path / "none.npz", "Hugo_Chavez") is None
    assert not (tmp_path / "none.npz").exists()
    Gallery().save(tmp_path / "empty.npz")
    before = signature(tmp_path / "empty.npz")
    assert erase_identity(tmp_path / "empty.npz", "Hugo_Chavez") is None
    assert signature(tmp_path / "empty.npz") == before
