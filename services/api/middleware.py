"""ASGI middleware of the face service: API key (or login cookie) check with rate limits, body
limit, metrics.

All are plain ASGI (not ``BaseHTTPMiddleware``), so they never buffer or re-stream bodies.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import cookie_parser
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facestream.services.api.errors import error_response
from facestream.services.api.metrics import ApiMetrics
from facestream.services.api.ratelimit import RateLimits, TokenBuckets, retry_after
from facestream.services.api.session import COOKIE_NAME, SessionCodec

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"


class ApiKeyMiddleware:
    """Answer 401 unless the request carries one of the keys in ``X-API-Key``.

    Done here rather than in a FastAPI dependency because FastAPI parses (and spools to disk)
    a multipart body before it runs dependencies: an anonymous client must not get that far.

    With ``sessions``, the paths under ``session_paths`` (the dashboard and its JSON API, all
    read-only) also accept a valid login cookie instead of the header; every other path still
    needs the header. A browser asking for one of ``pages`` without either is redirected to
    ``login_path``. Paths under ``public_prefixes`` (static assets) need neither.

    With ``limits``, each accepted key (a login cookie: each client address) takes a token from
    ``limits.requests``, and each wrong key or ``POST login_path`` one of the client address
    from ``limits.attempts``, to slow key guessing; an empty bucket answers 429 with
    ``Retry-After``. Public paths (health probes, docs) are never limited. Limiting here, after
    the key check and before the body is read, means a limited client costs no upload.
    """

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[bytes],
        public_paths: Iterable[str],
        *,
        public_prefixes: Iterable[str] = (),
        sessions: SessionCodec | None = None,
        session_paths: Iterable[str] = (),
        pages: Iterable[str] = (),
        login_path: str = "/login",
        limits: RateLimits | None = None,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.sessions = sessions
        self.session_paths = tuple(session_paths)
        self.pages = frozenset(pages)
        self.login_path = login_path
        self.limits = limits or RateLimits(requests=None, attempts=None)
        self.metrics = metrics
        if not self.keys:
            raise ValueError("ApiKeyMiddleware needs at least one key")

    def _matching(self, given: bytes) -> int | None:
        """The index of the key ``given`` is, or None."""
        # Compare against every key, without stopping at the first match, so the time taken
        # does not tell which key (or how much of one) was right.
        results = [hmac.compare_digest(given, key) for key in self.keys]
        return results.index(True) if any(results) else None

    def _limited(self, buckets: TokenBuckets | None, key: str, kind: str) -> Response | None:
        """The 429 answer when ``key`` has no token left in ``buckets``, else None."""
        if buckets is None:
            return None
        wait = buckets.take(key)
        if wait <= 0.0:
            return None
        if self.metrics is not None:
            self.metrics.rate_limited.labels(kind).inc()
        response = error_response(
            429, "rate_limited", f"too many requests; retry in {retry_after(wait)} s"
        )
        response.headers["Retry-After"] = retry_after(wait)
        return response

    def _has_session(self, headers: Headers, path: str) -> bool:
        if self.sessions is None or not _under(path, self.session_paths):
            return False
        value = cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME)
        return value is not None and self.sessions.valid(value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = str(scope.get("root_path", ""))
        path = str(scope["path"]).removeprefix(root)
        address = str((scope.get("client") or ("?", 0))[0])
        limited: Response | None
        if path == self.login_path and scope["method"] == "POST":
            limited = self._limited(self.limits.attempts, address, "login")
            if limited is not None:
                await limited(scope, receive, send)
                return
        if path in self.public_paths or _under(path, self.public_prefixes):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get(API_KEY_HEADER)
        response: Response
        if given is None:
            if self._has_session(headers, path):
                limited = self._limited(self.limits.requests, f"session {address}", "session")
                await (limited or self.app)(scope, receive, send)
                return
            if path in self.pages:
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + (f"?{query}" if query else "")
                location = f"{root}{self.login_path}?{urlencode({'next': target})}"
                response = RedirectResponse(location, status_code=303)
            else:
                response = error_response(
                    401, "missing_api_key", f"send the API key in the {API_KEY_HEADER} header"
                )
        elif (index := self._matching(given.strip().encode("latin-1"))) is None:
            limited = self._limited(self.limits.attempts, address, "wrong_key")
            if limited is None:
                # Once limited, only the metric counts them: a guessing client cannot fill logs.
                log.warning("rejected a wrong API key from %s on %s", address, path)
            response = limited or error_response(401, "invalid_api_key", "the API key is not valid")
        else:
            # Buckets by the key's position, so no key is kept in another place in memory.
            limited = self._limited(self.limits.requests, f"key {index}", "key")
            await (limited or self.app)(scope, receive, send)
            return
        await response(scope, receive, send)


def _under(path: str, prefixes: Iterable[str]) -> bool:
    """``path`` is one of ``prefixes`` or below one (``/a`` covers ``/a`` and ``/a/b``)."""
    return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in prefixes)


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes its limit. FastAPI lets
    HTTPExceptions from body parsing through unchanged, so the JSON error handler answers."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over the limit of their path, with 413.

    A declared Content-Length over the limit is refused before a byte of the body is read;
    a body without one (chunked) or longer than declared is counted as it streams in and cut
    off at the limit. Starlette's own limiter answers a declared size with plain text, not
    with our JSON error, hence this one.
    """

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope["path"]).removeprefix(str(scope.get("root_path", "")))
        limit = self.limits.get(path, self.default)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            response = error_response(413, "too_large", BodyTooLarge(limit).detail)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)


class MetricsMiddleware:
    """Count requests by route template, method and status, and time them."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, router: Router) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    def _endpoint(self, scope: Scope) -> str:
        # The route template, not the raw path: ids in paths would make labels unbounded.
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return str(getattr(route, "path", "other"))
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self._endpoint(scope)
        status = 500  # what the client gets when the app raises before responding

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
