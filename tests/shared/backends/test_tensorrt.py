"""The TensorRT backend.

Everywhere: config, engine naming, the CUDA error checks, and the build/cache/run bookkeeping against
small fakes of the TensorRT and CUDA APIs (tensor API of 8.5+/10.x and binding API of 8.0-8.4). With
TensorRT and a GPU: the real models against ONNX Runtime, and the engine cache.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from revisit.models.manifest import Manifest, ModelSpec
from revisit.models.store import ResolvedModel, resolve
from revisit.shared.backends import create_backend
from revisit.shared.backends import tensorrt as trt_backend
from revisit.shared.backends.onnxruntime import OnnxRuntimeConfig
from revisit.shared.backends.tensorrt import (
    Profile,
    TensorRTBackend,
    TensorRTConfig,
    TensorRTSession,
    engine_file_name,
    engine_file_prefix,
    profile_for,
)
from revisit.shared.errors import BackendError

SHA = "5e03a553209a03fda18615a90d1a986a180c3bce382a19ef36d7585c6a4c334c"

# --- config and naming ------------------------------------------------------------------------------


def test_config_defaults(monkeypatch):
    monkeypatch.delenv(trt_backend.CACHE_ENV, raising=False)
    config = TensorRTConfig()
    assert (config.type, config.fp16, config.device, config.max_batch, config.max_side) == (
        "tensorrt",
        True,
        0,
        32,
        1280,
    )
    assert config.engine_cache_dir() == Path("~/.cache/revisit/engines").expanduser()
    monkeypatch.setenv(trt_backend.CACHE_ENV, "/var/cache/engines")
    assert config.engine_cache_dir() == Path("/var/cache/engines")
    assert TensorRTConfig(cache_dir=Path("/x")).engine_cache_dir() == Path("/x")


@pytest.mark.parametrize(
    "bad",
    [
        {"max_batch": 0},
        {"max_batch": 100_000},
        {"workspace_mb": 1},
        {"workspace_mb": 10**9},
        {"max_side": 1000},  # not a multiple of 32
        {"max_side": 32},
        {"device": -1},
        {"fp61": True},
    ],
)
def test_config_bounds(bad):
    with pytest.raises(ValidationError):
        TensorRTConfig(**bad)


def test_profiles_cover_the_models_dynamic_dims():
    config = TensorRTConfig()
    assert profile_for("scrfd", config) == Profile((1, 3, 32, 32), (1, 3, 640, 640), (8, 3, 1280, 1280))
    assert profile_for("scrfd", config).fit((1, 3, -1, -1)).max == (1, 3, 1280, 1280)  # a fixed batch stays 1
    assert profile_for("yunet", TensorRTConfig(detect_batch=4)).fit((-1, 3, -1, -1)).max == (4, 3, 1280, 1280)
    assert profile_for("yunet", TensorRTConfig(max_side=320)).opt == (1, 3, 320, 320)
    assert profile_for("arcface", config) == Profile((1, 3, 112, 112), (8, 3, 112, 112), (32, 3, 112, 112))
    assert profile_for("arcface", TensorRTConfig(max_batch=4)).opt == (4, 3, 112, 112)
    # static dims of a model win over the profile
    assert profile_for("scrfd", config).fit((1, 3, 640, -1)).max == (1, 3, 640, 1280)


def test_engine_file_name_says_what_the_engine_is():
    profile = profile_for("arcface", TensorRTConfig())
    name = engine_file_name("w600k_mbf", SHA, "NVIDIA Orin (nvgpu)", (8, 7), "8.6.2.3", True, profile)
    assert name.startswith(engine_file_prefix("w600k_mbf", SHA))  # what doctor looks for
    assert name.startswith("w600k_mbf-5e03a553209a03fd-nvidia-orin-nvgpu-sm87-trt8.6.2.3-fp16-")
    assert name.endswith(".engine") and "/" not in name
    assert name.removesuffix(".engine").rsplit("-", 1)[1] == profile.digest()
    fp32 = engine_file_name("w600k_mbf", SHA, "NVIDIA Orin (nvgpu)", (8, 7), "8.6.2.3", False, profile)
    assert "-fp32-" in fp32 and fp32 != name
    other = profile_for("arcface", TensorRTConfig(max_batch=8))
    assert engine_file_name("w600k_mbf", SHA, "NVIDIA Orin (nvgpu)", (8, 7), "8.6.2.3", True, other) != name
    assert "-trt10.3.0-" in engine_file_name("m", SHA, "NVIDIA H100 PCIe", (9, 0), "10.3.0", True, profile)


# --- lazy imports and CUDA error checks -------------------------------------------------------------


def _model(family: str = "arcface", path: Path = Path("m.onnx")) -> ResolvedModel:
    role = "recognizer" if family == "arcface" else "detector"
    spec = ModelSpec(
        name="m",
        role=role,
        family=family,
        file=str(path),
        sha256=SHA,
        embedding_dim=512 if role == "recognizer" else None,
    )
    return ResolvedModel(spec, path)


def test_missing_tensorrt_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendError, match="JetPack"):
        TensorRTBackend(TensorRTConfig()).load(_model())


def test_missing_cuda_binding_is_a_clear_backend_error(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendError, match="cuda-python"):
        trt_backend._open_cuda(0)


def _fake_cudart(count_error: int = 0, malloc_error: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        cudaError_t=SimpleNamespace(cudaSuccess=0),
        cudaGetDeviceCount=lambda: (count_error, 1),
        cudaSetDevice=lambda device: (0,),
        cudaGetDeviceProperties=lambda d: (0, SimpleNamespace(name=b"NVIDIA Orin\0\0\0", major=8, minor=7)),
        cudaMalloc=lambda n: (malloc_error, 0xD000),
    )


def test_cudart_calls_are_checked():
    cuda = trt_backend._CudaRuntime(_fake_cudart(), 0)
    assert (cuda.name, cuda.capability) == ("NVIDIA Orin", (8, 7))
    assert cuda.malloc(64) == 0xD000
    with pytest.raises(BackendError, match="device 1 requested"):
        trt_backend._CudaRuntime(_fake_cudart(), 1)
    with pytest.raises(BackendError, match="no usable CUDA device"):
        trt_backend._CudaRuntime(_fake_cudart(count_error=100), 0)
    with pytest.raises(BackendError, match="cudaMalloc"):
        trt_backend._CudaRuntime(_fake_cudart(malloc_error=2), 0).malloc(64)


def test_network_flags_and_fp16_choice():
    def trt(version, **flags):
        return SimpleNamespace(__version__=version, NetworkDefinitionCreationFlag=SimpleNamespace(**flags))

    assert trt_backend._network_flags(trt("8.6.1", EXPLICIT_BATCH=0)) == 1
    assert trt_backend._network_flags(trt("10.3.0", EXPLICIT_BATCH=0)) == 0
    assert trt_backend._network_flags(trt("11.0")) == 0
    fast, slow = SimpleNamespace(platform_has_fast_fp16=True), SimpleNamespace(platform_has_fast_fp16=False)
    assert trt_backend._use_fp16(fast, TensorRTConfig(), (8, 7))
    assert not trt_backend._use_fp16(fast, TensorRTConfig(fp16=False), (8, 7))
    assert not trt_backend._use_fp16(slow, TensorRTConfig(), (6, 1))
    assert trt_backend._use_fp16(SimpleNamespace(), TensorRTConfig(), (5, 3))
    assert not trt_backend._use_fp16(SimpleNamespace(), TensorRTConfig(), (6, 1))


# --- fakes of the TensorRT and CUDA APIs --------------------------------------------------------------

IN_SHAPE = (3, 8, 8)  # per sample


class FakeCuda:
    name, capability = "Fake GPU 9000", (8, 7)

    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.next_ptr, self.mallocs, self.frees, self.stream_destroyed = 0x1000, 0, 0, False

    @contextlib.contextmanager
    def active(self):
        yield

    def malloc(self, nbytes):
        ptr, self.next_ptr = self.next_ptr, self.next_ptr + nbytes + 0x100
        self.memory[ptr] = bytearray(nbytes)
        self.mallocs += 1
        return ptr

    def free(self, ptr):
        del self.memory[ptr]
        self.frees += 1

    def new_stream(self):
        return "stream"

    def stream_handle(self, stream):
        return 42

    def destroy_stream(self, stream):
        self.stream_destroyed = True

    def htod(self, ptr, host, stream):
        self.memory[ptr][: host.nbytes] = host.tobytes()

    def dtoh(self, host, ptr, stream):
        host.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.memory[ptr][: host.nbytes]), np.uint8)

    def synchronize(self, stream):
        pass


class FakeContext:
    """emb = 2 * the first 4 values of each sample, [N, 4]; score = N, [2N, 1] fp16 (no batch dim)."""

    def __init__(self, cuda: FakeCuda):
        self.cuda, self.input_shape, self.addresses = cuda, None, {}

    def set_input_shape(self, name, shape):
        if name != "x" or not 1 <= shape[0] <= 4 or tuple(shape[1:]) != IN_SHAPE:
            return False
        self.input_shape = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        n = self.input_shape[0]
        return {"x": self.input_shape, "emb": (n, 4), "score": (2 * n, 1)}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream_handle):
        assert stream_handle == 42
        n = self.input_shape[0]
        x = np.frombuffer(bytes(self.cuda.memory[self.addresses["x"]]), np.float32)[: n * math.prod(IN_SHAPE)]
        outputs = {
            "emb": (x.reshape(n, -1)[:, :4] * 2).astype(np.float32),
            "score": np.full((2 * n, 1), n, np.float16),
        }
        for name, value in outputs.items():
            self.cuda.memory[self.addresses[name]][: value.nbytes] = value.tobytes()
        return True

    # TensorRT 8.0-8.4 binding API over the same behaviour
    NAMES = ("x", "emb", "score")

    def set_binding_shape(self, index, shape):
        return self.set_input_shape(self.NAMES[index], shape)

    def get_binding_shape(self, index):
        return self.get_tensor_shape(self.NAMES[index])

    def execute_v2(self, bindings):
        self.addresses = dict(zip(self.NAMES, bindings, strict=True))
        return self.execute_async_v3(42)


FAKE_DTYPES = {"x": np.float32, "emb": np.float32, "score": np.float16}


class FakeTensorEngine:
    num_io_tensors = 3

    def __init__(self, cuda):
        self.cuda = cuda

    def get_tensor_name(self, i):
        return FakeContext.NAMES[i]

    def get_tensor_mode(self, name):
        return "in" if name == "x" else "out"

    def get_tensor_dtype(self, name):
        return FAKE_DTYPES[name]

    def get_tensor_profile_shape(self, name, profile):
        return [(1, *IN_SHAPE), (2, *IN_SHAPE), (4, *IN_SHAPE)]

    def create_execution_context(self):
        return FakeContext(self.cuda)


class FakeBindingEngine:
    num_bindings = 3

    def __init__(self, cuda):
        self.cuda = cuda

    def get_binding_name(self, i):
        return FakeContext.NAMES[i]

    def binding_is_input(self, i):
        return i == 0

    def get_binding_dtype(self, i):
        return FAKE_DTYPES[FakeContext.NAMES[i]]

    def create_execution_context(self):
        return FakeContext(self.cuda)


class FakeBuilder:
    platform_has_fast_fp16 = True

    def __init__(self, log):
        self.config = SimpleNamespace(
            flags=[],
            pools={},
            profiles=[],
            set_flag=lambda f: self.config.flags.append(f),
            set_memory_pool_limit=lambda pool, n: self.config.pools.__setitem__(pool, n),
            add_optimization_profile=lambda p: self.config.profiles.append(p) or 0,
        )

    def create_network(self, flags):
        tensor = SimpleNamespace(name="input.1", shape=(-1, 3, 112, 112))
        return SimpleNamespace(num_inputs=1, get_input=lambda i: tensor)

    def create_builder_config(self):
        return self.config

    def create_optimization_profile(self):
        profile = SimpleNamespace(shapes={})
        profile.set_shape = lambda name, lo, opt, hi: profile.shapes.__setitem__(name, (lo, opt, hi))
        return profile

    def build_serialized_network(self, network, config):
        FakeTrt.builds.append(config)
        return b"ENGINE"


class FakeParser:
    errors: list[str] = []

    def __init__(self, network, log):
        pass

    def parse_from_file(self, path):
        return not self.errors

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, i):
        return self.errors[i]


class FakeTrt:
    __version__ = "10.3.0"
    builds: list = []
    TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    BuilderFlag = SimpleNamespace(FP16="fp16")
    Builder = FakeBuilder
    OnnxParser = FakeParser

    @staticmethod
    def nptype(dtype):
        return dtype

    class Runtime:
        def __init__(self, log):
            pass

        def deserialize_cuda_engine(self, data):
            return FakeTensorEngine(FakeTrt.cuda) if data == b"ENGINE" else None


@pytest.fixture(params=[FakeTensorEngine, FakeBindingEngine], ids=["tensor-api", "binding-api"])
def fake_session(request):
    cuda = FakeCuda()
    return TensorRTSession(FakeTrt, cuda, object(), request.param(cuda), "fake"), cuda


def test_session_runs_and_converts_fp16(fake_session):
    session, _ = fake_session
    assert (session.input_name, session.output_names) == ("x", ["emb", "score"])
    x = np.arange(2 * math.prod(IN_SHAPE), dtype=np.float64).reshape(2, *IN_SHAPE)
    out = session.run(x)
    assert list(out) == ["emb", "score"]
    np.testing.assert_array_equal(out["emb"], [[0, 2, 4, 6], [384, 386, 388, 390]])
    assert out["score"].dtype == np.float32 and out["score"].shape == (4, 1)
    assert np.all(out["score"] == 2)


def test_session_grows_buffers_only_when_needed(fake_session):
    session, cuda = fake_session
    session.run(np.zeros((2, *IN_SHAPE), np.float32))
    assert (cuda.mallocs, cuda.frees) == (3, 0)
    session.run(np.zeros((1, *IN_SHAPE), np.float32))
    assert (cuda.mallocs, cuda.frees) == (3, 0)
    out = session.run(np.ones((4, *IN_SHAPE), np.float32))  # input grows; small outputs fit in 256 bytes
    assert (cuda.mallocs, cuda.frees) == (4, 1)
    assert out["emb"].shape == (4, 4) and np.all(out["emb"] == 2)


def test_session_refuses_shapes_outside_the_profile(fake_session):
    session, _ = fake_session
    with pytest.raises(BackendError, match="outside the engine's profile"):
        session.run(np.zeros((5, *IN_SHAPE), np.float32))


def test_session_close_frees_everything(fake_session):
    session, cuda = fake_session
    session.run(np.zeros((2, *IN_SHAPE), np.float32))
    session.close()
    session.close()
    assert cuda.memory == {} and cuda.stream_destroyed
    with pytest.raises(BackendError, match="closed"):
        session.run(np.zeros((1, *IN_SHAPE), np.float32))


@pytest.fixture
def fake_stack(monkeypatch, tmp_path):
    cuda = FakeCuda()
    FakeTrt.cuda, FakeTrt.builds, FakeParser.errors = cuda, [], []
    monkeypatch.setattr(trt_backend, "_import_tensorrt", lambda: FakeTrt)
    monkeypatch.setattr(trt_backend, "_open_cuda", lambda device: cuda)
    monkeypatch.setattr(trt_backend, "_TRT_LOGGER", object())
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    return TensorRTConfig(cache_dir=tmp_path / "engines", max_batch=16, workspace_mb=256), _model(path=onnx)


def test_engine_is_built_once_with_profile_and_fp16_then_cached(fake_stack):
    config, model = fake_stack
    path = trt_backend.build_engine(model, config)
    assert path.parent == config.engine_cache_dir() and path.read_bytes() == b"ENGINE"
    assert path.name.startswith(f"m-{SHA[:16]}-fake-gpu-9000-sm87-trt10.3.0-fp16-")
    (build,) = FakeTrt.builds
    assert build.flags == ["fp16"] and build.pools == {"workspace": 256 << 20}
    (profile,) = build.profiles
    assert profile.shapes == {"input.1": ((1, 3, 112, 112), (8, 3, 112, 112), (16, 3, 112, 112))}
    assert trt_backend.build_engine(model, config) == path
    TensorRTBackend(config).load(model)
    assert len(FakeTrt.builds) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_corrupt_cached_engine_is_rebuilt(fake_stack, caplog):
    config, model = fake_stack
    path = trt_backend.build_engine(model, config)
    path.write_bytes(b"garbage")
    session = TensorRTBackend(config).load(model)
    assert path.read_bytes() == b"ENGINE" and len(FakeTrt.builds) == 2
    assert "rebuilding" in caplog.text
    assert session.output_names == ["emb", "score"]


def test_parser_errors_are_all_reported(fake_stack):
    config, model = fake_stack
    FakeParser.errors = ["node 3: unsupported op Foo", "node 9: bad shape"]
    with pytest.raises(BackendError, match="unsupported op Foo; node 9: bad shape"):
        trt_backend.build_engine(model, config)
    assert not list(config.engine_cache_dir().glob("*"))


# --- with TensorRT and a GPU -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu():
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        pytest.skip("TensorRT not installed (it ships with JetPack / NVIDIA's index); skipping GPU test")
    try:
        trt_backend._open_cuda(0)
    except BackendError as exc:
        pytest.skip(f"no usable CUDA device or binding ({exc}); skipping GPU test")


@pytest.fixture(scope="module")
def gpu_config(gpu, tmp_path_factory):
    return TensorRTConfig(cache_dir=tmp_path_factory.mktemp("engines"))


def _pair(name: str, models_dir: Path, config: TensorRTConfig):
    model = resolve(Manifest.load().get(name), models_dir)
    trt = create_backend(config).load(model)
    ort = create_backend(OnnxRuntimeConfig()).load(model)
    return model, trt, ort


def test_gpu_embeddings_agree_with_onnxruntime(models_dir, gpu_config):
    from revisit.shared.embed import Embedder

    model, trt, ort = _pair("w600k_mbf", models_dir, gpu_config)
    rng = np.random.default_rng(11)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(4)]
    a = Embedder(trt, model.spec).embed(crops)
    b = Embedder(ort, model.spec).embed(crops)
    assert a.shape == b.shape == (4, 512)
    assert np.all(np.sum(a * b, axis=1) > 0.99)
    # smaller, then larger batches reuse or grow the buffers and stay right
    assert np.sum(Embedder(trt, model.spec).embed(crops[:1]) * b[:1]) > 0.99
    assert Embedder(trt, model.spec).embed(crops * 3).shape == (12, 512)


def test_gpu_detector_outputs_match_onnxruntime_shapes(models_dir, gpu_config):
    _, trt, ort = _pair("scrfd_2.5g_kps", models_dir, gpu_config)
    assert trt.input_name == ort.input_name and trt.output_names == ort.output_names
    for h, w in ((480, 640), (160, 160), (480, 640)):
        tensor = np.random.default_rng(h).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
        got, expected = trt.run(tensor), ort.run(tensor)
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in expected.items()}
        assert all(v.dtype == np.float32 for v in got.values())


def test_gpu_engine_is_cached(models_dir, gpu_config):
    model = resolve(Manifest.load().get("w600k_mbf"), models_dir)
    path = trt_backend.build_engine(model, gpu_config)
    assert path.is_file() and path.name.startswith(f"w600k_mbf-{model.spec.sha256[:16]}-")
    mtime = path.stat().st_mtime_ns
    create_backend(gpu_config).load(model).run(np.zeros((1, 3, 112, 112), np.float32))
    assert path.stat().st_mtime_ns == mtime
