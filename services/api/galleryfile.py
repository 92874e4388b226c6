"""The API's gallery file, shared by the running server and ``facestream erase --gallery FILE``.

The server holds its gallery in memory and rewrites the whole file after every enrollment or
erasure. An erasure made in the file by another process would be undone by the server's next
save of its older copy, and the server would go on recognising the person until restarted.
So:

* every read-change-write of the file, by the server or by :func:`erase_identity`, holds an
  exclusive advisory lock on ``FILE.lock`` beside it (one host: the volume the file is on);
* the server follows the file (:class:`WatchedFile`): when the file is not the one it last
  read or wrote (inode, size, modification time; every write is a rename, so a new inode), it
  drops from memory the identities the file no longer holds, before it answers or writes.

Writes go through a temporary file and a rename, and keep the mode of the file they replace.
"""

from __future__ import annotations

import fcntl
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facestream.core.gallery import Gallery, persistence

Signature = tuple[int, int, int]
"""``(inode, size, mtime_ns)`` of a file: changes with every write (a rename)."""


def signature(path: Path) -> Signature | None:
    """The file's :data:`Signature`, None when there is no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of the gallery file ``path`` (on ``path.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as fh:  # "a": never truncates
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def save(gallery: Gallery, path: Path) -> None:
    """Write ``gallery`` to ``path`` atomically, keeping the mode of the file it replaces (a
    new file gets the owner-only mode of :meth:`Gallery.save`). Hold :func:`locked`."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        gallery.save(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def erase_identity(path: Path, identity_id: str) -> int | None:
    """Remove ``identity_id`` and its samples from the gallery file at ``path``: the number of
    samples removed, None when there is no file or it does not hold the identity (then the file
    is left as it is). Raises :class:`~facestream.core.gallery.GalleryError` for a file that
    is not a gallery."""
    with locked(path):
        if not path.exists():
            return None
        gallery = Gallery.load(path)
        if identity_id not in gallery:
            return None
        removed = gallery.remove(identity_id)
        save(gallery, path)
        return removed


class WatchedFile:
    """The server's side: the gallery file it persists to, and the version of it it knows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known = signature(path)
        """The signature of the file as last read or written here (the server loaded it at
        start)."""

    def changed(self) -> bool:
        """Whether someone else wrote the file since this server last read or wrote it."""
        return signature(self.path) != self._known

    def follow(self, gallery: Gallery) -> list[str]:
        """Drop from ``gallery`` the identities the file no longer holds (none when the file
        did not change); their ids. Call with the server's write lock held."""
        now = signature(self.path)
        if now == self._known:
            return []
        # Only the ids are needed: read the header, not a whole gallery (no index rebuilt).
        kept = (
            {i.id for i in persistence.read(self.path).identities.values()} if now else set[str]()
        )
        gone = [i.id for i in gallery.identities() if i.id not in kept]
        for identity_id in gone:
            gallery.remove(identity_id)
        self._known = now
        return gone

    def save(self, gallery: Gallery) -> None:
        """Write ``gallery`` to the file (see :func:`save`) and know it as this server's."""
        save(gallery, self.path)
        self._known = signature(self.path)
