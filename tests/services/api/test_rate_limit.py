"""Rate limits of the face service: the token buckets on a fake clock, then through the app.

The app's buckets are reached through its middleware list and given the fake clock, so
recovery is shown without sleeping.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery
from facestream.services.api.app import create_app
from facestream.services.api.middleware import ApiKeyMiddleware
from facestream.services.api.ratelimit import RateLimits, TokenBuckets, retry_after
from facestream.services.api.settings import ApiSettings

KEY = "tests-4f9c2b7e1d8a6035"
OTHER_KEY = "rotation-93b1e0c7d24f"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the buckets ------------------------------------------------------------------------------


def test_a_burst_then_the_steady_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=60, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)  # one token a second
    clock.now += 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0, "another key has a bucket of its own"
    clock.now += 3600
    assert [buckets.take("a") for _ in range(4)][-1] > 0, "refills up to the burst, no further"


def test_a_refused_request_takes_no_token() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=60, burst=1, clock=clock)
    assert buckets.take("a") == 0.0
    for _ in range(10):
        assert buckets.take("a") > 0
    clock.now += 1.0
    assert buckets.take("a") == 0.0, "hammering while limited does not push recovery back"


def test_memory_is_bounded_and_idle_buckets_go_first() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=60, burst=2, max_buckets=100, clock=clock)
    for i in range(10_000):
        buckets.take(f"addr-{i}")
    assert len(buckets) == 100
    clock.now += 2.0  # every bucket has refilled: all idle
    buckets.take("new")
    assert len(buckets) == 1, "full buckets are dropped as soon as room is needed"


def test_the_least_recently_used_bucket_is_forgotten_when_all_are_busy() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=60, burst=1, max_buckets=2, clock=clock)
    buckets.take("a")
    buckets.take("b")
    buckets.take("a")  # "a" is used again: "b" is now the least recent
    buckets.take("c")
    assert buckets.take("a") > 0, "a's empty bucket was kept"
    assert buckets.take("b") == 0.0, "b was forgotten and starts full"


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 1.2, 59.5)] == ["1", "1", "2", "60"]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACESTREAM_API_KEY", KEY)
    monkeypatch.setenv("FACESTREAM_API_RATE_PER_MINUTE", "30")
    monkeypatch.setenv("FACESTREAM_API_LOGIN_ATTEMPTS_PER_MINUTE", "0")
    settings = ApiSettings()
    assert (settings.rate_per_minute, settings.rate_burst) == (30, 60)
    assert settings.login_attempts_per_minute == 0


# -- through the app --------------------------------------------------------------------------


def limits_of(app: FastAPI) -> RateLimits:
    for middleware in app.user_middleware:
        if middleware.cls is ApiKeyMiddleware:  # type: ignore[comparison-overlap]
            limits = middleware.kwargs["limits"]
            assert isinstance(limits, RateLimits)
            return limits
    raise AssertionError("no ApiKeyMiddleware")


def app_on(clock: FakeClock, engine: FaceEngine, **settings: Any) -> FastAPI:
    app = create_app(ApiSettings(api_keys=[KEY, OTHER_KEY], **settings), Gallery(), engine)
    limits = limits_of(app)
    for buckets in (limits.requests, limits.attempts):
        if buckets is not None:
            buckets.clock = clock
    return app


def assert_limited(response: Any) -> int:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["reason"] == "rate_limited"
    wait = int(response.headers["Retry-After"])
    assert wait >= 1
    return wait


def rate_limited_count(client: TestClient, limit: str) -> float:
    text = client.get("/metrics", headers={"X-API-Key": OTHER_KEY}).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "facestream_api_rate_limited_total"
                and sample.labels["limit"] == limit
            ):
                return sample.value
    return 0.0


def test_a_key_over_its_limit_gets_429_then_recovers(engine: FaceEngine) -> None:
    clock = FakeClock()
    app = app_on(clock, engine, rate_per_minute=60, rate_burst=3)
    with TestClient(app) as client:
        mine = {"X-API-Key": KEY}
        for _ in range(3):
            assert client.get("/identities", headers=mine).status_code == 200
        wait = assert_limited(client.get("/identities", headers=mine))
        # A large upload is refused before its body is read, like a wrong key.
        assert_limited(client.post("/recognize", headers=mine, files={"image": b"x" * 100_000}))
        assert client.get("/healthz").status_code == 200, "probes are never limited"
        assert client.get("/readyz").status_code == 200
        assert client.get("/health").status_code == 200
        # The other key has a bucket of its own (and /metrics takes one of its tokens).
        assert client.get("/identities", headers={"X-API-Key": OTHER_KEY}).status_code == 200
        assert rate_limited_count(client, "key") == 2
        clock.now += wait
        assert client.get("/identities", headers=mine).status_code == 200


def test_wrong_keys_and_logins_are_limited_per_address(engine: FaceEngine) -> None:
    clock = FakeClock()
    app = app_on(clock, engine, login_attempts_per_minute=3)
    with TestClient(app) as client:
        wrong = {"X-API-Key": "guess-0000000000000000"}
        for _ in range(3):
            assert client.get("/identities", headers=wrong).status_code == 401
        assert_limited(client.get("/identities", headers=wrong))
        assert_limited(client.post("/login", data={"api_key": "another-guess-00000"}))
        # The right key still works from the same address: only guessing is slowed.
        assert client.get("/identities", headers={"X-API-Key": KEY}).status_code == 200
        assert rate_limited_count(client, "wrong_key") == 1
        assert rate_limited_count(client, "login") == 1
        clock.now += 20  # one attempt every 20 s
        assert client.get("/identities", headers=wrong).status_code == 401
        assert_limited(client.get("/identities", headers=wrong))


def test_zero_turns_the_limits_off(engine: FaceEngine) -> None:
    app = create_app(
        ApiSettings(api_key=KEY, rate_per_minute=0, login_attempts_per_minute=0), Gallery(), engine
    )
    assert limits_of(app) == RateLimits(requests=None, attempts=None)
    with TestClient(app) as client:
        for _ in range(80):
            assert client.get("/identities", headers={"X-API-Key": KEY}).status_code == 200
