"""The image's dependencies: locked with hashes, and opencv/matplotlib only where needed.

``requirements/*.txt`` are made by ``requirements/update.sh`` from pyproject.toml; these tests
fail when pyproject.toml asks for something the lock does not pin (run the script again).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
TOOLS_ONLY = {"opencv-python-headless", "matplotlib"}
"""What only the ``tools`` image has: the camera's video files, evaluation plots."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\]+)")


@cache
def pins(lock: str) -> dict[str, str]:
    """Name -> version of every requirement in ``requirements/{lock}``; each must carry hashes."""
    text = (LOCKS / lock).read_text()
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", text):
        if block.startswith("#") or not block.strip():
            continue
        match = _PIN.match(block)
        assert match, f"{lock}: not an exact pin: {block.splitlines()[0]}"
        assert "--hash=sha256:" in block, f"{lock}: {match.group(1)} has no hash"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def project_dependencies() -> list[Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return [Requirement(d) for d in tomllib.load(fh)["project"]["dependencies"]]


def test_every_dependency_is_locked_at_a_version_pyproject_allows() -> None:
    runtime, tools = pins("runtime.txt"), pins("tools.txt")
    for requirement in project_dependencies():
        name = canonicalize_name(requirement.name)
        lock = tools if name in TOOLS_ONLY else runtime
        assert name in lock, f"{name} is not locked: run requirements/update.sh"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            f"{name}=={lock[name]} does not satisfy {requirement}: run requirements/update.sh"
        )


def test_the_runtime_image_has_no_opencv_or_matplotlib() -> None:
    runtime, tools = pins("runtime.txt"), pins("tools.txt")
    assert not TOOLS_ONLY & runtime.keys()
    assert tools.keys() >= TOOLS_ONLY
    # The tools image is the runtime image plus: the same version of everything shared.
    assert runtime == {n: v for n, v in tools.items() if n in runtime}
    assert "tzdata" in runtime, "the sink's time zones, whatever the base image ships"


def test_face_recognition_is_locked_without_its_dependencies() -> None:
    assert pins("no-deps.txt") == {"face-recognition": "1.3.0"}
    assert "dlib" not in pins("runtime.txt"), "dlib-bin is the prebuilt wheel of the same library"


# Imports what the runtime image runs (every worker, the API, the camera and the example CRM,
# and the command line's help) with opencv and matplotlib made unimportable.
_WITHOUT_TOOLS = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cv2", "matplotlib"):
            raise ImportError(f"{name} is not in the runtime image")
        return None

sys.meta_path.insert(0, Refuse())
import facestream.services.detector.cli
import facestream.services.matcher.cli
import facestream.services.sink.cli
import facestream.services.api.app
import facestream.services.api.server
import facestream.services.camera.cli
import facestream.tools.crm_example
from click.testing import CliRunner
from facestream.cli import main
for command in ([], ["detector", "--help"], ["serve", "--help"], ["camera", "--help"]):
    result = CliRunner().invoke(main, [*command, "--help"] if not command else command)
    assert result.exit_code == 0, (command, result.output, result.exception)
print("ok")
"""


def test_the_runtime_image_runs_without_opencv_and_matplotlib() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TOOLS],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
