# syntax=docker/dockerfile:1
# One image for every facestream process; the command picks the role:
#   facestream detector | matcher | sink | camera ... | serve --gallery FILE | crm-example
# It runs as uid 10001 and writes nowhere but /tmp (and /data for the API's gallery file), so it
# runs with a read-only root filesystem. Build: docker build -t facestream:dev .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

# A regular (not editable) install: the image must not depend on /src. face_recognition's
# metadata asks for `dlib`, which pip would compile from source; pyproject depends on the
# prebuilt `dlib-bin` wheel instead, so face_recognition comes without its dependencies.
# Byte-code is compiled here, once: at run time the filesystem is read-only.
COPY README.md LICENSE ./
COPY facestream ./facestream
COPY services ./services
COPY schemas ./schemas
RUN pip install . \
    && pip install --no-deps face_recognition==1.3.0 \
    && python -m compileall -q /opt/venv/lib


FROM ${PYTHON_IMAGE}
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

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /tmp
# 8000: HTTP API (facestream serve). 9100: Prometheus /metrics of the workers.
EXPOSE 8000 9100
ENTRYPOINT ["facestream"]
CMD ["--help"]
