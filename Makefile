# The README's commands. `make run` and `make test` each set up everything they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest format eval bench all clean stack-up stack-down stack-status

all: test

# face_recognition's metadata asks for `dlib`, which pip would compile from source (a long
# build); pyproject.toml depends on the prebuilt `dlib-bin` instead, and face_recognition itself
# is installed without its dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps face_recognition==1.3.0
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/facestream demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Kafka and Redis for the integration tests: installed on first use, `up` twice is harmless.
stack-up: install
	$(BIN)/facestream stack up

stack-down: install
	$(BIN)/facestream stack down

stack-status: install
	$(BIN)/facestream stack status

# Two processes (pytest-xdist), one test file each at a time: the Kafka tests mostly wait while
# the photo tests encode, so the suite takes about 11.5 minutes instead of 17 on 2 cores.
# Every test has topics, consumer groups and Redis keys of its own. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2
pytest: install stack-up
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

eval: install
	$(BIN)/facestream eval verify --pairs ../shared/datasets/lfw-fold1/pairs.txt \
		--images ../shared/datasets/lfw-fold1/images
	$(BIN)/facestream eval identify --images ../shared/datasets/lfw-fold1/images \
		--plot docs/identify-rates.png

# About 35 minutes on 2 cores; each prints its tables (docs/*benchmarks.md hold a recorded run).
bench: install stack-up
	$(BIN)/python -m benchmarks.engine
	$(BIN)/python -m benchmarks.search
	$(BIN)/python -m benchmarks.pipeline

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
