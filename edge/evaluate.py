"""`revisit eval video`: the edge pipeline on a video file, as fast as it decodes.

The file is read with the cameras' timestamp sampling (no sleeping) and every sampled frame goes through
`CameraPipeline`; at the end of the file every open track is ended. `--naive` is the baseline: every
decoded frame, no sampling, no motion gate, no tracking, every face detected and embedded.

`identities` is the number of people after grouping the embeddings with the central service's assignment
rule (`revisit.shared.assign.OnlineClusterer`, DEFAULT_THRESHOLD): one embedding per published observation,
tracks seen in the same frames cannot join one person (co_tracks); with --naive, every embedding.

JSON keys (one object, the last line of stdout with --json):
  frames_read         frames decoded from the file (grabbed)
  frames_analyzed     frames given to the pipeline (sampled; --naive: all)
  motion_skipped      sampled frames the motion gate kept from the detector
  detector_calls      frames the detector ran on
  faces_detected      faces the detector found (before dead zones / ROI)
  tracks              confirmed tracks (--naive: one per embedded face)
  embed_calls         faces embedded
  embeddings_per_track  embed_calls / tracks that published an observation (--naive: 1)
  identities          distinct people after grouping
  cpu_s, wall_s       process CPU time (all threads) and wall time of reading + analysis, models loaded
  video, naive, fps   the input and mode (fps: the sample rate; null with --naive)
  observations, tracks_unembeddable, detector, recognizer_id
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from revisit.edge.capture import CaptureStats, iter_file_frames
from revisit.edge.config import CameraConfig, EdgeConfig
from revisit.shared.assign import DEFAULT_THRESHOLD, OnlineClusterer
from revisit.shared.config import validate
from revisit.shared.errors import ConfigError, RevisitError
from revisit.shared.schema import Observation

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)
DEFAULT_FPS = 5.0


def register_eval(sub: argparse._SubParsersAction) -> None:
    from revisit.cli import add_models_option
    from revisit.shared.cli import add_engine_options

    p = sub.add_parser(
        "video",
        help="the edge pipeline on a video file: work done, tracks, embeddings, identities",
        description="Runs the edge pipeline on a video file as fast as it can. --config takes an edge TOML "
        "file: its engine, motion, tracker and recognise tables and its first camera's settings are used.",
    )
    p.add_argument("--video", type=Path, required=True, metavar="FILE", help="video file")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    p.add_argument(
        "--naive", action="store_true", help="baseline: every frame, no motion gate or tracking, every face embedded"
    )
    p.add_argument("--fps", type=float, help=f"sample rate (default: the config's camera, else {DEFAULT_FPS:g})")
    add_models_option(p)
    add_engine_options(p)
    p.set_defaults(func=run_video)


def eval_config(args: argparse.Namespace) -> EdgeConfig:
    """The edge configuration for one video: --config's tables (if any) with one camera reading the file."""
    from revisit.shared.cli import engine_config

    data: dict[str, Any] = {}
    if args.config:
        try:
            data = tomllib.loads(Path(args.config).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{args.config}: not valid TOML: {exc}") from exc
    cameras = data.get("cameras") or [{}]
    camera = {"id": "video", "fps": DEFAULT_FPS, **cameras[0], "source": str(args.video)}
    if args.fps:
        camera["fps"] = args.fps
    data = {"site": "eval", "device": "eval", **data, "cameras": [camera]}
    config = validate(EdgeConfig, data, str(args.config or "eval video"))
    assert isinstance(config, EdgeConfig)
    return config.model_copy(update={"engine": engine_config(args, config.engine)})


def evaluate_video(path: Path, config: EdgeConfig, engine: Any, naive: bool = False) -> dict[str, Any]:
    """Run the pipeline (or the naive baseline) over the file; the figures of the JSON line."""
    from revisit.edge.pipeline import CameraPipeline, NaivePipeline

    camera: CameraConfig = config.cameras[0]
    capture = CaptureStats()
    clusterer = OnlineClusterer(DEFAULT_THRESHOLD)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if naive:
        baseline = NaivePipeline(engine)
        for frame in iter_file_frames(path, None, camera=camera.id, stats=capture):
            for face in baseline.process(frame):
                clusterer.add(face.embedding, face.quality.score if face.quality else 1.0)
        stats = baseline.stats
        tracks = published = stats.embed_calls
        extra = {"observations": stats.embed_calls, "tracks_unembeddable": 0}
    else:
        pipeline = CameraPipeline(camera, config, engine)
        cluster_of: dict[int, int] = {}

        def group(observations: list[Observation]) -> None:
            for obs in observations:
                banned = {cluster_of[t] for t in obs.co_tracks if t in cluster_of}
                cluster_of[obs.track_id] = clusterer.add(obs.vector(), obs.quality.score, cannot_link=banned)

        for frame in iter_file_frames(path, camera.fps, camera=camera.id, stats=capture):
            group(pipeline.process(frame))
        group(pipeline.flush())
        stats = pipeline.stats
        tracks, published = stats.tracks_started, stats.tracks_published
        extra = {"observations": stats.observations, "tracks_unembeddable": stats.tracks_unembeddable}
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "frames_read": capture.frames_read,
        "frames_analyzed": stats.frames_analyzed,
        "motion_skipped": stats.motion_skipped,
        "detector_calls": stats.detector_calls,
        "faces_detected": stats.faces_detected,
        "tracks": tracks,
        "embed_calls": stats.embed_calls,
        "embeddings_per_track": round(stats.embed_calls / published, 3) if published else 0.0,
        "identities": len(clusterer),
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        **extra,
    }


def run_video(args: argparse.Namespace) -> int:
    from revisit.shared.engine import FaceEngine

    config = eval_config(args)
    if not args.video.is_file():
        raise RevisitError(f"no such video file: {args.video}")
    engine = FaceEngine(config.engine, args.models)
    result = evaluate_video(args.video, config, engine, naive=args.naive)
    result.update(
        video=str(args.video),
        naive=bool(args.naive),
        fps=None if args.naive else config.cameras[0].fps,
        detector=config.engine.detector.model,
        recognizer_id=engine.recognizer_id,
    )
    mode = "naive (every frame, every face)" if args.naive else f"pipeline at {config.cameras[0].fps:g} fps"
    summary = (
        f"{args.video.name}: {mode}: {result['frames_read']} frames read, {result['frames_analyzed']} analysed, "
        f"{result['motion_skipped']} motion-skipped, {result['detector_calls']} detector calls, "
        f"{result['faces_detected']} faces, {result['tracks']} tracks, {result['embed_calls']} embeddings "
        f"({result['embeddings_per_track']} per track), {result['identities']} identities; "
        f"cpu {result['cpu_s']:.2f} s, wall {result['wall_s']:.2f} s"
    )
    print(summary, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        sys.stdout.flush()
        print(json.dumps(result), flush=True)
    return 0
