"""One error shape for every failure: ``{"error": {"reason": ..., "message": ...}}``.

Status codes: 400 malformed request body, 401 missing or wrong API key, 404 unknown identity
or route, 413 upload over the byte or pixel limit, 415 not an image or not JPEG/PNG/BMP,
422 invalid or missing fields, and images that are empty or truncated/corrupt (the request
was well-formed and the format is supported, but the content cannot be processed), 429 over
the rate limit (with ``Retry-After``), 500 a bug or a gallery file that could not be written.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facestream.core.images import ImageError

log = logging.getLogger(__name__)

IMAGE_ERROR_STATUS: Final[dict[str, int]] = {
    "too_large": 413,
    "not_an_image": 415,
    "unsupported_format": 415,
    "empty": 422,
    "truncated": 422,
}
_HTTP_REASONS: Final[dict[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class ApiError(Exception):
    """A failure to report to the client; ``extra`` fields are added inside ``error``."""

    def __init__(self, status: int, reason: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.extra = extra


def error_response(
    status: int, reason: str, message: str, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """The JSON response for an error."""
    return JSONResponse(
        {"error": {"reason": reason, "message": message, **(extra or {})}}, status_code=status
    )


def image_error(exc: ImageError, field: str) -> ApiError:
    """Translate an image decoding failure of upload ``field`` to its HTTP error."""
    status = IMAGE_ERROR_STATUS.get(exc.reason, 422)
    return ApiError(status, exc.reason, f"{field}: {exc.message}")


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.message, exc.extra)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = _HTTP_REASONS.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    return error_response(exc.status_code, reason, message)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    parts = []
    for err in errors:
        # ("body", "image") -> "image"; ("query", "limit") -> "limit": the client knows where.
        loc = [str(p) for p in err.get("loc", ())][1:] or ["request"]
        parts.append(f"{'.'.join(loc)}: {err.get('msg', 'invalid')}")
    missing = bool(errors) and all(err.get("type") == "missing" for err in errors)
    return error_response(422, "missing_field" if missing else "invalid_request", "; ".join(parts))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a JSON ``{"error": ...}`` body."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
