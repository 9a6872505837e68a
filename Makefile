# Revisit — the two commands: `make demo` (run it) and `make test` (test it).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export REVISIT_MODELS ?= $(abspath ../shared/models)
IMAGE ?= $(firstword $(wildcard ../shared/facedata/dev/photos/_groups/*.jpg))

.PHONY: install test lint demo clean

$(BIN)/revisit: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (Revisit needs Python 3.11); set PY=/path/to/python3.11"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,peer]'
	$(BIN)/pip install -q --no-deps 'face_recognition>=1.3,<2'
	@touch $@

install: $(BIN)/revisit

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Until the edge and central parts land, the main job runs the face engine on a photo.
demo: install
	@test -n "$(IMAGE)" || { echo "error: no image; run 'make demo IMAGE=path/to/photo.jpg'"; exit 1; }
	$(BIN)/revisit models list
	$(BIN)/revisit faces $(IMAGE)

clean:
	rm -rf $(VENV) build *.egg-info
