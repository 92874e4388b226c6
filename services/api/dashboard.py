"""The store dashboard: its page, the browser login, and the JSON API behind it (``/api/v1``).

Everything the page needs is served from the package (``pages/`` are the two HTML documents,
``static/`` their CSS, script and icon): it works without internet. The figures come from a
:class:`~facestream.services.api.stores.StoreData` given to :func:`install_dashboard`; without
one the page still loads and the JSON API answers 503.
"""

from __future__ import annotations

import hmac
import html
import logging
import re
from dataclasses import dataclass
from datetime import date
from enum import Enum
from pathlib import Path
from string import Template
from typing import Annotated, Any, Final, cast

import anyio
import redis
from fastapi import FastAPI, Form, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BeforeValidator

from facestream.services.api.errors import ApiError
from facestream.services.api.feed import FeedSlots, open_feed
from facestream.services.api.schemas import ArrivalsOut, ErrorOut, StoreDayOut, StoresOut
from facestream.services.api.session import COOKIE_NAME, SessionCodec
from facestream.services.api.settings import ApiSettings
from facestream.services.api.stores import StoreData

log = logging.getLogger(__name__)

HERE: Final = Path(__file__).parent
STATIC_URL: Final = "/static"
LOGIN_PATH: Final = "/login"
DASHBOARD_PATH: Final = "/dashboard"
API_PREFIX: Final = "/api/v1"
STORE_ID_PATTERN: Final = r"^[\w.@:-]{1,128}$"
# The pages load nothing but their own files: no inline script or style, no other origin.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DashboardContext:
    settings: ApiSettings
    data: StoreData | None
    sessions: SessionCodec
    keys: tuple[bytes, ...]
    feeds: FeedSlots


def _context(request: Request) -> DashboardContext:
    return cast(DashboardContext, request.app.state.dashboard)


def _data(request: Request) -> StoreData:
    data = _context(request).data
    if data is None:
        raise ApiError(
            503,
            "no_store_data",
            "this API was started without the pipeline's store data (run `facestream serve`)",
        )
    return data


def _page(name: str, request: Request, status: int = 200, **values: str) -> HTMLResponse:
    template = Template((HERE / "pages" / name).read_text())
    root = html.escape(str(request.scope.get("root_path", "")), quote=True)
    body = template.substitute(root=root, **{k: html.escape(v) for k, v in values.items()})
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never ``//host`` or a full URL (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return DASHBOARD_PATH
    return target


# -- pages and login --------------------------------------------------------------------------


def dashboard_page(request: Request) -> HTMLResponse:
    return _page("dashboard.html", request)


def login_page(request: Request, next: Annotated[str | None, Query()] = None) -> HTMLResponse:
    return _page("login.html", request, next=_safe_next(next), error="")


def login(
    request: Request,
    api_key: Annotated[str, Form()] = "",
    next: Annotated[str | None, Form()] = None,
) -> Response:
    context = _context(request)
    given = api_key.strip().encode()
    # Every key compared, as in the middleware: the time taken does not tell which matched.
    matches = [k for k in context.keys if _equal(given, k)]
    target = _safe_next(next)
    if not matches:
        client = request.client.host if request.client else "?"
        log.warning("dashboard login with a wrong API key from %s", client)
        return _page("login.html", request, 401, next=target, error="That API key is not valid.")
    response = RedirectResponse(f"{request.scope.get('root_path', '')}{target}", 303)
    response.set_cookie(
        COOKIE_NAME,
        context.sessions.issue(matches[0]),
        max_age=int(context.sessions.lifetime_seconds),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def logout(request: Request) -> Response:
    response = RedirectResponse(f"{request.scope.get('root_path', '')}{LOGIN_PATH}", 303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


def _equal(given: bytes, key: bytes) -> bool:
    return hmac.compare_digest(given, key)


# -- the JSON API -----------------------------------------------------------------------------

StoreId = Annotated[str, PathParam(pattern=STORE_ID_PATTERN, description="Store id.")]


def _iso_day(value: Any) -> Any:
    # Pydantic reads "0" or "1709596800" as a Unix time (1970-01-01, 2024-03-05): in a URL that
    # is a typo, not a day. Only YYYY-MM-DD goes on to be parsed as a date.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("expected a day as YYYY-MM-DD")
    return value


Day = Annotated[
    date,
    BeforeValidator(_iso_day),
    PathParam(description="The store's local day, YYYY-MM-DD."),
]


def _known(data: StoreData, store: str) -> None:
    if not data.has_store(store):
        raise ApiError(404, "unknown_store", f"no data for store {store!r}")


def _unavailable(exc: redis.RedisError) -> ApiError:
    log.warning("cannot read the store data: %s", exc)
    return ApiError(503, "store_data_unavailable", "the pipeline's Redis cannot be read now")


def list_stores(request: Request) -> dict[str, Any]:
    """Every store the pipeline has data of, with its time zone and today's local date."""
    data = _data(request)
    try:
        return {"stores": [s.as_dict() for s in data.stores()]}
    except redis.RedisError as exc:
        raise _unavailable(exc) from None


def store_day(
    request: Request,
    store: StoreId,
    day: Day,
) -> dict[str, Any]:
    """PV, UV, new/returning, members and dwell (as `facestream stats --json`), the visits
    of each local hour and the latest visits of ``store`` on its local ``day``."""
    data = _data(request)
    try:
        _known(data, store)
        return data.day(store, day).as_dict()
    except redis.RedisError as exc:
        raise _unavailable(exc) from None


def recent_arrivals(
    request: Request,
    store: StoreId,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    """The latest member arrivals at ``store``, oldest first."""
    data = _data(request)
    try:
        _known(data, store)
        return {"arrivals": [a.as_dict() for a in data.arrivals(store, None, limit)]}
    except redis.RedisError as exc:
        raise _unavailable(exc) from None


async def arrivals_stream(request: Request, store: StoreId) -> Response:
    """Member arrivals as server-sent events (`event: arrival`, JSON data, the stream entry
    id as event id): the latest few first, then each new one. Resumes after `Last-Event-ID`."""
    # Async, so that the feed slots are only ever counted on the event loop.
    context = _context(request)
    data = _data(request)
    try:
        await anyio.to_thread.run_sync(_known, data, store)
    except redis.RedisError as exc:
        raise _unavailable(exc) from None
    settings = context.settings
    return open_feed(
        request,
        data,
        store,
        context.feeds,
        poll_seconds=settings.feed_poll_seconds,
        max_seconds=settings.feed_max_seconds,
    )


# -- wiring -----------------------------------------------------------------------------------


def install_dashboard(app: FastAPI, settings: ApiSettings, data: StoreData | None) -> SessionCodec:
    """Add the dashboard's routes and static files to ``app``; the session codec the key
    middleware must use to accept its cookie."""
    secret = settings.session_secret
    sessions = SessionCodec(
        settings.keys(),
        secret.get_secret_value().strip().encode() if secret is not None else None,
        settings.session_hours * 3600,
    )
    app.state.dashboard = DashboardContext(
        settings, data, sessions, settings.keys(), FeedSlots(settings.feed_max_streams)
    )
    page: dict[str, Any] = {"include_in_schema": False, "response_class": HTMLResponse}
    app.add_api_route(DASHBOARD_PATH, dashboard_page, methods=["GET"], **page)
    app.add_api_route(LOGIN_PATH, login_page, methods=["GET"], **page)
    app.add_api_route(LOGIN_PATH, login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "No API key and no login session"},
        429: {"model": ErrorOut, "description": "Over the rate limit; see Retry-After"},
        503: {"model": ErrorOut, "description": "Store data unavailable"},
    }
    store_errors = {**errors, 404: {"model": ErrorOut, "description": "Unknown store"}}
    tags: list[str | Enum] = ["store dashboard"]
    app.add_api_route(
        f"{API_PREFIX}/stores", list_stores, response_model=StoresOut, responses=errors, tags=tags
    )
    app.add_api_route(
        f"{API_PREFIX}/stores/{{store}}/days/{{day}}",
        store_day,
        response_model=StoreDayOut,
        responses=store_errors,
        tags=tags,
    )
    app.add_api_route(
        f"{API_PREFIX}/stores/{{store}}/arrivals",
        recent_arrivals,
        response_model=ArrivalsOut,
        responses=store_errors,
        tags=tags,
    )
    app.add_api_route(
        f"{API_PREFIX}/stores/{{store}}/arrivals/stream",
        arrivals_stream,
        response_class=Response,
        responses={
            **store_errors,
            200: {"content": {"text/event-stream": {}}, "description": "Arrival events"},
        },
        tags=tags,
    )
    app.mount(STATIC_URL, StaticFiles(directory=HERE / "static"), name="static")
    return sessions
