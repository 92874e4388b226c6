"""Shared fixtures: the real photos, and one face engine per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facestream.core.datasets import datasets_root
from facestream.core.engine import FaceEngine
from facestream.tools import walkby

# Fixtures for the tests on the real broker and Redis (topics, settings per test).
pytest_plugins = ("tests.kafka_fixtures",)


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The datasets folder. Skipped locally when absent; under CI its absence is a failure."""
    root = datasets_root()
    if not (root / "lfw-fold1" / "images").is_dir():
        message = f"sample photos not found at {root} (set FACESTREAM_DATASETS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def lfw(datasets: Path) -> Path:
    return datasets / "lfw-fold1" / "images"


@pytest.fixture(scope="session")
def multi(datasets: Path) -> Path:
    return datasets / "multi-face"


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return FaceEngine()


def render_walkby(
    plan: walkby.ClipPlan,
    lfw: Path,
    engine: FaceEngine,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """A walk-by clip of ``plan`` rendered from the shared LFW photos into a fresh folder
    (``walkby.CLIP`` and ``walkby.TRUTH`` in it): for a test module's ``clip`` fixture."""
    out = tmp_path_factory.mktemp("walkby")
    walkby.render(lfw, out, plan, engine)
    return out
