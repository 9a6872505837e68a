"""`revisit deploy build-engines`: the TensorRT engines an edge configuration loads, built ahead of its first start
(install-edge.sh runs it on a Jetson)."""

from __future__ import annotations

import argparse

from revisit.deploy.errors import DeployError
from revisit.shared.errors import RevisitError


def run_build_engines(args: argparse.Namespace) -> int:
    from revisit.edge.config import load
    from revisit.models import store
    from revisit.models.manifest import Manifest

    config = load(args.config)
    engine = config.engine
    if engine.backend.type != "tensorrt":
        print(f"{args.config}: backend {engine.backend.type!r} loads the ONNX files directly; no engines to build")
        return 0
    from revisit.shared.backends.tensorrt import build_engine

    manifest = Manifest.load(custom=engine.custom_models)
    directory = args.models or engine.models_dir
    for name, role in ((engine.detector.model, "detector"), (engine.recognizer, "recognizer")):
        model = store.resolve(manifest.get(name, role), directory)
        print(f"{name}: building (minutes on a Jetson) ...", flush=True)
        try:
            path = build_engine(model, engine.backend)
        except RevisitError:
            raise
        except Exception as exc:  # TensorRT/CUDA failures come as their own types: say which model and why
            raise DeployError(f"{name}: the TensorRT engine build failed: {type(exc).__name__}: {exc}") from exc
        print(f"{name}: {path}")
    return 0
