#!/usr/bin/env bash
# Pins the image's Python dependencies, with hashes, for its Python (3.11 on linux x86_64):
#
#   runtime.txt    what the workers, the API and the camera (image folders) need
#   tools.txt      runtime.txt plus opencv (the camera's video files) and matplotlib (plots):
#                  the `tools` image only
#   no-deps.txt    face_recognition, installed without its metadata's dependencies (it asks for
#                  `dlib`, a source build; dlib-bin in runtime.txt is the same library prebuilt)
#
# Run it after changing the dependencies in pyproject.toml (tests/deploy fails until you do):
#   pip install uv && requirements/update.sh [--upgrade]
# Versions already pinned here are kept when they still satisfy pyproject.toml; --upgrade takes
# the newest on PyPI instead.
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-uv}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Split pyproject's dependencies: opencv and matplotlib only for the tools image.
python3 - "$work" <<'PY'
import re
import sys
import tomllib

TOOLS_ONLY = {"opencv-python-headless", "matplotlib"}
with open("pyproject.toml", "rb") as fh:
    dependencies = tomllib.load(fh)["project"]["dependencies"]
def name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()
# The sink's IANA time zones must not depend on the base image shipping /usr/share/zoneinfo
# (tzdata used to arrive through matplotlib, which the runtime image no longer has).
runtime = [d for d in dependencies if name(d) not in TOOLS_ONLY] + ["tzdata"]
tools = [d for d in dependencies if name(d) in TOOLS_ONLY]
assert {name(d) for d in tools} == TOOLS_ONLY, "pyproject.toml lost a tools-only dependency"
with open(f"{sys.argv[1]}/runtime.in", "w") as fh:
    fh.write("\n".join(runtime) + "\n")
with open(f"{sys.argv[1]}/tools.in", "w") as fh:
    fh.write("\n".join(runtime + tools) + "\n")
PY
echo "face_recognition==1.3.0" > "$work/no-deps.in"

common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
  --custom-compile-command "requirements/update.sh" --quiet "$@")
"$uv" pip compile "${common[@]}" "$work/runtime.in" -o requirements/runtime.txt
# The tools image shares every version of the runtime image.
"$uv" pip compile "${common[@]}" "$work/tools.in" -c requirements/runtime.txt \
  -o requirements/tools.txt
"$uv" pip compile "${common[@]}" --no-deps "$work/no-deps.in" -o requirements/no-deps.txt
# The temporary input files are named in the annotations; name what they stand for instead.
sed -i "s|$work/runtime.in|pyproject.toml|; s|$work/tools.in|pyproject.toml|; s|$work/no-deps.in|requirements/update.sh|; s|-c requirements/runtime.txt|requirements/runtime.txt|" \
  requirements/runtime.txt requirements/tools.txt requirements/no-deps.txt
