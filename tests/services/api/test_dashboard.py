"""The store dashboard's JSON API, login session, live feed and offline docs, on the real Redis.

The store data is written by the sink's own code (plan + Applier, as the sink worker does) so
the figures are exact and known; the browser test after a whole replay is in
test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery
from facestream.runtime.settings import PipelineSettings
from facestream.schemas import Box, MatchEvent, derived_id
from facestream.services.api.app import create_app
from facestream.services.api.session import COOKIE_NAME, SessionCodec
from facestream.services.api.settings import ApiSettings
from facestream.services.sink.reader import StoreReader
from facestream.services.sink.settings import SinkSettings
from facestream.services.sink.stats import store_stats
from facestream.services.sink.store import Applier, plan, redis_client
from tests.services.api.live_server import serving

KEY = "dashboard-test-key-7f3a9c2e"
OTHER_KEY = "second-test-key-b81d4e6f0a"
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SINK = SinkSettings(store_timezones={"paris": "Europe/Paris", "ny": "America/New_York"})
DAY = "2024-03-05"


def match(who: str, local: str, *, store: str = "paris", member: bool = False) -> MatchEvent:
    """A match at the store's local wall-clock time ``local`` (``YYYY-MM-DD HH:MM``)."""
    zone = PARIS if store == "paris" else NEW_YORK
    at = datetime.fromisoformat(local).replace(tzinfo=zone).astimezone(UTC)
    obs = derived_id(store, who, at.isoformat())
    return MatchEvent(
        event_id=derived_id("match", obs),
        kind="member" if member else "returning",
        member_id=who if member else None,
        face_id=None if member else who,
        store_id=store,
        camera_id="entrance",
        captured_at=at,
        frame_id=f"f-{obs[:8]}",
        observation_id=obs,
        box=Box(top=0, right=10, bottom=10, left=0),
        model_version="test",
    )


# Paris, 5 March 2024 (UTC+1): member m1 09:10-09:40 (one visit, dwell 30 min); visitor f1 at
# 14:05 once, also seen the day before (returning); visitor f2 14:30-14:45, again at 18:00
# (a second visit). New York: one visitor at 23:30 local, already 6 March in UTC.
EVENTS = (
    match("f1", "2024-03-04 17:00"),
    match("m1", "2024-03-05 09:10", member=True),
    match("m1", "2024-03-05 09:40", member=True),
    match("f1", "2024-03-05 14:05"),
    match("f2", "2024-03-05 14:30"),
    match("f2", "2024-03-05 14:45"),
    match("f2", "2024-03-05 18:00"),
    match("n1", "2024-03-05 23:30", store="ny"),
)


def apply(client: redis.Redis, prefix: str, *events: MatchEvent) -> None:
    Applier(client, prefix).apply([plan(e, SINK, prefix) for e in events])


@pytest.fixture
def client(pipeline: PipelineSettings) -> Iterator[redis.Redis]:
    """The test's Redis, with the events above applied; its keys are deleted afterwards."""
    r = redis_client(pipeline)
    apply(r, pipeline.redis_prefix, *EVENTS)
    yield r
    keys = list(r.scan_iter(match=f"{pipeline.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def make_app(
    engine: FaceEngine, pipeline: PipelineSettings, client: redis.Redis | None, **settings: Any
) -> FastAPI:
    stores = StoreReader(pipeline, SINK, client=client) if client is not None else None
    api = ApiSettings(api_keys=[KEY, OTHER_KEY], **settings)
    return create_app(api, Gallery(), engine, stores=stores)


@pytest.fixture
def app(engine: FaceEngine, pipeline: PipelineSettings, client: redis.Redis) -> FastAPI:
    return make_app(engine, pipeline, client)


@pytest.fixture
def http(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


def get(http: TestClient, path: str, key: str | None = KEY) -> httpx.Response:
    response: httpx.Response = http.get(path, headers={"X-API-Key": key} if key else {})
    return response


# -- the JSON API -----------------------------------------------------------------------------


def test_stores_are_listed_with_their_time_zones(http: TestClient) -> None:
    body = get(http, "/api/v1/stores").json()
    assert [(s["store"], s["timezone"]) for s in body["stores"]] == [
        ("ny", "America/New_York"),
        ("paris", "Europe/Paris"),
    ]
    assert all(len(s["today"]) == 10 for s in body["stores"])


def test_a_day_has_the_figures_of_stats_json_plus_the_hourly_series(
    http: TestClient, pipeline: PipelineSettings, client: redis.Redis
) -> None:
    body = get(http, f"/api/v1/stores/paris/days/{DAY}").json()
    stats = store_stats("paris", DAY, pipeline, client=client).as_dict()
    # Every key and value of `facestream stats --json`, from the same function.
    assert {k: body[k] for k in stats} == stats
    assert (body["pv"], body["uv"], body["new"], body["returning"]) == (4, 3, 2, 1)
    assert (body["dwell_seconds_avg"], body["dwell_visits"], body["members"]) == (
        1350.0,
        2,
        ["m1"],
    )
    assert body["timezone"] == "Europe/Paris"
    expected = [0] * 24
    expected[9], expected[14], expected[18] = 1, 2, 1
    assert body["hourly"] == expected
    assert sum(body["hourly"]) == body["pv"]
    # Latest first, in the store's local time.
    recent = [(v["kind"], v["start"], v["end"], v["dwell_seconds"]) for v in body["recent"]]
    assert recent == [
        ("visitor", "2024-03-05T18:00:00+01:00", "2024-03-05T18:00:00+01:00", None),
        ("visitor", "2024-03-05T14:30:00+01:00", "2024-03-05T14:45:00+01:00", 900.0),
        ("visitor", "2024-03-05T14:05:00+01:00", "2024-03-05T14:05:00+01:00", None),
        ("member", "2024-03-05T09:10:00+01:00", "2024-03-05T09:40:00+01:00", 1800.0),
    ]
    assert body["recent"][-1]["member_id"] == "m1"


def test_days_are_the_store_local_days(http: TestClient) -> None:
    """23:30 in New York is the next day in UTC: it counts on the local day, at hour 23."""
    body = get(http, f"/api/v1/stores/ny/days/{DAY}").json()
    assert (body["pv"], body["hourly"][23], sum(body["hourly"])) == (1, 1, 1)
    assert body["recent"][0]["start"] == "2024-03-05T23:30:00-05:00"
    assert get(http, "/api/v1/stores/ny/days/2024-03-06").json()["pv"] == 0


def test_recent_arrivals(http: TestClient) -> None:
    body = get(http, "/api/v1/stores/paris/arrivals").json()
    assert [(a["member_id"], a["at"]) for a in body["arrivals"]] == [
        ("m1", "2024-03-05T09:10:00+01:00")
    ]


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/api/v1/stores/nowhere/days/2024-03-05", 404, "unknown_store"),
        ("/api/v1/stores/paris/days/2024-13-45", 422, "invalid_request"),
        ("/api/v1/stores/paris/days/yesterday", 422, "invalid_request"),
        ("/api/v1/stores/pa%7Bris/days/2024-03-05", 422, "invalid_request"),
        ("/api/v1/stores/nowhere/arrivals", 404, "unknown_store"),
        ("/api/v1/stores/nowhere/arrivals/stream", 404, "unknown_store"),
    ],
)
def test_bad_requests_are_clear(http: TestClient, path: str, status: int, reason: str) -> None:
    response = get(http, path)
    assert response.status_code == status
    assert response.json()["error"]["reason"] == reason
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/v1/stores", f"/api/v1/stores/paris/days/{DAY}"])
def test_the_json_api_needs_a_key(http: TestClient, path: str) -> None:
    assert get(http, path, key=None).status_code == 401
    wrong = get(http, path, key="not-the-key-at-all-123")
    assert (wrong.status_code, wrong.json()["error"]["reason"]) == (401, "invalid_api_key")
    assert get(http, path, key=OTHER_KEY).status_code == 200


def test_without_store_data_the_api_says_so(engine: FaceEngine, pipeline: PipelineSettings) -> None:
    with TestClient(make_app(engine, pipeline, None)) as http:
        response = get(http, "/api/v1/stores")
        assert (response.status_code, response.json()["error"]["reason"]) == (503, "no_store_data")
        assert get(http, "/dashboard").status_code == 200


def test_an_unreachable_redis_is_503(engine: FaceEngine, pipeline: PipelineSettings) -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.5, decode_responses=True)
    with TestClient(make_app(engine, pipeline, dead)) as http:
        response = get(http, f"/api/v1/stores/paris/days/{DAY}")
        assert response.status_code == 503
        assert response.json()["error"]["reason"] == "store_data_unavailable"


# -- browser login ----------------------------------------------------------------------------


def login(http: TestClient, key: str, next_path: str = "/dashboard") -> httpx.Response:
    response: httpx.Response = http.post("/login", data={"api_key": key, "next": next_path})
    return response


def test_the_dashboard_redirects_to_the_login_page(http: TestClient) -> None:
    response = http.get("/dashboard?store=paris&date=2024-03-05")
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/login?next=%2Fdashboard%3Fstore%3Dparis%26date%3D2024-03-05"
    )
    page = http.get(response.headers["location"])
    assert page.status_code == 200 and 'name="api_key"' in page.text
    assert 'value="/dashboard?store=paris&amp;date=2024-03-05"' in page.text


def test_login_sets_a_strict_http_only_cookie_that_opens_the_dashboard(http: TestClient) -> None:
    wrong = login(http, "wrong-key-0123456789abc")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert COOKIE_NAME not in http.cookies
    response = login(http, KEY)
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard")
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert KEY not in cookie
    page = http.get("/dashboard")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert http.get("/api/v1/stores").status_code == 200
    # The cookie opens the dashboard and its read-only API, nothing else.
    assert http.get("/identities").status_code == 401
    assert http.get("/metrics").status_code == 401
    assert http.post("/recognize").status_code == 401
    out = http.post("/logout")
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert http.get("/dashboard").status_code == 303
    assert http.get("/api/v1/stores").status_code == 401


def test_a_forged_or_foreign_cookie_is_refused(http: TestClient) -> None:
    assert login(http, KEY).status_code == 303
    good = http.cookies[COOKIE_NAME]
    expiry, tag, signature = good.split(".")
    forged = f"{int(expiry) + 10**6}.{tag}.{signature}"
    for value in (forged, "1.2.3", "garbage"):
        http.cookies.set(COOKIE_NAME, value)
        assert http.get("/dashboard").status_code == 303
        assert http.get("/api/v1/stores").status_code == 401


def test_login_never_redirects_off_site(http: TestClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        assert login(http, KEY, target).headers["location"] == "/dashboard"


def test_sessions_expire_and_end_with_their_key() -> None:
    codec = SessionCodec([KEY.encode(), OTHER_KEY.encode()], b"s" * 32, 3600)
    value = codec.issue(OTHER_KEY.encode(), now=1000.0)
    assert codec.valid(value, now=1000.0 + 3599)
    assert not codec.valid(value, now=1000.0 + 3600)
    # The other key removed from the settings (same secret): its sessions end.
    assert not SessionCodec([KEY.encode()], b"s" * 32, 3600).valid(value, now=1001.0)
    # Another secret (another process without a configured one): not valid either.
    assert not SessionCodec([OTHER_KEY.encode()], b"t" * 32, 3600).valid(value, now=1001.0)


def test_an_unsafe_session_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="SESSION_SECRET is unsafe"):
        ApiSettings(api_key=KEY, session_secret="changeme")


# -- every asset is local ---------------------------------------------------------------------


def test_docs_and_dashboard_assets_are_served_locally(http: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        text = http.get(page).text
        assert "/docs-assets/" in text and "cdn" not in text.lower() and "https://" not in text
    for asset in (
        "/docs-assets/swagger-ui-bundle.js",
        "/docs-assets/swagger-ui.css",
        "/docs-assets/redoc.standalone.js",
        "/static/dashboard.js",
        "/static/dashboard.css",
        "/static/favicon.svg",
    ):
        response = http.get(asset)
        assert response.status_code == 200 and len(response.content) > 200, asset
    for page in ("/dashboard", "/login"):
        # An HTML page of ours that named another origin would need the internet.
        login(http, KEY)
        assert "http" not in http.get(page).text.replace('"/', "")


# -- the live feed (real server: server-sent events need a real socket) -----------------------


class Events:
    """Reads server-sent events off a streaming response, one call after another."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self, count: int = 1, timeout: float = 15.0) -> list[dict[str, str]]:
        """The next ``count`` events (comment and retry lines skipped). An event is taken at
        its ``data`` line, the last the server writes: httpx holds back the blank line that
        ends it until more bytes come."""
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        for line in self.lines:
            assert time.monotonic() < deadline, f"only {len(events)} events in {timeout}s"
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            current[field] = value
            if field == "data":
                events.append(current)
                current = {}
                if len(events) == count:
                    return events
        raise AssertionError(f"the stream ended after {len(events)} events")


def wait_closed(app: FastAPI) -> None:
    deadline = time.monotonic() + 10
    while app.state.dashboard.feeds.open:
        assert time.monotonic() < deadline, "a feed never gave its slot back"
        time.sleep(0.05)


def test_the_feed_sends_the_latest_arrivals_then_new_ones_and_resumes(
    engine: FaceEngine, pipeline: PipelineSettings, client: redis.Redis
) -> None:
    app = make_app(engine, pipeline, client, feed_poll_seconds=0.1)
    headers = {"X-API-Key": KEY}
    with serving(app) as base, httpx.Client(base_url=base, timeout=20) as http:
        url = "/api/v1/stores/paris/arrivals/stream"
        with http.stream("GET", url, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = Events(response)
            (first,) = events.next()
            assert first["event"] == "arrival"
            assert json.loads(first["data"])["member_id"] == "m1"
            apply(client, pipeline.redis_prefix, match("m2", "2024-03-05 19:00", member=True))
            (second,) = events.next()
            assert json.loads(second["data"])["at"] == "2024-03-05T19:00:00+01:00"
        wait_closed(app)
        # A reconnecting browser sends the last id it saw: it gets what came after, only.
        with http.stream("GET", url, headers={**headers, "Last-Event-ID": first["id"]}) as again:
            (resumed,) = Events(again).next()
            assert resumed["id"] == second["id"]
        wait_closed(app)


def test_feeds_are_bounded_in_number_and_hold_no_thread(
    engine: FaceEngine, pipeline: PipelineSettings, client: redis.Redis
) -> None:
    app = make_app(
        engine, pipeline, client, feed_poll_seconds=0.05, feed_max_streams=2, feed_max_seconds=20
    )
    url = "/api/v1/stores/paris/arrivals/stream"
    headers = {"X-API-Key": KEY}
    with serving(app) as base, httpx.Client(base_url=base, timeout=20) as http:
        threads_before = threading.active_count()
        for _ in range(10):
            with (
                http.stream("GET", url, headers=headers) as a,
                http.stream("GET", url, headers=headers) as b,
            ):
                # Held in names: a dropped iterator closes its response (and its feed).
                events_a, events_b = Events(a), Events(b)
                events_a.next()
                events_b.next()
                full = http.get(url, headers=headers)
                assert (full.status_code, full.json()["error"]["reason"]) == (503, "too_many_feeds")
            wait_closed(app)
        # 20 feeds opened and closed: polling runs in the shared pool, no thread per feed.
        assert threading.active_count() <= threads_before + 4


def test_a_feed_ends_by_itself_after_its_lifetime(
    engine: FaceEngine, pipeline: PipelineSettings, client: redis.Redis
) -> None:
    app = make_app(engine, pipeline, client, feed_poll_seconds=0.05, feed_max_seconds=1)
    with serving(app) as base, httpx.Client(base_url=base, timeout=20) as http:
        started = time.monotonic()
        url = "/api/v1/stores/paris/arrivals/stream"
        with http.stream("GET", url, headers={"X-API-Key": KEY}) as response:
            body = b"".join(response.iter_bytes())
        # The browser's EventSource reconnects after `retry` and resumes from the last id.
        assert time.monotonic() - started < 5
        assert b"retry: " in body and b"event: arrival" in body
        wait_closed(app)


def test_the_feed_needs_a_key(http: TestClient) -> None:
    response = http.get("/api/v1/stores/paris/arrivals/stream")
    assert response.status_code == 401


def test_facestream_serve_feeds_the_dashboard(
    client: redis.Redis, pipeline: PipelineSettings, tmp_path: Path
) -> None:
    """The real command, as k8s and compose run it: `facestream serve` reads the sink's Redis
    (prefix and store zones from the environment) and answers the dashboard's JSON API; an
    unknown FACESTREAM_* variable stops it before it serves."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        **pipeline.to_env(),
        "FACESTREAM_API_KEY": KEY,
        "FACESTREAM_SINK_STORE_TIMEZONES": json.dumps(SINK.store_timezones),
    }
    command = [str(Path(sys.executable).parent / "facestream"), "serve", "--gallery"]
    command += [str(tmp_path / "gallery.npz"), "--port", str(port), "--no-progress"]
    typo = subprocess.run(
        command,
        env={**env, "FACESTREAM_API_SESION_SECRET": "x"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert typo.returncode != 0 and "FACESTREAM_API_SESION_SECRET" in typo.stderr
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/stores/paris/days/{DAY}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                reply = httpx.get(url, headers={"X-API-Key": KEY}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "facestream serve did not start"
                time.sleep(0.5)
        assert reply.status_code == 200, reply.text
        day = reply.json()
        expected = store_stats("paris", DAY, pipeline, client=client).as_dict()
        assert {k: day[k] for k in expected} == expected and day["timezone"] == "Europe/Paris"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
