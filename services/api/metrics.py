"""Prometheus metrics of one API app, in a registry of its own.

A registry per app (not the process-wide default) lets tests and embedding code build several
apps in one process without "duplicated timeseries" errors. Labels are bounded: the route
template (``/identities/{identity_id}``, never an id), the method and the status code; the
rate limit's kind (``key``, ``session``, ``wrong_key``, ``login``), never a key or an address.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from facestream.core.gallery import Gallery

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FACE_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50)


@dataclass(frozen=True)
class ApiMetrics:
    """The metrics of one app, in their own registry (one ``/metrics`` per app)."""

    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_progress: Gauge
    faces: Histogram
    rate_limited: Counter


def create_metrics(gallery: Gallery) -> ApiMetrics:
    """Metrics for one app; the gallery gauges are read from ``gallery`` at scrape time."""
    registry = CollectorRegistry(auto_describe=True)
    identities = Gauge(
        "facestream_api_gallery_identities", "Identities in the gallery.", registry=registry
    )
    identities.set_function(lambda: float(len(gallery)))
    samples = Gauge(
        "facestream_api_gallery_samples", "Face samples in the gallery.", registry=registry
    )
    samples.set_function(lambda: float(gallery.sample_count))
    return ApiMetrics(
        registry=registry,
        requests=Counter(
            "facestream_api_requests",
            "HTTP requests by endpoint, method and status code.",
            ["endpoint", "method", "status"],
            registry=registry,
        ),
        latency=Histogram(
            "facestream_api_request_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        in_progress=Gauge(
            "facestream_api_requests_in_progress", "Requests being answered.", registry=registry
        ),
        faces=Histogram(
            "facestream_api_faces_per_request",
            "Faces detected per uploaded image, by endpoint.",
            ["endpoint"],
            buckets=FACE_BUCKETS,
            registry=registry,
        ),
        rate_limited=Counter(
            "facestream_api_rate_limited",
            "Requests answered 429, by limit: key, session, wrong_key, login.",
            ["limit"],
            registry=registry,
        ),
    )
