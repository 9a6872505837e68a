"""`revisit faces IMAGE...`: run the face engine on images and print what it finds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from revisit.shared.config import EngineConfig, load_toml


def register(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option

    p = sub.add_parser("faces", help="detect, assess and embed faces in images")
    p.add_argument("images", nargs="+", type=Path)
    add_models_option(p)
    add_engine_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--save-crops", type=Path, metavar="DIR", help="write each aligned 112x112 crop here")
    p.set_defaults(func=run)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file; its [engine] table configures the face engine")
    p.add_argument("--detector", help="detector model name (default from config: scrfd_2.5g_kps)")
    p.add_argument("--backend", choices=["onnxruntime", "opencv", "tensorrt"], help="inference backend")


def engine_config(args: argparse.Namespace, base: EngineConfig | None = None) -> EngineConfig:
    """`base` (else --config's [engine] table, else the defaults) with --detector / --backend applied."""
    if base is not None:
        config = base
    else:
        config = load_toml(args.config, EngineConfig, "engine") if args.config else EngineConfig()
    update: dict = {}
    if args.detector:
        update["detector"] = config.detector.model_copy(update={"model": args.detector})
    if args.backend:
        update["backend"] = {"type": args.backend}
    if update:
        config = EngineConfig.model_validate({**config.model_dump(), **update})
    return config


def run(args: argparse.Namespace) -> int:
    import cv2

    from revisit.shared.engine import FaceEngine
    from revisit.shared.errors import ImageError
    from revisit.shared.image import read_image

    engine = FaceEngine(engine_config(args), args.models)
    failures = 0
    if args.save_crops:
        args.save_crops.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        try:
            image = read_image(path)
        except ImageError as exc:
            print(f"{path}: error: {exc}")
            failures += 1
            continue
        faces = engine.analyze(image)
        if args.json:
            print(
                json.dumps(
                    {
                        "image": str(path),
                        "size": [image.shape[1], image.shape[0]],
                        "recognizer_id": engine.recognizer_id,
                        "faces": [
                            {
                                "box": [round(float(v), 1) for v in f.box],
                                "score": round(f.score, 4),
                                "quality": {k: round(v, 4) for k, v in f.quality.as_dict().items()},
                            }
                            for f in faces
                        ],
                    }
                )
            )
        else:
            print(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(faces)} face(s), recognizer {engine.recognizer_id}")
            for i, f in enumerate(faces):
                x1, y1, x2, y2 = (int(v) for v in f.box)
                q = f.quality
                print(
                    f"  #{i}  box ({x1},{y1})-({x2},{y2})  score {f.score:.2f}  quality {q.score:.2f} "
                    f"(size {q.size:.2f}, sharp {q.sharpness:.2f}, pose {q.pose:.2f}; yaw {q.yaw_deg:+.0f}°)"
                )
        if args.save_crops:
            for i, f in enumerate(faces):
                cv2.imwrite(str(args.save_crops / f"{path.stem}_{i}.jpg"), f.crop)
    return 1 if failures else 0
