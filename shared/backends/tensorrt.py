"""TensorRT on NVIDIA GPUs and Jetsons: ONNX models compiled to cached engines.

`tensorrt` and a CUDA binding (cuda-python, else pycuda) are imported only in `load`/`build_engine`, so
machines without them can still import every backend. An engine is built once per model file, GPU,
TensorRT version, precision and shape profile, and cached on disk under a name that says all of these;
building takes seconds on a desktop GPU and minutes on a Jetson. Handles TensorRT 8.x (binding API
before 8.5, tensor API from 8.5) and 10.x (tensor API only).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from revisit.models.store import ResolvedModel
from revisit.shared.backends.base import Backend, BackendConfig, Session
from revisit.shared.errors import BackendError

log = logging.getLogger(__name__)

CACHE_ENV = "REVISIT_ENGINE_CACHE"
_MIN_BUFFER = 256  # bytes; TensorRT wants a real address even for an empty tensor


class TensorRTConfig(BackendConfig):
    type: Literal["tensorrt"] = "tensorrt"
    fp16: bool = Field(True, description="build FP16 engines where the GPU has fast FP16; else FP32")
    workspace_mb: int = Field(1024, ge=64, le=65536, description="builder scratch memory limit (MiB)")
    cache_dir: Path | None = Field(
        None, description=f"engine cache directory; default ${CACHE_ENV}, else ~/.cache/revisit/engines"
    )
    device: int = Field(0, ge=0, le=63, description="CUDA device index")
    max_batch: int = Field(32, ge=1, le=512, description="largest recognizer batch the engine accepts")
    detect_batch: int = Field(
        8, ge=1, le=64, description="largest detector batch (cameras per call), for graphs with a batch dimension"
    )
    max_side: int = Field(
        1280, ge=64, le=4096, multiple_of=32, description="largest detector input side the engine accepts"
    )

    def engine_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir.expanduser()
        return Path(os.environ.get(CACHE_ENV) or "~/.cache/revisit/engines").expanduser()


# --- naming and profiles: pure, testable without a GPU ---------------------------------------------

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """The input shapes an engine accepts (min..max) and is tuned for (opt)."""

    min: Shape
    opt: Shape
    max: Shape

    def digest(self) -> str:
        return hashlib.sha256(repr((self.min, self.opt, self.max)).encode()).hexdigest()[:8]

    def fit(self, declared: Shape) -> Profile:
        """Keep the model's static dims; only its dynamic (-1) dims take the profile's range."""

        def pick(shape: Shape) -> Shape:
            return tuple(d if d >= 0 else s for d, s in zip(declared, shape, strict=True))

        return Profile(pick(self.min), pick(self.opt), pick(self.max))


def profile_for(family: str, config: TensorRTConfig) -> Profile:
    if family == "arcface":
        crop = (3, 112, 112)
        return Profile((1, *crop), (min(8, config.max_batch), *crop), (config.max_batch, *crop))
    if family in ("scrfd", "yunet"):
        opt = min(640, config.max_side)
        # The batch range applies only to graphs whose batch dimension is dynamic (`Profile.fit`).
        return Profile((1, 3, 32, 32), (1, 3, opt, opt), (config.detect_batch, 3, config.max_side, config.max_side))
    raise BackendError(f"the tensorrt backend has no shape profile for model family {family!r}")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def engine_file_prefix(model_name: str, sha256: str) -> str:
    """What every engine of one model file starts with: `<model>-<sha256[:16]>-` (doctor looks for these)."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', model_name)}-{sha256[:16]}-"


def engine_file_name(
    model_name: str,
    sha256: str,
    gpu_name: str,
    capability: tuple[int, int],
    trt_version: str,
    fp16: bool,
    profile: Profile,
) -> str:
    """`<model>-<sha256[:16]>-<gpu>-sm<XY>-trt<version>-<fp16|fp32>-<profile hash>.engine`."""
    return (
        f"{engine_file_prefix(model_name, sha256)}{_slug(gpu_name)}"
        f"-sm{capability[0]}{capability[1]}-trt{re.sub(r'[^A-Za-z0-9.]+', '-', trt_version)}"
        f"-{'fp16' if fp16 else 'fp32'}-{profile.digest()}.engine"
    )


# --- lazy imports -----------------------------------------------------------------------------------


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:
        raise BackendError(
            f"the tensorrt backend needs TensorRT, which cannot be imported ({exc}); it comes with JetPack "
            "on a Jetson, or from NVIDIA's package index on a GPU machine (pip install tensorrt)"
        ) from exc
    return tensorrt


def _trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


_TRT_LOGGER: Any = None


def _logger(trt: Any) -> Any:
    # TensorRT wants one logger per process; this one prints warnings and errors to stderr.
    global _TRT_LOGGER
    if _TRT_LOGGER is None:
        _TRT_LOGGER = trt.Logger(trt.Logger.WARNING)
    return _TRT_LOGGER


# --- CUDA: cuda-python, else pycuda -----------------------------------------------------------------


class _Cuda(Protocol):
    """The few CUDA calls the backend makes: device memory, one stream, copies."""

    name: str
    capability: tuple[int, int]

    def active(self) -> contextlib.AbstractContextManager[None]: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def new_stream(self) -> Any: ...
    def stream_handle(self, stream: Any) -> int: ...
    def destroy_stream(self, stream: Any) -> None: ...
    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None: ...
    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...


class _CudaRuntime:
    """cuda-python's runtime API: every call returns (error, *values); each error is checked."""

    def __init__(self, rt: Any, device: int):
        self._rt = rt
        self.device = device
        try:  # cuda-python loads libcudart on the first call
            count = self._call("cudaGetDeviceCount", rt.cudaGetDeviceCount(), no_device=True)
        except (OSError, RuntimeError) as exc:
            raise BackendError(f"cuda-python cannot reach the CUDA runtime: {exc}") from exc
        if device >= count:
            raise BackendError(f"CUDA device {device} requested, but {count} device(s) present")
        self._call("cudaSetDevice", rt.cudaSetDevice(device))
        prop = self._call("cudaGetDeviceProperties", rt.cudaGetDeviceProperties(device))
        name = prop.name
        if isinstance(name, bytes | bytearray):
            name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
        self.name, self.capability = str(name), (int(prop.major), int(prop.minor))

    def _call(self, what: str, result: Any, no_device: bool = False) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            hint = " (no usable CUDA device or driver)" if no_device else ""
            raise BackendError(f"CUDA {what} failed: {getattr(err, 'name', err)}{hint}")
        return values[0] if len(values) == 1 else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        # The current device is per host thread; set it wherever we are called from.
        self._call("cudaSetDevice", self._rt.cudaSetDevice(self.device))
        yield

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self._rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self._rt.cudaFree(ptr))

    def new_stream(self) -> Any:
        return self._call("cudaStreamCreate", self._rt.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", self._rt.cudaStreamDestroy(stream))

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        result = self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream)
        self._call("cudaMemcpyAsync", result)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        result = self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream)
        self._call("cudaMemcpyAsync", result)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(stream))


class _PyCuda:
    """PyCUDA on the device's primary context (the one TensorRT's runtime calls use), pushed per call."""

    def __init__(self, drv: Any, device: int):
        self._drv = drv
        self._allocations: dict[int, Any] = {}
        try:
            drv.init()
            count = drv.Device.count()
            if device >= count:
                raise BackendError(f"CUDA device {device} requested, but {count} device(s) present")
            dev = drv.Device(device)
            self._ctx = dev.retain_primary_context()
            major, minor = dev.compute_capability()
            self.name, self.capability = str(dev.name()), (int(major), int(minor))
        except drv.Error as exc:
            raise BackendError(f"CUDA (pycuda) cannot open device {device}: {exc}") from exc

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def malloc(self, nbytes: int) -> int:
        allocation = self._drv.mem_alloc(nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        self._allocations.pop(ptr).free()

    def new_stream(self) -> Any:
        return self._drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        del stream  # PyCUDA destroys a stream when its object goes

    # Synchronous copies: PyCUDA's async ones want page-locked host memory. Its streams are blocking
    # streams, so they are ordered with these default-stream copies.
    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self._drv.memcpy_htod(ptr, host)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        stream.synchronize()
        self._drv.memcpy_dtoh(host, ptr)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()


def _open_cuda(device: int) -> _Cuda:
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart as rt  # older cuda-python
        except ImportError:
            rt = None
    if rt is not None:
        return _CudaRuntime(rt, device)
    try:
        import pycuda.driver as drv
    except (ImportError, OSError) as exc:
        raise BackendError(
            "the tensorrt backend needs a CUDA binding: pip install cuda-python (or pycuda); "
            f"neither can be imported ({exc})"
        ) from exc
    return _PyCuda(drv, device)


# --- building and caching engines -------------------------------------------------------------------


def _use_fp16(builder: Any, config: TensorRTConfig, capability: tuple[int, int]) -> bool:
    if not config.fp16:
        return False
    fast = getattr(builder, "platform_has_fast_fp16", None)
    if fast is not None:
        return bool(fast)
    # Where the attribute is gone: NVIDIA's table of GPUs with fast native FP16.
    return capability[0] >= 7 or capability in ((5, 3), (6, 0), (6, 2))


def _network_flags(trt: Any) -> int:
    # TensorRT 8 needs explicit batch asked for; 10 has nothing else and ignores (or lacks) the flag.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return 0 if flag is None or _trt_major(trt) >= 10 else 1 << int(flag)


def _parse(trt: Any, builder: Any, model: ResolvedModel) -> tuple[Any, Any]:
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, _logger(trt))
    ok = (
        parser.parse_from_file(str(model.path))
        if hasattr(parser, "parse_from_file")
        else (parser.parse(model.path.read_bytes()))
    )
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["no error message"]
        raise BackendError(f"TensorRT cannot parse {model.path}: " + "; ".join(errors))
    if network.num_inputs != 1:
        count = network.num_inputs
        raise BackendError(f"{model.spec.name}: the tensorrt backend runs one-input models; it has {count}")
    return network, parser  # the parser owns the weights: keep it alive until the build ends


def _build(trt: Any, builder: Any, model: ResolvedModel, config: TensorRTConfig, fp16: bool, path: Path) -> None:
    log.warning("building a TensorRT engine for %s (once per GPU and version; minutes on a Jetson)", model.spec.name)
    network, _parser = _parse(trt, builder, model)
    build_config = builder.create_builder_config()
    workspace = config.workspace_mb << 20
    if hasattr(build_config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        build_config.max_workspace_size = workspace
    if fp16:
        build_config.set_flag(trt.BuilderFlag.FP16)
    tensor = network.get_input(0)
    declared = tuple(int(d) for d in tensor.shape)
    wanted = profile_for(model.spec.family, config)
    if len(declared) != len(wanted.min):
        raise BackendError(
            f"{model.spec.name}: input {tensor.name} has shape {declared}; expected {len(wanted.min)} dims"
        )
    if any(d < 0 for d in declared):
        fitted = wanted.fit(declared)
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, fitted.min, fitted.opt, fitted.max)
        if build_config.add_optimization_profile(profile) < 0:
            raise BackendError(f"{model.spec.name}: TensorRT rejected the shape profile {fitted}")
    serialized = builder.build_serialized_network(network, build_config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine for {model.path} (its log above says why)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(serialized)  # IHostMemory is a buffer
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see no engine or a whole one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ensure_engine(trt: Any, cuda: _Cuda, model: ResolvedModel, config: TensorRTConfig) -> tuple[Path, bool]:
    """The cached engine's path, building it first if absent; and whether it was built now."""
    builder = trt.Builder(_logger(trt))
    fp16 = _use_fp16(builder, config, cuda.capability)
    name = engine_file_name(
        model.spec.name,
        model.spec.sha256,
        cuda.name,
        cuda.capability,
        str(trt.__version__),
        fp16,
        profile_for(model.spec.family, config),
    )
    path = config.engine_cache_dir() / name
    if path.is_file():
        return path, False
    if not hasattr(builder, "build_serialized_network"):
        raise BackendError(f"TensorRT {trt.__version__} is too old; the tensorrt backend needs 8.0 or newer")
    _build(trt, builder, model, config, fp16, path)
    return path, True


def build_engine(model: ResolvedModel, config: TensorRTConfig) -> Path:
    """Build (or find) the cached engine for `model` on this machine's GPU; return its path."""
    trt = _import_tensorrt()
    cuda = _open_cuda(config.device)
    with cuda.active():
        return _ensure_engine(trt, cuda, model, config)[0]


def _deserialize(runtime: Any, path: Path) -> Any:
    try:
        return runtime.deserialize_cuda_engine(path.read_bytes())  # None when TensorRT rejects it
    except (OSError, RuntimeError, TypeError) as exc:
        log.debug("deserializing %s failed: %s", path, exc)
        return None


# --- running ----------------------------------------------------------------------------------------


class _TensorIO:
    """TensorRT >= 8.5: I/O tensors by name, execute_async_v3 on our stream."""

    is_async = True

    def __init__(self, trt: Any, engine: Any, context: Any):
        self._trt, self._engine, self._context = trt, engine, context
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))

    def set_input_shape(self, name: str, shape: Shape) -> bool:
        return bool(self._context.set_input_shape(name, shape))

    def shape(self, name: str) -> Shape:
        return tuple(int(d) for d in self._context.get_tensor_shape(name))

    def declared_shape(self, name: str) -> Shape:
        return tuple(int(d) for d in self._engine.get_tensor_shape(name))

    def profile(self, name: str) -> str:
        with contextlib.suppress(Exception):
            low, _, high = self._engine.get_tensor_profile_shape(name, 0)
            return f"{tuple(low)}..{tuple(high)}"
        return "static"

    def execute(self, addresses: dict[str, int], stream_handle: int) -> bool:
        for name, ptr in addresses.items():
            self._context.set_tensor_address(name, ptr)
        return bool(self._context.execute_async_v3(stream_handle))


class _BindingIO(_TensorIO):
    """TensorRT 8.0-8.4: bindings by index, synchronous execute_v2."""

    is_async = False

    def __init__(self, trt: Any, engine: Any, context: Any):
        self._trt, self._engine, self._context = trt, engine, context
        self.names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]
        self.inputs = [n for i, n in enumerate(self.names) if engine.binding_is_input(i)]

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self._engine.get_binding_dtype(self.names.index(name))))

    def set_input_shape(self, name: str, shape: Shape) -> bool:
        return bool(self._context.set_binding_shape(self.names.index(name), shape))

    def shape(self, name: str) -> Shape:
        return tuple(int(d) for d in self._context.get_binding_shape(self.names.index(name)))

    def declared_shape(self, name: str) -> Shape:
        return tuple(int(d) for d in self._engine.get_binding_shape(self.names.index(name)))

    def profile(self, name: str) -> str:
        with contextlib.suppress(Exception):
            low, _, high = self._engine.get_profile_shape(0, self.names.index(name))
            return f"{tuple(low)}..{tuple(high)}"
        return "static"

    def execute(self, addresses: dict[str, int], stream_handle: int) -> bool:
        return bool(self._context.execute_v2([addresses[n] for n in self.names]))


class TensorRTSession(Session):
    """One engine with its execution context, stream and device buffers (kept, grown when needed)."""

    prefers_batches = True  # one launch and one copy each way for N images

    def __init__(self, trt: Any, cuda: _Cuda, runtime: Any, engine: Any, label: str):
        self._closed = True  # until fully built, so close() on a half-made session does nothing
        self._cuda, self._runtime, self._engine, self._label = cuda, runtime, engine, label
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT cannot create an execution context for {label} (GPU memory?)")
        io_class = _TensorIO if hasattr(engine, "num_io_tensors") else _BindingIO
        self._io: _TensorIO = io_class(trt, engine, self._context)
        if len(self._io.inputs) != 1:
            raise BackendError(f"{label}: the tensorrt backend runs one-input engines, not {self._io.inputs}")
        self.input_name = self._io.inputs[0]
        with contextlib.suppress(Exception):  # the declared (not profile) shape; -1 where dynamic
            first = int(self._io.declared_shape(self.input_name)[0])
            self.batch_dim = first if first > 0 else None
        self.output_names = [n for n in self._io.names if n not in self._io.inputs]
        try:
            self._dtypes = {n: self._io.dtype(n) for n in self._io.names}
        except TypeError as exc:  # nptype has no numpy type for bf16/fp8/int4
            raise BackendError(f"{label}: an I/O tensor has a type numpy cannot hold: {exc}") from exc
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        self._stream = cuda.new_stream()
        self._lock = threading.Lock()
        self._closed = False

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if nbytes > capacity:  # grow only; smaller inputs reuse the buffer
            if ptr:
                del self._buffers[name]
                self._cuda.free(ptr)
            capacity = max(nbytes, _MIN_BUFFER)
            ptr = self._cuda.malloc(capacity)
            self._buffers[name] = (ptr, capacity)
        return ptr

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(tensor, dtype=self._dtypes[self.input_name])
        with self._lock, self._cuda.active():
            if self._closed:
                raise BackendError(f"{self._label}: the TensorRT session is closed")
            if not self._io.set_input_shape(self.input_name, x.shape):
                raise BackendError(
                    f"{self._label}: input shape {x.shape} is outside the engine's profile "
                    f"{self._io.profile(self.input_name)}; raise max_side/max_batch in the tensorrt config"
                )
            outputs: dict[str, np.ndarray] = {}
            for name in self.output_names:
                shape = self._io.shape(name)
                if any(d < 0 for d in shape):
                    raise BackendError(f"{self._label}: output {name} has data-dependent shape {shape}")
                outputs[name] = np.empty(shape, dtype=self._dtypes[name])
            addresses = {self.input_name: self._buffer(self.input_name, x.nbytes)}
            addresses |= {n: self._buffer(n, a.nbytes) for n, a in outputs.items()}
            self._cuda.htod(addresses[self.input_name], x, self._stream)
            if not self._io.is_async:
                self._cuda.synchronize(self._stream)  # execute_v2 does not wait on our stream
            if not self._io.execute(addresses, self._cuda.stream_handle(self._stream)):
                raise BackendError(f"{self._label}: TensorRT execution failed (its log above says why)")
            for name, host in outputs.items():
                self._cuda.dtoh(host, addresses[name], self._stream)
            self._cuda.synchronize(self._stream)
        return {n: a.astype(np.float32) if a.dtype == np.float16 else a for n, a in outputs.items()}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock, self._cuda.active():
            self._context = self._io = None  # TensorRT objects go before the memory they point at
            self._engine = self._runtime = None
            for ptr, _ in self._buffers.values():
                self._cuda.free(ptr)
            self._buffers.clear()
            self._cuda.destroy_stream(self._stream)
            self._stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit CUDA may already be gone
            self.close()


class TensorRTBackend(Backend):
    key = "tensorrt"
    config: TensorRTConfig

    def load(self, model: ResolvedModel) -> Session:
        trt = _import_tensorrt()
        cuda = _open_cuda(self.config.device)
        with cuda.active():
            runtime = trt.Runtime(_logger(trt))
            path, built = _ensure_engine(trt, cuda, model, self.config)
            engine = _deserialize(runtime, path)
            if engine is None and not built:
                log.warning("cached TensorRT engine %s cannot be loaded (corrupt or stale); rebuilding", path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                path, built = _ensure_engine(trt, cuda, model, self.config)
                engine = _deserialize(runtime, path)
            if engine is None:
                raise BackendError(f"TensorRT cannot load the engine it built for {model.spec.name} ({path})")
            return TensorRTSession(trt, cuda, runtime, engine, model.spec.name)

    def describe(self) -> str:
        return f"tensorrt (device {self.config.device}, {'fp16' if self.config.fp16 else 'fp32'})"


__all__ = [
    "Profile",
    "TensorRTBackend",
    "TensorRTConfig",
    "TensorRTSession",
    "build_engine",
    "engine_file_name",
    "engine_file_prefix",
    "profile_for",
]
