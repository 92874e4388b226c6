"""The face service fuzzed from its own OpenAPI document, in process (ASGI, no network).

Schemathesis generates requests for every operation (valid and invalid path, query and form
values, random bytes as images) with a fixed seed, so a failure reproduces. Each answer must
not be a 5xx, and its status code, content type and body must be ones the document declares.
The one 5xx by design is ``503 no_store_data`` from the dashboard's JSON API of an app started
without the pipeline's store data; so the dashboard's API is fuzzed once more on the real Redis,
with a store that has data. Schemathesis' own pytest plugin does not run under pytest 9, so its
strategies are driven by hypothesis here. More examples: ``FACESTREAM_FUZZ_EXAMPLES=200``.

Also: memory stays flat across many large uploads that are allowed in, read and refused.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import CheckContext
from schemathesis.core.failures import ServerError
from schemathesis.core.result import Ok
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery
from facestream.runtime.settings import PipelineSettings
from facestream.services.api.app import create_app
from facestream.services.api.dashboard import API_PREFIX
from facestream.services.api.settings import ApiSettings
from facestream.services.sink.reader import StoreReader
from facestream.services.sink.store import redis_client
from tests.services.api.test_dashboard import EVENTS, SINK, apply

KEY = "fuzzing-7c1e5a9b3d2f4068"
EXAMPLES_PER_OPERATION = int(os.environ.get("FACESTREAM_FUZZ_EXAMPLES", "60"))


def fuzz_settings(gallery_path: Path | None = None, **overrides: Any) -> ApiSettings:
    # No rate limit: the fuzzer sends hundreds of requests with one key. Small uploads keep
    # the random bodies (and the time spent on them) small.
    values: dict[str, Any] = {
        "api_key": KEY,
        "rate_per_minute": 0,
        "login_attempts_per_minute": 0,
        "max_upload_bytes": 256 * 1024,
        "max_photos_per_enroll": 4,
        "gallery_path": gallery_path,
    }
    return ApiSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def fuzz_app(engine: FaceEngine, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    # With a gallery file, so enrollment and erasure also go through saving it.
    path = tmp_path_factory.mktemp("fuzz") / "gallery.npz"
    return create_app(fuzz_settings(path), Gallery(), engine)


def not_a_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """No 5xx, except the documented 503 of the dashboard API without store data."""
    if response.status_code < 500:
        return None
    if (
        response.status_code == 503
        and case.path.startswith(API_PREFIX)
        and response.json()["error"]["reason"] == "no_store_data"
    ):
        return None
    raise ServerError(operation=case.operation.label, status_code=response.status_code)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def operation_of(result: Any) -> Any:
    """The operation of one of ``get_all_operations``' results (Ok or Err)."""
    assert isinstance(result, Ok), result
    return result.ok()


def fuzz(operation: Any, mode: GenerationMode, checks: list[Any] = CHECKS, **fixed: Any) -> None:
    """Run the checks on generated cases of ``operation``; raises the first failure."""

    # One operation at a time: schemathesis' pytest plugin reads Function._nodeid, gone in 9.
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers={"X-API-Key": KEY}, checks=checks)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx_or_off_schema(fuzz_app: FastAPI, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    failures: dict[str, str] = {}
    operations = [operation_of(result) for result in schema.get_all_operations()]
    assert len(operations) >= 10, "every documented operation is fuzzed"
    for operation in operations:
        try:
            fuzz(operation, mode)
        except Unsatisfiable:
            # Nothing invalid to send: no parameters and no body (GET /health).
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # one report for every operation that failed
            failures[operation.label] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


@pytest.fixture
def store_app(engine: FaceEngine, pipeline: PipelineSettings) -> Iterator[FastAPI]:
    """An app on the real Redis with test_dashboard's events: stores "paris" and "ny"."""
    client = redis_client(pipeline)
    apply(client, pipeline.redis_prefix, *EVENTS)
    stores = StoreReader(pipeline, SINK, client=client)
    settings = fuzz_settings(feed_max_seconds=0.2, feed_poll_seconds=0.05)
    yield create_app(settings, Gallery(), engine, stores=stores)
    keys = list(client.scan_iter(match=f"{pipeline.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_dashboard_api_of_a_known_store(store_app: FastAPI) -> None:
    """Days, limits and resumption points of a store that has data, fuzzed."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", store_app)
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = operation_of(result)
        if not operation.path.startswith(API_PREFIX):
            continue
        for mode in GenerationMode:
            try:
                # Also: nothing the document calls invalid is answered 2xx.
                checks = [*CHECKS, negative_data_rejection]
                fuzz(operation, mode, checks, path_parameters={"store": "paris"})
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures[f"{operation.label} {mode}"] = f"{type(exc).__name__}: {exc}"
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_a_day_is_only_yyyy_mm_dd(store_app: FastAPI) -> None:
    """Found by the fuzzer: ``days/0`` answered 200 with 1970-01-01 (pydantic reads digits as
    a Unix time)."""
    with TestClient(store_app, headers={"X-API-Key": KEY}) as client:
        for day in ("0", "1709596800", "2024-3-5", "2024-02-30", "２０２４-03-05"):
            response = client.get(f"/api/v1/stores/paris/days/{day}")
            assert response.status_code == 422, (day, response.text)
        assert client.get("/api/v1/stores/paris/days/2024-03-05").json()["pv"] == 4


def test_what_the_fuzzer_found_is_documented(fuzz_app: FastAPI) -> None:
    """Found by the fuzzer: a malformed multipart body answers 400 (it was missing from the
    document), and the 422 of /enroll carries ``error.photos`` (the document forbade it)."""
    document = fuzz_app.openapi()
    for path in ("/recognize", "/verify", "/enroll"):
        assert "400" in document["paths"][path]["post"]["responses"], path
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert detail.get("additionalProperties", True) is not False
    with TestClient(fuzz_app, headers={"X-API-Key": KEY}) as client:
        boundary = "7c5156fb04a2177cf9e322ad31ebde44"
        response = client.post(
            "/recognize",
            content=f"--{boundary}\r\nNone--{boundary}--\r\n".encode(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["reason"] == "bad_request"


# -- memory --------------------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_memory_stays_flat_across_large_allowed_uploads(engine: FaceEngine) -> None:
    """Python's heap (tracemalloc) must not keep anything of a request once it is answered,
    and one request must not hold many copies of its upload at once. RSS is checked too, with
    a generous bound: glibc keeps freed memory in per-thread arenas, so it moves in steps."""
    mib = 1024 * 1024
    upload = 4 * mib
    app = create_app(fuzz_settings(max_upload_bytes=upload), Gallery(), engine)
    # Just under the per-file limit, so each file is read in full before it is refused.
    body = os.urandom(upload - 1024)
    photos = [("photos", (f"p{i}.jpg", body, "image/jpeg")) for i in range(3)]
    with TestClient(app, headers={"X-API-Key": KEY}) as client:

        def round_of_uploads() -> None:
            enroll = client.post("/enroll", data={"id": "someone"}, files=photos)
            assert enroll.status_code == 422, enroll.text
            # The test client's request objects sit in reference cycles with their whole body
            # until a collection; a real server receives the body in chunks and has no copy.
            gc.collect()
            recognize = client.post("/recognize", files={"image": ("a.jpg", body, "image/jpeg")})
            assert recognize.status_code == 415, recognize.text
            gc.collect()

        for _ in range(3):  # warm up: thread pool, allocator arenas
            round_of_uploads()
        gc.collect()
        rss_before = rss_bytes()
        tracemalloc.start()
        try:
            heap_before, _ = tracemalloc.get_traced_memory()
            rounds = 12
            for _ in range(rounds):
                round_of_uploads()
            gc.collect()
            heap_after, heap_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rss_grown = rss_bytes() - rss_before
    # Each round sends 16 MiB; keeping even one file per round would be 48 MiB.
    assert heap_after - heap_before < 2 * mib, (
        f"heap grew {(heap_after - heap_before) / mib:.1f} MiB"
    )
    # The peak includes the test client's two copies of the multipart body (3 files, 12 MiB
    # each): 28-44 MiB in all, 7-11 uploads, when this was written.
    assert heap_peak - heap_before < 16 * upload, f"peak {(heap_peak - heap_before) / mib:.0f} MiB"
    assert rss_grown < 256 * mib, f"RSS grew by {rss_grown / mib:.0f} MiB over {rounds} rounds"
