"""Helpers shared by the benchmarks: timing, percentiles, machine description, tables."""

from __future__ import annotations

import io
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def repeat(fn: Callable[[], Any], times: int, budget: float = float("inf")) -> list[float]:
    """Time ``fn`` ``times`` times, stopping early (after at least one call) once ``budget``
    seconds have been spent."""
    out: list[float] = []
    spent = 0.0
    while len(out) < times and (not out or spent < budget):
        out.append(seconds(fn))
        spent += out[-1]
    return out


def median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if len(xs) else float("nan")


def p95(xs: Sequence[float]) -> float:
    """95th percentile (linear interpolation; with few samples it is close to the maximum)."""
    return float(np.percentile(xs, 95)) if len(xs) else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def versions(packages: Sequence[str]) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine(packages: Sequence[str]) -> dict[str, Any]:
    """What the numbers were measured on; printed with every run."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average_at_start": load_average(),
        "omp_env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ
        },
        "versions": versions(packages),
    }


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table; numbers are expected to be formatted already."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table: ``-`` when missing, thousands separators when large."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def jpeg(img: Image.Image, height: int, quality: int = 90) -> bytes:
    """``img`` resized to ``height`` pixels high (aspect kept), as JPEG bytes."""
    width = round(img.width * height / img.height)
    buf = io.BytesIO()
    img.resize((width, height), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
