"""A batch-capable copy of a YuNet detector graph, for one detector call over several cameras on a GPU.

None of the stock detector graphs takes a batch: SCRFD's and YuNet's inputs are fixed at batch 1, and both
fold the batch into their output rows. YuNet's folding is three Reshape targets `[1, -1, C]`; rewritten as
`[0, -1, C]` (0 = keep the input's dimension) and with a symbolic batch on the input and outputs, the same
weights give per-image outputs for a batch of N. The copy is checked against the original on random input
before it is written. Use it as a custom model (its own sha256):

    [[engine.custom_models]]
    name = "yunet_batch"
    family = "yunet"
    path = "/opt/models/yunet_batch.onnx"
    sha256 = "…"

Needs the `onnx` package (dev extra; `pip install onnx`), only to write the copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from revisit.shared.errors import RevisitError


def make_batchable_yunet(src: str | Path, dst: str | Path) -> str:
    """Write a batch-capable copy of the YuNet graph `src` to `dst`; returns its sha256."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise RevisitError("writing a batch-capable graph needs the onnx package: pip install onnx") from exc
    model = onnx.load(str(src))
    rewritten = 0
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.int64 and value.shape == (3,) and value[0] == 1 and value[1] == -1:
            value = value.copy()
            value[0] = 0
            init.CopyFrom(numpy_helper.from_array(value, init.name))
            rewritten += 1
    if rewritten == 0:
        raise RevisitError(f"{src}: no YuNet-style [1, -1, C] reshape found; is it a YuNet graph?")
    for value_info in [model.graph.input[0], *model.graph.output]:
        value_info.type.tensor_type.shape.dim[0].dim_param = "N"
    data = model.SerializeToString()
    _check_same_outputs(Path(src).read_bytes(), data)
    Path(dst).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _check_same_outputs(original: bytes, batched: bytes) -> None:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    one, many = (ort.InferenceSession(b, providers=providers) for b in (original, batched))
    name = one.get_inputs()[0].name
    images = np.random.default_rng(0).uniform(0, 255, (3, 3, 96, 128)).astype(np.float32)
    together = many.run(None, {name: images})
    for i in range(len(images)):
        alone = one.run(None, {name: images[i : i + 1]})
        for a, b in zip(alone, together, strict=True):
            if b.shape[0] != len(images) or not np.allclose(a[0], b[i], atol=1e-4):
                raise RevisitError("the rewritten graph does not give per-image outputs; not written")
