"""The endpoints of the face service and what they share (:class:`ApiContext`).

Endpoints that decode images or run dlib are plain ``def``: FastAPI runs them in its thread
pool, so the event loop keeps serving ``/health`` and ``/metrics`` meanwhile. Each uploaded
file is read in chunks and refused past ``max_upload_bytes``; pixels are bounded by
``max_pixels`` before any pixel is decoded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, cast

import numpy as np
from fastapi import Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from facestream.core.engine import Encoding, Face, FaceEngine
from facestream.core.enrollment import judge
from facestream.core.gallery import Decision, Gallery, Identity, UnknownIdentity
from facestream.core.images import ImageError, ImageTooLarge, RGBImage, load_image
from facestream.core.photos import Encoded
from facestream.core.policy import Judge
from facestream.core.verification import verify_images
from facestream.services.api.errors import ApiError, image_error
from facestream.services.api.galleryfile import WatchedFile, locked
from facestream.services.api.metrics import ApiMetrics
from facestream.services.api.schemas import (
    BoxOut,
    EnrollOut,
    ErasureOut,
    FaceOut,
    HealthOut,
    IdentityListOut,
    IdentityOut,
    PhotoOut,
    QualityOut,
    RecognizeOut,
    VerifyOut,
)
from facestream.services.api.settings import ApiSettings

log = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 256 * 1024
IDENTITY_ID_PATTERN: Final = r"^\w[\w.@:-]{0,127}$"


@dataclass(frozen=True)
class ApiContext:
    """What the endpoints of one app share."""

    settings: ApiSettings
    gallery: Gallery
    judge: Judge | None
    """The calibrated normalised policy (``policy_dir``), or None: threshold and margin."""
    engine: FaceEngine
    metrics: ApiMetrics
    write_lock: threading.Lock
    """Serialises change-and-save: without it, two saves could finish in the wrong order and
    leave an older gallery on disk."""
    file: WatchedFile | None
    """The gallery file (``gallery_path``), followed for erasures made in it by another
    process (``facestream erase --gallery``); None: nothing is persisted."""


def _context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.context)


Context = Annotated[ApiContext, Depends(_context)]


# -- helpers ---------------------------------------------------------------------------------


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The bytes of one uploaded file, read in chunks; :class:`ImageTooLarge` past ``limit``."""
    chunks: list[bytes] = []
    total = 0
    while chunk := upload.file.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise ImageTooLarge(f"the file is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(ctx: ApiContext, upload: UploadFile) -> RGBImage:
    settings = ctx.settings
    data = read_upload(upload, settings.max_upload_bytes)
    return load_image(data, max_pixels=settings.max_pixels, max_bytes=settings.max_upload_bytes)


def _face_out(face: Face, decision: Decision | None) -> FaceOut:
    q = face.quality
    quality = QualityOut(
        passed=q.passed,
        reasons=list(q.reasons),
        size_px=q.size_px,
        sharpness=round(q.sharpness, 1),
        score=round(q.score, 3),
    )
    box = BoxOut(**face.box.model_dump())
    if decision is None:
        return FaceOut(
            box=box,
            detector=face.detector,
            quality=quality,
            identity=None,
            reason="low_quality",
            distance=None,
            margin=None,
        )
    # Candidates are left out on purpose: telling a stranger whom they resemble most would
    # leak who is enrolled.
    found = decision.as_dict()
    ident = decision.identity
    return FaceOut(
        box=box,
        detector=face.detector,
        quality=quality,
        identity=IdentityOut(id=ident.id, name=ident.name, kind=ident.kind) if ident else None,
        reason=found["reason"],
        distance=found["distance"],
        margin=found["margin"],
    )


def _follow(ctx: ApiContext) -> None:
    """Forget the identities erased from the gallery file by another process, before the
    gallery answers: a person erased there is not recognised by this server any more."""
    if ctx.file is None or not ctx.file.changed():
        return
    with ctx.write_lock:
        _follow_locked(ctx)


def _follow_locked(ctx: ApiContext) -> None:
    if ctx.file is not None and (gone := ctx.file.follow(ctx.gallery)):
        log.info("%d identities erased from the gallery file by another process", len(gone))


@contextmanager
def _changing(ctx: ApiContext) -> Iterator[None]:
    """Hold what a change of the gallery needs: the server's write lock, then the file's lock
    (shared with ``facestream erase --gallery``), with the file's erasures followed first, so
    that the save that ends the change cannot bring back an identity erased in the file."""
    with ctx.write_lock:
        if ctx.file is None:
            yield
            return
        with locked(ctx.file.path):
            _follow_locked(ctx)
            yield


def _persist(ctx: ApiContext) -> bool:
    """Save the gallery to its file, if it has one (inside :func:`_changing`)."""
    if ctx.file is None:
        return False
    ctx.file.save(ctx.gallery)
    return True


def _identity_out(identity: Identity) -> IdentityOut:
    return IdentityOut(id=identity.id, name=identity.name, kind=identity.kind)


# -- endpoints -------------------------------------------------------------------------------


def recognize(
    ctx: Context, image: Annotated[UploadFile, File(description="JPEG, PNG or BMP photo.")]
) -> RecognizeOut:
    """Find every face in the photo and tell who each one is, or that it is unknown."""
    try:
        rgb = _decode(ctx, image)
    except ImageError as exc:
        raise image_error(exc, "image") from exc
    _follow(ctx)
    faces = ctx.engine.faces(rgb)
    ctx.metrics.faces.labels("/recognize").observe(len(faces))
    encodable = [i for i, f in enumerate(faces) if f.encoding is not None]
    encodings = [cast(Encoding, faces[i].encoding) for i in encodable]
    if not encodings:
        decisions = []
    elif ctx.judge is not None:
        decisions = [j.decision for j in ctx.judge.judge_batch(np.stack(encodings))]
    else:
        decisions = ctx.gallery.identify_batch(np.stack(encodings))
    by_face = dict(zip(encodable, decisions, strict=True))
    out = [_face_out(face, by_face.get(i)) for i, face in enumerate(faces)]
    log.info(
        "recognize: %d faces, %d known",
        len(out),
        sum(1 for f in out if f.identity is not None),
    )
    return RecognizeOut(width=rgb.shape[1], height=rgb.shape[0], faces=out)


def verify(
    ctx: Context,
    image_a: Annotated[UploadFile, File(description="First photo.")],
    image_b: Annotated[UploadFile, File(description="Second photo.")],
) -> VerifyOut:
    """Are the main faces of two photos the same person? A photo without one clear subject
    answers 200 with ``same`` false, ``distance`` null and the reason."""
    limit = ctx.settings.max_upload_bytes
    data: list[bytes] = []
    for field, upload in (("image_a", image_a), ("image_b", image_b)):
        try:
            data.append(read_upload(upload, limit))
        except ImageError as exc:
            raise image_error(exc, field) from exc
    try:
        result = verify_images(data[0], data[1], ctx.settings.verify_threshold, ctx.engine)
    except ImageError as exc:
        # verify_images does not say which photo failed; see the report to the lead.
        raise image_error(exc, "image_a or image_b") from exc
    return VerifyOut.model_validate(result.as_dict())


def enroll(
    ctx: Context,
    identity_id: Annotated[
        str,
        Form(
            alias="id",
            pattern=IDENTITY_ID_PATTERN,
            description="Identity to create or add samples to: letters, digits, _ . @ : -",
        ),
    ],
    photos: Annotated[list[UploadFile], File(description="One or more portraits.")],
    name: Annotated[
        str | None, Form(max_length=200, description="Display name; kept if omitted.")
    ] = None,
) -> EnrollOut:
    """Add the usable photos to an identity, with a verdict for every photo.

    A photo is enrolled when it shows one clear subject. If none of the photos is usable the
    answer is 422 ``no_usable_photo`` (its ``error.photos`` lists each verdict) and nothing
    changes. When ``gallery_path`` is set, the gallery file is rewritten before the answer.
    """
    settings = ctx.settings
    if len(photos) > settings.max_photos_per_enroll:
        raise ApiError(
            422,
            "too_many_photos",
            f"{len(photos)} photos sent; at most {settings.max_photos_per_enroll} per request",
        )
    results: list[PhotoOut] = []
    vectors: list[Encoding] = []
    for index, upload in enumerate(photos):
        filename = upload.filename or f"photo-{index}"
        try:
            rgb = _decode(ctx, upload)
            faces = ctx.engine.faces(rgb)
            ctx.metrics.faces.labels("/enroll").observe(len(faces))
            encoded = Encoded(Path(filename), tuple(faces), (rgb.shape[0], rgb.shape[1]))
        except ImageError as exc:
            encoded = Encoded(Path(filename), error=f"{exc.reason}: {exc.message}")
        verdict = judge(encoded)
        results.append(
            PhotoOut(index=index, filename=filename, status=verdict.status, detail=verdict.detail)
        )
        if verdict.encoding is not None:
            vectors.append(verdict.encoding)
    if not vectors:
        raise ApiError(
            422,
            "no_usable_photo",
            f"none of the {len(photos)} photos shows one clear, sharp face",
            photos=[r.model_dump() for r in results],
        )
    with _changing(ctx):
        old = ctx.gallery.identity(identity_id) if identity_id in ctx.gallery else None
        old_samples = ctx.gallery.samples(identity_id) if old else None
        identity = Identity(
            identity_id,
            name if name is not None else (old.name if old else ""),
            old.kind if old else "member",
            dict(old.meta) if old else {},
        )
        count = ctx.gallery.add(identity, np.stack(vectors))
        try:
            persisted = _persist(ctx)
        except Exception as exc:
            # Undo, so the answer (an error) and the gallery in memory agree with the file.
            ctx.gallery.remove(identity_id)
            if old is not None and old_samples is not None:
                ctx.gallery.add(old, old_samples)
            log.exception("could not save the gallery to %s", settings.gallery_path)
            raise ApiError(500, "persist_failed", "the gallery could not be saved") from exc
    log.info("enrolled %d of %d photos into an identity", len(vectors), len(photos))
    return EnrollOut(
        identity=_identity_out(identity),
        created=old is None,
        enrolled=len(vectors),
        samples=count,
        persisted=persisted,
        photos=results,
    )


def erase(ctx: Context, identity_id: str) -> ErasureOut:
    """Erase an identity and every face sample of it, from memory and from the gallery file."""
    with _changing(ctx):
        try:
            identity = ctx.gallery.identity(identity_id)
            samples = ctx.gallery.samples(identity_id)
        except UnknownIdentity as exc:
            raise ApiError(404, "unknown_identity", "no identity with this id") from exc
        erased = ctx.gallery.remove(identity_id)
        try:
            persisted = _persist(ctx)
        except Exception as exc:
            # Put it back: a failed erasure must stay visible and be retried, not half-done.
            ctx.gallery.add(identity, samples)
            log.exception("could not save the gallery to %s", ctx.settings.gallery_path)
            raise ApiError(500, "persist_failed", "the gallery could not be saved") from exc
    log.info("erased an identity with %d samples (persisted=%s)", erased, persisted)
    return ErasureOut(id=identity_id, erased=True, samples_erased=erased, persisted=persisted)


def list_identities(
    ctx: Context,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> IdentityListOut:
    """One page of the enrolled identities, sorted by id."""
    _follow(ctx)
    everyone = ctx.gallery.identities()
    page = [_identity_out(i) for i in everyone[offset : offset + limit]]
    return IdentityListOut(total=len(everyone), offset=offset, limit=limit, items=page)


async def health(ctx: Context) -> HealthOut:
    """Liveness and readiness (no API key needed)."""
    return HealthOut(status="ok", identities=len(ctx.gallery), samples=ctx.gallery.sample_count)


async def metrics(ctx: Context) -> Response:
    """Prometheus metrics of this app, in the text exposition format."""
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
