"""The HTTP face service: recognize, verify, enroll, erase and list identities.

:func:`create_app` builds the FastAPI app around a gallery and a face engine; it does no work
at import time. The endpoints are in :mod:`facestream.services.api.routes`.

Uploads are bounded twice: each endpoint has a request body limit (checked against
Content-Length before a byte is read, and counted again while the body streams in, for chunked
uploads), and each file is read in chunks up to ``max_upload_bytes``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Any, Final

from fastapi import FastAPI, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline

from facestream.core.engine import EngineConfig, FaceEngine
from facestream.core.gallery import Gallery
from facestream.core.policy import Judge, load_policies
from facestream.services.api import routes
from facestream.services.api.dashboard import (
    API_PREFIX,
    DASHBOARD_PATH,
    LOGIN_PATH,
    STATIC_URL,
    install_dashboard,
)
from facestream.services.api.errors import install_error_handlers
from facestream.services.api.galleryfile import WatchedFile
from facestream.services.api.metrics import create_metrics
from facestream.services.api.middleware import (
    API_KEY_HEADER,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
)
from facestream.services.api.ratelimit import RateLimits, TokenBuckets
from facestream.services.api.routes import ApiContext
from facestream.services.api.schemas import ErrorOut
from facestream.services.api.settings import ApiSettings
from facestream.services.api.stores import StoreData

log = logging.getLogger(__name__)

FORM_OVERHEAD_BYTES: Final = 64 * 1024
"""Allowance for multipart headers and text fields on top of the files themselves."""
DOCS_ASSETS_URL: Final = "/docs-assets"
"""Swagger UI and ReDoc files, served from the fastapi-offline package instead of a CDN."""
PUBLIC_PATHS: Final = (
    "/health",
    "/healthz",
    "/readyz",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    LOGIN_PATH,
    "/logout",
)
PUBLIC_PREFIXES: Final = (STATIC_URL, DOCS_ASSETS_URL)

_api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
# Only for the OpenAPI document (the "Authorize" button in /docs); ApiKeyMiddleware enforces.
_SECURED = [Security(_api_key_scheme)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in (
        (400, "Malformed request body (not valid multipart form data)"),
        (401, "Missing or wrong API key"),
        (413, "Upload over the byte or pixel limit"),
        (415, "Not an image, or not JPEG/PNG/BMP"),
        (422, "Missing or invalid field, empty or truncated image"),
        (429, "Over the rate limit of the API key; see Retry-After"),
    )
}


def _engine_for(settings: ApiSettings, engine: FaceEngine | None) -> FaceEngine:
    if engine is None:
        return FaceEngine(EngineConfig(max_pixels=settings.max_pixels))
    if engine.config.max_pixels == settings.max_pixels:
        return engine
    # verify_images decodes with the engine's pixel limit, so it must be the API's. The dlib
    # models are loaded once per process and shared, so this second engine costs nothing.
    return FaceEngine(replace(engine.config, max_pixels=settings.max_pixels))


def _rate_limits(settings: ApiSettings) -> RateLimits:
    requests = attempts = None
    clients = settings.rate_limit_clients
    if settings.rate_per_minute > 0:
        requests = TokenBuckets(settings.rate_per_minute, settings.rate_burst, max_buckets=clients)
    if settings.login_attempts_per_minute > 0:
        per_minute = settings.login_attempts_per_minute
        burst = max(1, round(per_minute))
        attempts = TokenBuckets(per_minute, burst, max_buckets=clients)
    return RateLimits(requests=requests, attempts=attempts)


def create_app(
    settings: ApiSettings,
    gallery: Gallery,
    engine: FaceEngine | None = None,
    *,
    stores: StoreData | None = None,
) -> FastAPI:
    """Build the face service around ``gallery``.

    ``settings.threshold`` and ``settings.margin``, when set, replace those of the gallery's
    config (the gallery object is changed). ``engine`` defaults to a new :class:`FaceEngine`;
    pass one to share it between apps. ``stores`` feeds the store dashboard (``/dashboard``,
    ``/api/v1``); without it those answer 503.
    """
    if settings.threshold is not None:
        gallery.config = replace(gallery.config, threshold=settings.threshold)
    if settings.margin is not None:
        gallery.config = replace(gallery.config, margin=settings.margin)
    judge = None
    if settings.policy_dir is not None:
        policies = load_policies(settings.policy_dir)
        cohort = [policies.cohort] if policies.cohort is not None else []
        judge = Judge(policies.member, gallery, cohort)
    context = ApiContext(
        settings=settings,
        gallery=gallery,
        judge=judge,
        engine=_engine_for(settings, engine),
        metrics=create_metrics(gallery),
        write_lock=threading.Lock(),
        file=WatchedFile(settings.gallery_path) if settings.gallery_path is not None else None,
    )
    # FastAPIOffline is FastAPI with /docs and /redoc loading their scripts from this server.
    app = FastAPIOffline(
        title="facestream face service",
        summary="Recognize, verify and enroll faces; erase identities; store figures.",
        description=(
            f"Send the API key in the `{API_KEY_HEADER}` header (all but /health). "
            f"The store dashboard is at `{DASHBOARD_PATH}`; browsers log in there."
        ),
        version="0.1.0",
        static_url=DOCS_ASSETS_URL,
        favicon_url=f"{STATIC_URL}/favicon.svg",
    )
    app.state.context = context
    install_error_handlers(app)
    sessions = install_dashboard(app, settings, stores)

    post: dict[str, Any] = {"methods": ["POST"], "dependencies": _SECURED, "responses": _ERRORS}
    app.add_api_route("/recognize", routes.recognize, **post)
    app.add_api_route("/verify", routes.verify, **post)
    app.add_api_route("/enroll", routes.enroll, **post)
    app.add_api_route(
        "/identities/{identity_id}",
        routes.erase,
        methods=["DELETE"],
        dependencies=_SECURED,
        responses={
            404: {"model": ErrorOut, "description": "Unknown identity"},
            401: _ERRORS[401],
            429: _ERRORS[429],
        },
    )
    app.add_api_route(
        "/identities",
        routes.list_identities,
        methods=["GET"],
        dependencies=_SECURED,
        responses={401: _ERRORS[401], 429: _ERRORS[429]},
    )
    app.add_api_route("/health", routes.health, methods=["GET"])
    # Probes: live while the event loop answers; ready once this app exists, which is after the
    # gallery and the dlib models are loaded (create_app does both before returning).
    app.add_api_route("/healthz", routes.health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", routes.health, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/metrics",
        routes.metrics,
        methods=["GET"],
        dependencies=_SECURED,
        response_class=Response,
        responses={401: _ERRORS[401], 429: _ERRORS[429]},
    )

    # Each added middleware wraps the previous ones: metrics see everything, the key is
    # checked before the size, and neither reads the body.
    upload = settings.max_upload_bytes
    limits = {
        "/recognize": upload + FORM_OVERHEAD_BYTES,
        "/verify": 2 * upload + FORM_OVERHEAD_BYTES,
        "/enroll": settings.max_photos_per_enroll * upload + FORM_OVERHEAD_BYTES,
    }
    app.add_middleware(BodyLimitMiddleware, limits=limits, default=FORM_OVERHEAD_BYTES)
    app.add_middleware(
        ApiKeyMiddleware,
        keys=settings.keys(),
        public_paths=PUBLIC_PATHS,
        public_prefixes=PUBLIC_PREFIXES,
        sessions=sessions,
        session_paths=(DASHBOARD_PATH, API_PREFIX),
        pages=(DASHBOARD_PATH,),
        login_path=LOGIN_PATH,
        limits=_rate_limits(settings),
        metrics=context.metrics,
    )
    app.add_middleware(MetricsMiddleware, metrics=context.metrics, router=app.router)
    log.info(
        "face service ready: %d identities, threshold %.3f, gallery file %s",
        len(gallery),
        gallery.config.threshold,
        settings.gallery_path or "none (changes are lost on restart)",
    )
    return app
