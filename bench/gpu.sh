#!/usr/bin/env bash
# The GPU check, in one go (a few minutes) on a machine with an NVIDIA GPU:
#   1. builds the TensorRT engines of every detector and the recognizer (and of a batch-capable YuNet),
#   2. checks each engine agrees with ONNX Runtime on the same inputs,
#   3. times detector and embedder by batch size (TensorRT and ONNX Runtime on the CPU, medians),
#   4. runs the edge pipeline with TensorRT on the 1080p clip (`revisit eval video`), and with ONNX Runtime.
#
#   bash bench/gpu.sh                      # results under $OUT if set, else ./gpu-results
#
# Environment: REVISIT_MODELS (default ../shared/models), REVISIT_FACEDATA (default ../shared/facedata/dev; the
# clip is videos/facenetpt_video.mp4), PYTHON (default python3), VENV (default .venv-gpu), WHEELHOUSE (a folder
# of wheels for an offline machine: tensorrt-cu12*, cuda-python, onnx and the project's dependencies).
# Exit status: 0 when every step passed, 1 when a check failed (results are written either way), 2 when the
# machine cannot run it (no GPU, no models, packages missing and not installable).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT_DIR=${OUT:-$REPO/gpu-results}
MODELS=${REVISIT_MODELS:-$REPO/../shared/models}
FACEDATA=${REVISIT_FACEDATA:-$REPO/../shared/facedata/dev}
CLIP=${CLIP:-$FACEDATA/videos/facenetpt_video.mp4}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-$REPO/.venv-gpu}
ENGINES=$OUT_DIR/engines

die() {
  echo "gpu.sh: $*" >&2
  exit 2
}
step() { echo "== $* ($(date -u +%H:%M:%S))"; }

mkdir -p "$OUT_DIR" "$ENGINES"
exec > >(tee "$OUT_DIR/gpu.log") 2>&1

step "machine"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs an NVIDIA GPU and its driver"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || die "nvidia-smi cannot reach a GPU"
[ -f "$MODELS/w600k_mbf.onnx" ] || die "models not found in $MODELS (set REVISIT_MODELS to the folder of .onnx files)"
[ -f "$CLIP" ] || die "clip not found: $CLIP (set REVISIT_FACEDATA, or CLIP to a 1080p H.264 file)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON to a Python 3.10-3.13)"

step "python environment ($VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV" || die "cannot create a venv with $PYTHON (apt-get install python3-venv)"
fi
PY=$VENV/bin/python
pip_install() {
  local args=(-q)
  if [ -n "${WHEELHOUSE:-}" ]; then args+=(--find-links "$WHEELHOUSE"); fi
  "$PY" -m pip install "${args[@]}" "$@"
}
if ! "$PY" -c "import revisit" 2>/dev/null; then
  pip_install -e "$REPO" || die "cannot install the project (offline? set WHEELHOUSE to a folder of wheels)"
fi
if ! "$PY" -c "import tensorrt" 2>/dev/null; then
  pip_install "tensorrt-cu12>=10,<11" || die "cannot install TensorRT (pip install tensorrt-cu12; offline: WHEELHOUSE)"
fi
if ! "$PY" -c "from cuda.bindings import runtime" 2>/dev/null && ! "$PY" -c "from cuda import cudart" 2>/dev/null; then
  pip_install "cuda-python>=12,<14" || die "cannot install cuda-python (offline: WHEELHOUSE)"
fi
if ! "$PY" -c "import onnx" 2>/dev/null; then
  pip_install "onnx>=1.15,<2" || die "cannot install onnx (offline: WHEELHOUSE)"
fi
"$PY" -c "import tensorrt, onnxruntime; print('tensorrt', tensorrt.__version__, '/ onnxruntime', onnxruntime.__version__)"

step "engines, agreement with ONNX Runtime, timings by batch size"
status=0
REVISIT_ENGINE_CACHE=$ENGINES "$PY" - "$MODELS" "$OUT_DIR" <<'PY' || status=1
import json, statistics, sys, time
from pathlib import Path

import numpy as np

from revisit.models.batchable import make_batchable_yunet
from revisit.models.manifest import Manifest, ModelSpec
from revisit.models.store import resolve
from revisit.shared.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from revisit.shared.backends.tensorrt import TensorRTBackend, TensorRTConfig, build_engine

models, out = Path(sys.argv[1]), Path(sys.argv[2])
manifest = Manifest.load()
batch_path = out / "yunet_batch.onnx"
sha = make_batchable_yunet(models / manifest.get("yunet").file, batch_path)
specs = [manifest.get(n) for n in ("scrfd_2.5g_kps", "scrfd_500m_kps", "yunet", "w600k_mbf")]
specs.append(ModelSpec(name="yunet_batch", role="detector", family="yunet", file=str(batch_path), sha256=sha))
trt_cfg = TensorRTConfig(fp16=True, detect_batch=8)
ort = OnnxRuntimeBackend(OnnxRuntimeConfig())
trt = TensorRTBackend(trt_cfg)
rng = np.random.default_rng(0)


def median_ms(fn, runs=30, warm=5):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


results, failed = {}, []
for spec in specs:
    model = resolve(spec, models)
    t = time.perf_counter()
    engine_path = build_engine(model, trt_cfg)
    build_s = round(time.perf_counter() - t, 1)
    s_trt, s_ort = trt.load(model), ort.load(model)
    if spec.family == "arcface":
        shape, batches = (3, 112, 112), (1, 8, 32)
    else:
        shape, batches = (3, 384, 640), (1, 2, 4, 8) if spec.name == "yunet_batch" else (1,)
    scale = 255.0 if spec.family == "yunet" else 1.0
    x = (rng.uniform(-1, 1, (batches[-1], *shape)) * scale).astype(np.float32)
    a, b = s_ort.run(x[: batches[-1]]), s_trt.run(x[: batches[-1]])
    diffs = {n: float(np.abs(a[n] - b[n].reshape(a[n].shape)).max()) for n in a}
    entry = {"engine": engine_path.name, "build_s": build_s, "max_abs_diff": max(diffs.values())}
    if spec.family == "arcface":
        na = a[next(iter(a))] / np.linalg.norm(a[next(iter(a))], axis=1, keepdims=True)
        nb = b[next(iter(b))] / np.linalg.norm(b[next(iter(b))], axis=1, keepdims=True)
        entry["min_cosine"] = float((na * nb).sum(axis=1).min())
        ok = entry["min_cosine"] > 0.99
    else:
        ok = entry["max_abs_diff"] < (0.05 * scale if spec.family == "yunet" else 0.05)
    entry["agrees"] = ok
    if not ok:
        failed.append(spec.name)
    entry["ms_by_batch"] = {
        str(n): {"tensorrt": median_ms(lambda n=n: s_trt.run(x[:n])),
                 "onnxruntime_cpu": median_ms(lambda n=n: s_ort.run(x[:n]), runs=5, warm=1)}
        for n in batches
    }
    results[spec.name] = entry
    print(spec.name, json.dumps(entry), flush=True)
(out / "engines.json").write_text(json.dumps(results, indent=2))
if failed:
    print("engines that disagree with ONNX Runtime:", ", ".join(failed))
    sys.exit(1)
PY

step "edge pipeline on the 1080p clip: TensorRT, then ONNX Runtime on the CPU"
for backend in tensorrt onnxruntime; do
  if REVISIT_ENGINE_CACHE=$ENGINES "$VENV/bin/revisit" eval video --video "$CLIP" --json --backend "$backend" \
    --models "$MODELS" >"$OUT_DIR/eval-video-$backend.txt"; then
    tail -n 1 "$OUT_DIR/eval-video-$backend.txt" >"$OUT_DIR/eval-video-$backend.json"
    echo "$backend: $(cat "$OUT_DIR/eval-video-$backend.json")"
  else
    echo "gpu.sh: revisit eval video --backend $backend failed (see $OUT_DIR/eval-video-$backend.txt)"
    status=1
  fi
done

step "done: results in $OUT_DIR (status $status)"
exit "$status"
