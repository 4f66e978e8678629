"""The seam to Keras's private API: each access works on this Keras and fails closed without it.

Each private part tlkit reaches for is checked twice: against the installed Keras (the test
fails if Keras moved or renamed it) and against a Keras without it (tlkit raises
``KerasInternalsError``, one line, instead of doing something else). The weights lookup is
checked against a Keras that no longer calls the replaced ``get_file``: it must fail without
touching the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from conftest import assert_user_error
from test_weights import loopback_server

from tlkit import keras_internals, weights
from tlkit.keras_internals import (
    KERAS_TESTED,
    KerasInternalsError,
    adadelta_accumulators,
    functional_graph,
    keras_get_file_replaced,
    layer_calls,
    optimizer_variable_index,
    variables_left_unallocated,
)

ROOT = Path(__file__).parent.parent


def _internals_error(call: Any, *words: str) -> str:
    """``call`` must raise KerasInternalsError: one line, naming the tested Keras range."""
    message = assert_user_error(call, *words, f"keras{KERAS_TESTED}")
    with pytest.raises(KerasInternalsError):
        call()
    return message


# --- the tested range ----------------------------------------------------------------------

def test_pyproject_pins_keras_to_the_tested_range() -> None:
    assert f'"keras{KERAS_TESTED}",' in (ROOT / "pyproject.toml").read_text()
    low, high = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", KERAS_TESTED).groups()
    installed = tuple(int(part) for part in keras.__version__.split(".")[:2])
    assert tuple(map(int, low.split("."))) <= installed < tuple(map(int, high.split(".")))


# --- get_file: which weights file a keras.applications constructor loads -------------------

def test_keras_applications_ask_the_replaced_get_file() -> None:
    from keras.src.utils import file_utils

    asked: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def stand_in(*args: Any, **kwargs: Any) -> str:
        asked.append((args, kwargs))
        raise LookupError("stop here")

    with pytest.raises(LookupError), keras_get_file_replaced(stand_in, "built VGG16"):
        keras.applications.VGG16(weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    assert len(asked) == 1
    assert asked[0][0][0] == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert file_utils.get_file is keras.utils.get_file, "the original is put back"


@pytest.fixture
def loopback() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every request."""
    with loopback_server(b"not a weights file") as served:
        yield served


@pytest.fixture
def keras_that_bypasses_get_file(loopback: tuple[str, list[str]], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Backbone constructors that fetch their weights with a get_file of their own, as a Keras
    that moved or renamed ``get_file`` would: the replaced one is never called."""
    base, requests = loopback
    keep_real_get_file = keras.utils.get_file
    cache = tmp_path / "bypass_cache"

    def constructor(name: str, input_size: int | None = None, weights: Any = None,
                    **_: Any) -> Any:
        if weights == "imagenet":
            keep_real_get_file("bypass.h5", origin=base + "bypass.h5", cache_subdir="models",
                               cache_dir=str(cache))
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])

    monkeypatch.setattr(weights, "build_backbone", constructor)
    return cache / "models" / "bypass.h5", requests


@pytest.mark.parametrize("lookup", [
    lambda: weights.expected_weights_file("vgg16"),
    lambda: weights.build_weighted_backbone("vgg16", 32, "imagenet"),
])
def test_weights_lookup_never_downloads_around_the_replaced_get_file(
        keras_that_bypasses_get_file: tuple[Path, list[str]], lookup: Any) -> None:
    _, requests = keras_that_bypasses_get_file
    _internals_error(lookup, "without calling keras.src.utils.file_utils.get_file",
                     "urllib.Request", "nothing was downloaded")
    assert requests == []


def test_import_never_downloads_around_the_replaced_get_file(
        keras_that_bypasses_get_file: tuple[Path, list[str]], tmp_path: Path) -> None:
    _, requests = keras_that_bypasses_get_file
    source = tmp_path / "vgg16.h5"
    source.write_bytes(b"weights")
    _internals_error(lambda: weights.import_weights(source, "vgg16"), "nothing was downloaded")
    assert requests == []


def test_weights_lookup_refuses_a_keras_that_loads_a_cached_file_around_it(
        keras_that_bypasses_get_file: tuple[Path, list[str]]) -> None:
    """With the file already cached the bypassing constructor needs no network and returns
    normally; the lookup still fails, because the stand-in was never asked."""
    cached, requests = keras_that_bypasses_get_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    _internals_error(lambda: weights.build_weighted_backbone("vgg16", 32, "imagenet"),
                     "built vgg16 with ImageNet weights without calling")
    assert requests == []


def test_network_stays_open_inside_the_stand_in_and_outside_the_block(
        loopback: tuple[str, list[str]], tmp_path: Path) -> None:
    base, requests = loopback

    def stand_in(*args: Any, **kwargs: Any) -> str:
        keras.utils.get_file("in.h5", origin=base + "in.h5", cache_dir=str(tmp_path))
        raise LookupError("the download went through")

    with pytest.raises(LookupError), keras_get_file_replaced(stand_in, "built VGG16"):
        keras.applications.VGG16(weights="imagenet", include_top=False, input_shape=(32, 32, 3))
    keras.utils.get_file("out.h5", origin=base + "out.h5", cache_dir=str(tmp_path))
    assert requests == ["/in.h5", "/out.h5"]


def test_get_file_moved_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.utils import file_utils

    monkeypatch.setattr(keras_internals, "_GET_FILE_MODULE", "keras.src.utils.gone_utils")
    _internals_error(lambda: weights.expected_weights_file("vgg16"),
                     "has no module keras.src.utils.gone_utils")
    monkeypatch.undo()
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: "elsewhere")
    _internals_error(lambda: weights.expected_weights_file("vgg16"),
                     "no longer defines keras.utils.get_file in keras.src.utils.file_utils")


# --- functional graphs ---------------------------------------------------------------------

def _branching_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3), name="image")
    left = keras.layers.Conv2D(4, 3, padding="same", name="left")(inputs)
    right = keras.layers.Conv2D(4, 1, name="right")(inputs)
    added = keras.layers.Add(name="add")([left, right])
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(added))


def test_layer_calls_follow_the_graph_in_execution_order() -> None:
    model = _branching_model()
    calls = layer_calls(functional_graph(model))
    assert [call.layer.name for call in calls] == ["left", "right", "add", "pool"]
    add = calls[2]
    assert [id(t) for t in add.inputs] == [id(calls[0].outputs[0]), id(calls[1].outputs[0])]
    assert [id(t) for t in calls[-1].outputs] == [id(model.outputs[0])]


def test_functional_graph_of_each_kind_of_model() -> None:
    sequential = keras.Sequential([keras.layers.Dense(2)])
    assert functional_graph(sequential) is None  # not built yet: no graph
    sequential.build((None, 3))
    assert [c.layer.name for c in layer_calls(functional_graph(sequential))] == \
        [sequential.layers[0].name]

    class Subclassed(keras.Model):
        def call(self, x: Any) -> Any:
            return x

    assert functional_graph(Subclassed()) is None
    assert functional_graph(keras.layers.Dense(2)) is None


def test_output_specs_follow_a_new_input_size() -> None:
    call = layer_calls(functional_graph(_branching_model()))[0]
    assert call.output_specs([keras.KerasTensor((2, 16, 16, 3))])[0].shape == (2, 16, 16, 4)


def test_renamed_graph_internals_are_clear_errors() -> None:
    model = _branching_model()
    object.__delattr__(model, "_nodes_by_depth")
    _internals_error(lambda: functional_graph(model), "Functional._nodes_by_depth")
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    object.__delattr__(sequential, "_functional")
    _internals_error(lambda: functional_graph(sequential), "Sequential._functional")
    call = layer_calls(functional_graph(_branching_model()))[0]
    renamed = keras_internals.LayerCall(call.layer, call.inputs, call.outputs, node=object())
    _internals_error(lambda: renamed.output_specs([keras.KerasTensor((2, 16, 16, 3))]),
                     "object.arguments")


# --- models built for their shapes only ----------------------------------------------------

def test_variables_built_inside_stay_unallocated_and_off_the_pending_list() -> None:
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    with variables_left_unallocated():
        model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3))
    assert model.count_params() > 0
    assert all(variable._value is None for variable in model.weights)
    assert (global_state.get_global_attribute("uninitialized_variables") or []) == before
    keras.backend.clear_session()


def test_renamed_pending_list_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras.src.backend.common import global_state

    real = list(global_state.get_global_attribute("uninitialized_variables") or [])
    monkeypatch.setattr(keras_internals, "_PENDING", "renamed_by_a_future_keras")

    def build() -> None:
        with variables_left_unallocated():
            keras.layers.Dense(2).build((None, 3))

    try:
        _internals_error(build, "no longer lists deferred variables")
    finally:  # the probes went to Keras's real list: take them off again
        global_state.set_global_attribute("uninitialized_variables", real)


# --- optimizer slots -----------------------------------------------------------------------

def test_variable_index_is_the_build_position_inside_update_step() -> None:
    variables = [keras.Variable(np.full(shape, 1.0, "float32"), name=f"v{i}")
                 for i, shape in enumerate([(2,), (3, 2), (4,)])]
    seen: list[tuple[int, tuple[int, ...]]] = []

    class Recording(keras.optimizers.SGD):
        def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
            seen.append((optimizer_variable_index(self, variable), tuple(variable.shape)))
            return super().update_step(gradient, variable, learning_rate)

    optimizer = Recording(0.1)
    optimizer.build(variables)
    optimizer.apply_gradients([(np.ones(v.shape, "float32"), v) for v in reversed(variables)])
    assert sorted(seen) == [(0, (2,)), (1, (3, 2)), (2, (4,))]


def test_adadelta_accumulators_are_the_gradient_then_the_update_slot() -> None:
    weight = keras.Variable(np.zeros((5, 2), "float32"), name="table")
    optimizer = keras.optimizers.Adadelta(learning_rate=1.0, rho=0.5)
    optimizer.build([weight])
    grads, deltas = adadelta_accumulators(optimizer, weight)
    assert tuple(grads.shape) == tuple(deltas.shape) == (5, 2)
    optimizer.apply_gradients([(np.full((5, 2), 2.0, "float32"), weight)])
    np.testing.assert_allclose(grads.numpy(), 0.5 * 4.0)  # rho * 0 + (1 - rho) * g^2
    assert np.all(deltas.numpy() > 0) and np.all(deltas.numpy() < grads.numpy())


def test_renamed_optimizer_internals_are_clear_errors() -> None:
    weight = keras.Variable(np.zeros(2, "float32"))
    _internals_error(lambda: optimizer_variable_index(object(), weight),
                     "variable index on optimizers", "object._get_variable_index")
    sgd = keras.optimizers.SGD()
    sgd.build([weight])
    _internals_error(lambda: adadelta_accumulators(sgd, weight), "SGD._accumulated_grads")


def test_gpu_memory_limits_list_no_gpu_here_and_fail_closed_without_device_lib(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorflow.python.client import device_lib

    from tlkit.keras_internals import gpu_memory_limits

    assert gpu_memory_limits() == {}  # this machine has no GPU; the CPU is not listed
    monkeypatch.delattr(device_lib, "list_local_devices")
    with pytest.raises(KerasInternalsError, match="no device_lib.list_local_devices"):
        gpu_memory_limits()
