# Revisit — the two commands: `make demo` (run it) and `make test` (test it).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export REVISIT_MODELS ?= $(abspath ../shared/models)
VIDEO ?=
PORT ?= 8080

.PHONY: install test lint demo clean

$(BIN)/revisit: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (the dev install uses Python 3.11; Revisit runs on 3.10–3.13); set PY=/path/to/python3.X"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[central,dev,peer]'
	$(BIN)/pip install -q --no-deps 'face_recognition>=1.3,<2'
	@# PyGObject (the GStreamer capture path) compiles against apt's dev packages; without them its tests skip.
	$(BIN)/pip install -q -e '.[gstreamer]' || echo "warning: PyGObject not built (apt-get install libgirepository1.0-dev libcairo2-dev pkg-config); the GStreamer capture tests will skip"
	@touch $@

install: $(BIN)/revisit

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The main job on embedded defaults: central (in-process MQTT broker, the embedded vector index, SQLite, pages) and
# one edge daemon reading a video (VIDEO=file or rtsp:// URL; default: a clip from ../shared/facedata).
# The first start seeds four weeks of demo history; DEMO_ARGS=--fresh starts over, DEMO_ARGS=--no-seed skips it.
demo: install
	$(BIN)/revisit models list
	$(BIN)/revisit demo --port $(PORT) $(if $(VIDEO),--video $(VIDEO)) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
