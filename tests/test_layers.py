"""The layering rule of CONTRIBUTING.md, checked on every module: imports only go down.

Layers, bottom-up (a package of a higher rank may import any package of a lower rank, and its
own package; never a sibling of the same rank, never anything above it):

0. ``facestream.schemas``: message contracts and topic keys;
1. ``facestream.core`` (recognition) and ``facestream.runtime`` (the Kafka worker runtime);
2. ``facestream.services.<service>``: each service on its own, no service imports another;
3. ``facestream.admin`` (members, erasure) and ``facestream.devstack`` (local Kafka + Redis);
4. ``facestream.tools`` (replay, simulator, demos);
5. ``facestream.cli``.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "facestream"

RANKS: dict[str, int] = {
    "facestream.schemas": 0,
    "facestream.core": 1,
    "facestream.runtime": 1,
    "facestream.services": 2,
    "facestream.admin": 3,
    "facestream.devstack": 3,
    "facestream.tools": 4,
    "facestream.cli": 5,
}
SERVICES = ("camera", "detector", "matcher", "sink", "api")


def component(module: str) -> str | None:
    """The layer component of a module: ``facestream.core``, ``facestream.services.sink``..."""
    parts = module.split(".")
    if parts[0] != "facestream" or len(parts) < 2:
        return None
    top = ".".join(parts[:2])
    if top == "facestream.services" and len(parts) >= 3:
        return ".".join(parts[:3])
    return top if top in RANKS else None


def rank(comp: str) -> int:
    return RANKS[".".join(comp.split(".")[:2])]


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package, through the links to services/ and schemas/."""
    found = [
        Path(folder) / name
        for folder, _, names in os.walk(PACKAGE, followlinks=True)
        for name in names
        if name.endswith(".py")
    ]
    for path in sorted(found):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            # `from facestream import tools` imports the subpackage `facestream.tools`.
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def violations() -> list[str]:
    found = []
    for module, path in modules():
        here = component(module)
        for line, target in imports(module, path):
            if target.split(".")[0] in ("services", "schemas"):
                found.append(f"{path}:{line}: imports top-level {target!r}; use facestream.*")
                continue
            there = component(target)
            if here is None or there is None or there == here:
                continue
            if rank(there) >= rank(here):
                found.append(f"{path}:{line}: {here} (layer {rank(here)}) imports {target}")
    return sorted(set(found))


def test_imports_only_go_down() -> None:
    assert violations() == []


def test_the_walk_sees_every_layer() -> None:
    seen = {component(m) for m, _ in modules()}
    assert {f"facestream.services.{s}" for s in SERVICES} <= seen
    assert {"facestream.schemas", "facestream.core", "facestream.runtime", "facestream.cli"} <= seen


def test_every_package_has_a_layer() -> None:
    loose = [m for m, _ in modules() if m.count(".") >= 1 and component(m) is None]
    assert loose == [], "every module belongs to a layer (add it to RANKS and CONTRIBUTING.md)"
    services = {p.name for p in (PACKAGE / "services").iterdir() if (p / "__init__.py").is_file()}
    assert services == set(SERVICES)


def test_tests_and_benchmarks_use_the_one_import_root() -> None:
    bad = []
    for folder in ("tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, target in imports("x", path):
                if target.split(".")[0] in ("services", "schemas"):
                    bad.append(f"{path}:{line}: {target}")
    assert bad == []


def test_the_wheel_has_a_single_import_root() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["facestream*"]
    # services/ and schemas/ stay top-level folders, linked into the package.
    for name in ("services", "schemas"):
        link = PACKAGE / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()


@pytest.mark.parametrize(
    ("module", "target", "allowed"),
    [
        ("facestream.services.sink.store", "facestream.runtime.settings", True),
        ("facestream.core.engine", "facestream.schemas.messages", True),
        ("facestream.core.engine", "facestream.runtime.runner", False),
        ("facestream.services.api.routes", "facestream.services.matcher.worker", False),
        ("facestream.admin.members", "facestream.devstack.stack", False),
        ("facestream.tools.replay", "facestream.cli", False),
        ("facestream.schemas.wire", "facestream.core.engine", False),
    ],
)
def test_the_rule_itself(module: str, target: str, allowed: bool) -> None:
    """The checker would catch an upward or sideways import (so the test above can fail)."""
    here, there = component(module), component(target)
    assert here is not None and there is not None
    assert (rank(there) < rank(here)) is allowed


@pytest.mark.parametrize("service", ["detector", "matcher", "sink", "camera"])
def test_workers_start_from_any_directory(service: str, tmp_path: Path) -> None:
    """``python -m facestream.services.<name>`` works outside the checkout: the installed
    package is the only import root (no top-level ``services`` found by accident in the cwd)."""
    done = subprocess.run(
        [sys.executable, "-m", f"facestream.services.{service}", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
