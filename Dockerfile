# syntax=docker/dockerfile:1
# One image for every facestream process; the command picks the role:
#   facestream detector | matcher | sink | camera ... | serve --gallery FILE | crm-example
# It runs as uid 10001 and writes nowhere but /tmp (and /data for the API's gallery file), so it
# runs with a read-only root filesystem.
#
# Two variants, from the same locked dependencies (requirements/, made by requirements/update.sh):
#   docker build -t facestream:dev .                        runtime: workers, API, camera on image
#                                                            folders; no opencv, no matplotlib
#   docker build --target tools -t facestream:dev-tools .   adds opencv (the camera's video
#                                                            files) and matplotlib (plots)

# Pinned by digest: a rebuild gets the same OS and Python. The digest is that of the tag as
# published; bump both together (docs/deploy.md, "The image").
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, in their own layer: rebuilt only when the lock changes. Every package is
# pinned with its hashes and installed without resolving (--no-deps): the lock is complete.
COPY requirements/runtime.txt requirements/no-deps.txt ./requirements/
RUN pip install --require-hashes --no-deps -r requirements/runtime.txt \
    && pip install --require-hashes --no-deps -r requirements/no-deps.txt

# A regular (not editable) install: the image must not depend on /src. Built with the locked
# setuptools (no build isolation, so nothing unpinned is fetched) and without dependencies,
# which the lock provides. Byte-code is compiled here, once: at run time the filesystem is
# read-only.
COPY pyproject.toml README.md LICENSE ./
COPY facestream ./facestream
COPY services ./services
COPY schemas ./schemas
RUN pip install --no-deps --no-build-isolation . \
    && python -m compileall -q /opt/venv/lib


FROM build AS build-tools
COPY requirements/tools.txt ./requirements/
# Same versions as runtime.txt for everything they share (update.sh compiles one against the
# other), so pip adds only opencv, matplotlib and their own dependencies.
RUN pip install --require-hashes --no-deps -r requirements/tools.txt \
    && python -m compileall -q /opt/venv/lib


FROM ${PYTHON_IMAGE} AS base
LABEL org.opencontainers.image.title="facestream" \
      org.opencontainers.image.description="Face recognition pipeline for retail stores on Apache Kafka" \
      org.opencontainers.image.licenses="MIT"

# Anything that wants a home or a cache directory gets the writable /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    FACESTREAM_METRICS_PORT=9100

# A numeric user, so that Kubernetes can check runAsNonRoot. /data holds the API's gallery file:
# a named volume mounted there starts with this owner.
RUN groupadd --system --gid 10001 facestream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin facestream \
    && install -d -o 10001 -g 10001 -m 0750 /data
WORKDIR /tmp
# 8000: HTTP API (facestream serve). 9100: the workers' /metrics, /healthz and /readyz.
EXPOSE 8000 9100
ENTRYPOINT ["facestream"]
CMD ["--help"]


FROM base AS tools
COPY --from=build-tools /opt/venv /opt/venv
USER 10001:10001


# The default target (last): what compose and the Kubernetes manifests run.
FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
