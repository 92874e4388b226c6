"""Run the face service with uvicorn: :func:`serve` for the CLI, :func:`main` for ``-m``."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery, GalleryError
from facestream.services.api.settings import ApiSettings
from facestream.services.api.stores import StoreData

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 30


def open_gallery(settings: ApiSettings) -> Gallery:
    """The gallery at ``settings.gallery_path``; an empty one if the file does not exist yet
    (it is created by the first enrollment) or no path is set (nothing is persisted).

    Raises :class:`GalleryError` when the file exists but is not a gallery.
    """
    path = settings.gallery_path
    if path is None:
        log.warning("no gallery path set: enrollments live in memory only")
        return Gallery()
    if not path.exists():
        log.warning("no gallery at %s yet; it will be created by the first enrollment", path)
        return Gallery()
    gallery = Gallery.load(path)
    log.info("loaded %d identities from %s", len(gallery), path)
    return gallery


def serve(
    settings: ApiSettings,
    gallery: Gallery,
    host: str | None = None,
    port: int | None = None,
    *,
    engine: FaceEngine | None = None,
    stores: StoreData | None = None,
) -> None:
    """Serve the API on ``host:port`` (default: the settings') until SIGINT or SIGTERM.
    ``stores`` feeds the store dashboard (see :func:`~.app.create_app`).

    Blocks. On a signal uvicorn stops accepting connections and lets requests in flight
    finish, for at most ``GRACEFUL_SHUTDOWN_SECONDS``. Logging is left as the caller set it.
    """
    import uvicorn

    from facestream.services.api.app import create_app

    app = create_app(settings, gallery, engine, stores=stores)
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # keep the caller's logging configuration
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def main() -> None:
    """Entry point of ``python -m facestream.services.api``: settings from the environment."""
    try:
        settings = ApiSettings()
    except ValidationError as exc:
        raise SystemExit(f"facestream api: invalid settings\n{exc}") from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        gallery = open_gallery(settings)
    except GalleryError as exc:
        raise SystemExit(f"facestream api: {exc}") from None
    serve(settings, gallery)
