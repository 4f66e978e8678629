"""Temperature scaling inside a classifier: logits -> ``temperature`` -> softmax or sigmoid.

Every head tlkit builds ends in a linear Dense (the logits), a ``Rescaling`` layer named
``temperature`` (scale ``1 / T``; one T, or one per class for sigmoid outputs) and an
``Activation`` named ``probabilities``. Training sees T = 1, so the model learns as before;
after training T is set from held-out data (``tlkit.tasks.Task.calibrate``) and the saved
``model.keras``, SavedModel, TFLite and ONNX all carry it. Only stock Keras layers: an image
model still loads without tlkit. Models saved before this layout (a Dense with a softmax)
have no ``temperature`` layer; ``temperature_of`` says None and nothing here touches them.

Example:
    >>> import keras
    >>> x = keras.Input((4,))
    >>> model = keras.Model(x, output_layers(x, 3, "softmax", name="predictions"))
    >>> set_temperature(model, 2.0)
    >>> temperature_of(model).tolist()
    2.0
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

TEMPERATURE_LAYER = "temperature"
PROBABILITIES_LAYER = "probabilities"


def output_layers(x: Any, num_classes: int, activation: str, name: str, **dense: Any) -> Any:
    """Apply a head's output to ``x``: linear Dense ``name`` (``dense``: its other arguments),
    the temperature (1 until calibrated) and the ``activation`` (softmax or sigmoid).

    Example:
        >>> import keras
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, output_layers(x, 2, "sigmoid", "out"))
        >>> [layer.name for layer in model.layers[1:]]
        ['out', 'temperature', 'probabilities']
    """
    import keras

    # float32 throughout: probabilities in float32 under a mixed-precision policy
    logits = keras.layers.Dense(num_classes, name=name, dtype="float32", **dense)(x)
    scaled = keras.layers.Rescaling(1.0, name=TEMPERATURE_LAYER, dtype="float32")(logits)
    return keras.layers.Activation(activation, name=PROBABILITIES_LAYER, dtype="float32")(scaled)


def find_layer(model: Any, name: str) -> Any:
    """The layer called ``name`` in ``model`` or a model nested in it (None: there is none).

    Example:
        >>> import keras
        >>> print(find_layer(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
        ...                  TEMPERATURE_LAYER))
        None
    """
    import keras

    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model) and (found := find_layer(layer, name)) is not None:
            return found
    return None


def temperature_of(model: Any) -> np.ndarray | None:
    """The model's temperature (a scalar array, or one per class); None for a model saved
    without a temperature layer.

    Example:
        >>> import keras
        >>> print(temperature_of(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])))
        None
    """
    layer = find_layer(model, TEMPERATURE_LAYER)
    if layer is None:
        return None
    return 1.0 / np.asarray(layer.scale, dtype="float64")


def set_temperature(model: Any, temperature: float | np.ndarray) -> None:
    """Divide the model's logits by ``temperature`` from now on (and in what it saves).

    Example:
        >>> import keras
        >>> x = keras.Input((2,))
        >>> model = keras.Model(x, output_layers(x, 2, "softmax", "out"))
        >>> set_temperature(model, np.array([1.0, 4.0]))
        >>> temperature_of(model).tolist()
        [1.0, 4.0]
    """
    layer = find_layer(model, TEMPERATURE_LAYER)
    if layer is None:
        raise ValueError(f"model '{model.name}' has no '{TEMPERATURE_LAYER}' layer")
    scale = 1.0 / np.asarray(temperature, dtype="float64")
    # A plain float or list: the layer's config (and so model.keras) stores it as it is.
    layer.scale = float(scale) if scale.ndim == 0 else scale.tolist()


@contextmanager
def logits_out(model: Any) -> Iterator[bool]:
    """While open, the model outputs its raw logits (temperature 1, no softmax or sigmoid);
    yields False (and changes nothing) for a model without a temperature layer.

    Example:
        >>> import keras
        >>> x = keras.Input((2,))
        >>> model = keras.Model(x, output_layers(x, 2, "softmax", "out"))
        >>> with logits_out(model) as cut:
        ...     cut, bool(np.asarray(model(np.ones((1, 2)))).sum() != 1.0)
        (True, True)
    """
    import keras

    scaling = find_layer(model, TEMPERATURE_LAYER)
    squash = find_layer(model, PROBABILITIES_LAYER)
    if scaling is None or squash is None:
        yield False
        return
    scale, activation = scaling.scale, squash.activation
    scaling.scale, squash.activation = 1.0, keras.activations.linear
    try:
        yield True
    finally:
        scaling.scale, squash.activation = scale, activation
