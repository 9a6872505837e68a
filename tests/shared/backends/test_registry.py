"""The backend registry, the config union discriminated by `type`, and backend parity on real models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from revisit.models.manifest import Manifest
from revisit.models.store import resolve
from revisit.shared.backends import BACKENDS, AnyBackendConfig, create_backend
from revisit.shared.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig
from revisit.shared.backends.opencv import OpenCVBackend, OpenCVConfig
from revisit.shared.backends.tensorrt import TensorRTBackend, TensorRTConfig

ADAPTER = TypeAdapter(AnyBackendConfig)


def test_registry_names_every_backend():
    assert set(BACKENDS) == {"onnxruntime", "opencv", "tensorrt"}
    assert BACKENDS["tensorrt"] is TensorRTBackend


@pytest.mark.parametrize(
    ("data", "config_class", "backend_class"),
    [
        ({"type": "onnxruntime", "threads": 2}, OnnxRuntimeConfig, OnnxRuntimeBackend),
        ({"type": "opencv"}, OpenCVConfig, OpenCVBackend),
        ({"type": "tensorrt", "max_batch": 8}, TensorRTConfig, TensorRTBackend),
    ],
)
def test_config_class_is_picked_by_type(data, config_class, backend_class):
    config = ADAPTER.validate_python(data)
    assert type(config) is config_class
    assert type(create_backend(config)) is backend_class


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ValidationError, match="thread"):
        ADAPTER.validate_python({"type": "onnxruntime", "thread": 2})


def test_unknown_type_is_rejected():
    with pytest.raises(ValidationError, match="tflite"):
        ADAPTER.validate_python({"type": "tflite"})


def test_importing_backends_imports_no_gpu_stack():
    code = (
        "import sys, revisit.shared.backends\n"
        "print(sorted(m for m in ('tensorrt', 'cuda', 'pycuda') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _session(backend: str, model: str, models_dir):
    spec = Manifest.load().get(model)
    return create_backend(ADAPTER.validate_python({"type": backend})).load(resolve(spec, models_dir))


def test_opencv_and_onnxruntime_agree_on_recognizer(models_dir):
    batch = np.random.default_rng(7).uniform(-1, 1, (4, 3, 112, 112)).astype(np.float32)
    ort_out = _session("onnxruntime", "w600k_mbf", models_dir).run(batch)
    cv_out = _session("opencv", "w600k_mbf", models_dir).run(batch)
    (a,), (b,) = ort_out.values(), cv_out.values()
    assert a.shape == b.shape == (4, 512)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_opencv_and_onnxruntime_agree_on_detector(models_dir):
    image = np.random.default_rng(8).uniform(-1, 1, (1, 3, 160, 160)).astype(np.float32)
    ort_out = _session("onnxruntime", "scrfd_2.5g_kps", models_dir).run(image)
    cv_out = _session("opencv", "scrfd_2.5g_kps", models_dir).run(image)
    assert set(ort_out) == set(cv_out)
    for name, expected in ort_out.items():
        got = cv_out[name].reshape(expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-3, err_msg=f"output {name}")
