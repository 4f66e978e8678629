"""Gradient saliency and SmoothGrad for image classifiers, nested sub-models included.

Scores are class logits, not probabilities: the gradient of a softmax (or of a multi-label
run's sigmoid) output vanishes as its probability nears 1, so a confident prediction would
otherwise explain nothing. The logits come from ``score_model``, which rebuilds the
classifier's forward pass from its input through nested models (input -> preprocessing ->
backbone -> head, as tlkit builds it), taps an inner layer when asked, and swaps the final
softmax or sigmoid for a linear copy of the same layer.

Every map returned is float32 ``(n, height, width)`` at the model's input resolution,
non-negative and summing to 1 per image, so maps of different methods and models compare.

Example:
    >>> from tlkit.backbones import build_backbone, get_backbone
    >>> from tlkit.models.image import build_classifier
    >>> model = build_classifier(get_backbone("tiny_cnn"), build_backbone("tiny_cnn", 32), 3)
    >>> maps = saliency(model, np.full((2, 32, 32, 3), 128.0, "float32"))
    >>> maps.shape, bool(np.allclose(maps.sum(axis=(1, 2)), 1.0))
    ((2, 32, 32), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import UserError

if TYPE_CHECKING:
    import keras


def to_distribution(maps: np.ndarray) -> np.ndarray:
    """Non-negative maps scaled to sum to 1 each; an all-zero map becomes uniform.

    A uniform map is the honest answer when a method finds no positive evidence anywhere.

    Example:
        >>> to_distribution(np.array([[[0.0, 3.0], [1.0, 0.0]]])).tolist()
        [[[0.0, 0.75], [0.25, 0.0]]]
    """
    maps = np.maximum(np.asarray(maps, dtype="float64"), 0.0)
    totals = maps.sum(axis=(1, 2), keepdims=True)
    uniform = np.full_like(maps, 1.0 / (maps.shape[1] * maps.shape[2]))
    return np.where(totals > 0, maps / np.where(totals > 0, totals, 1.0), uniform).astype("float32")


def class_indices(scores: np.ndarray, class_index: int | Sequence[int] | None) -> np.ndarray:
    """One class per row of ``scores``: the top one (None), the same one (int), or one each.

    Example:
        >>> class_indices(np.array([[0.1, 0.9], [0.8, 0.2]]), None).tolist()
        [1, 0]
    """
    n, classes = scores.shape
    if class_index is None:
        return scores.argmax(axis=1)
    chosen = np.broadcast_to(np.asarray(class_index, dtype="int64"), (n,)).copy()
    if chosen.min() < 0 or chosen.max() >= classes:
        raise UserError(f"class index {chosen.max() if chosen.max() >= classes else chosen.min()}"
                        f" is out of range for a model with {classes} classes")
    return chosen


def score_model(model: keras.Model, layer: str | None = None) -> keras.Model:
    """A model from ``model``'s input to its class logits, or to (``layer`` output, logits).

    ``layer`` may sit inside a nested model (a tlkit classifier's backbone); the layers around
    it are called in turn, which needs the model to be a chain of layers and sub-models
    around that nested model. The rebuilt model is checked against ``model`` on one random
    input, so a layout this cannot follow fails here rather than giving a wrong map.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> score_model(model, "block3_relu").output_shape
        [(None, 8, 8, 32), (None, 3)]
    """
    import keras

    if layer is not None and not _contains(model, layer):
        raise UserError(f"model '{model.name}' has no layer '{layer}'; name one of its "
                        "convolutional layers (tlkit inspect lists them)")
    inputs = keras.Input(shape=model.input_shape[1:], name="explained_input")
    try:
        activation, logits, squash = _trace(model, inputs, layer, final=True)
        scores = keras.Model(inputs, [logits] if layer is None else [activation, logits],
                             name=f"{model.name}_scores")
    except (ValueError, TypeError) as error:  # a layer called on what it cannot take
        raise UserError(_cannot_follow(model)) from error
    _check_same_outputs(model, scores, squash)
    return scores


def _cannot_follow(model: Any) -> str:
    return (f"cannot follow the layout of model '{model.name}' to its logits: explanations "
            "need a chain of layers and nested models (input -> preprocessing -> backbone -> "
            "head)")


def _contains(model: Any, name: str) -> bool:
    import keras

    return any(layer.name == name or (isinstance(layer, keras.Model) and _contains(layer, name))
               for layer in model.layers)


def _trace(model: Any, x: Any, layer: str | None, final: bool) -> tuple[Any, Any, str | None]:
    """Apply ``model`` to ``x``: (``layer``'s output or None, output, the final activation
    cut off: ``softmax``, ``sigmoid`` or None).

    For the final model the softmax or sigmoid is cut off so the output is logits. A nested model
    holding ``layer``, or a final layer that is itself a model (the head), is walked layer
    by layer; anything else is one call of a sub-model, which follows any graph.
    """
    import keras

    top = {sub.name: sub for sub in model.layers}
    last = model.layers[-1]
    if (layer is not None and layer not in top and _contains(model, layer)) or (
            final and isinstance(last, keras.Model)):
        return _walk_chain(model, x, layer, final)
    cut = _squash(last) if final else None
    outputs = [last.input if cut else model.outputs[0]]
    if layer in top:
        outputs.insert(0, top[layer].output)
    results = keras.Model(model.inputs[0], outputs)(x)
    results = results if isinstance(results, list | tuple) else [results]
    output = results[-1]
    if cut and isinstance(last, keras.layers.Dense):
        output = _linear_copy(last)(output)
    return (results[0] if layer in top else None), output, cut


def _walk_chain(model: Any, x: Any, layer: str | None, final: bool
                ) -> tuple[Any, Any, str | None]:
    import keras

    body = [sub for sub in model.layers if not isinstance(sub, keras.layers.InputLayer)]
    activation, cut = None, None
    for position, sub in enumerate(body):
        is_last = final and position == len(body) - 1
        holds_layer = layer is not None and isinstance(sub, keras.Model) and _contains(sub, layer)
        if holds_layer or (is_last and isinstance(sub, keras.Model)):
            found, x, cut = _trace(sub, x, layer if holds_layer else None, is_last)
            activation = found if found is not None else activation
        elif is_last and _squash(sub):
            cut = _squash(sub)
            x = _linear_copy(sub)(x) if isinstance(sub, keras.layers.Dense) else x
        else:
            x = sub(x)
    return activation, x, cut


# The final activations cut off for logits: a single-label head's softmax, a multi-label
# head's sigmoid (each turns logits into the probabilities the model outputs).
SQUASHES = ("softmax", "sigmoid")


def _squash(layer: Any) -> str | None:
    """The softmax or sigmoid a Dense or Activation layer ends in, else None."""
    import keras

    name = getattr(getattr(layer, "activation", None), "__name__", "")
    if isinstance(layer, keras.layers.Dense | keras.layers.Activation) and name in SQUASHES:
        return name
    return None


def _linear_copy(dense: Any) -> Any:
    """The same Dense layer and weights without its softmax or sigmoid: it outputs logits."""
    import keras

    config = {**dense.get_config(), "activation": "linear", "name": f"{dense.name}_logits"}
    linear = keras.layers.Dense.from_config(config)
    linear.build(dense.input.shape)
    linear.set_weights(dense.get_weights())
    return linear


def _check_same_outputs(model: Any, scores: Any, squash: str | None) -> None:
    """Fail closed: the rebuilt logits must reproduce the model's own outputs."""
    import keras

    shape = [side or 64 for side in model.input_shape[1:]]
    probe = np.random.default_rng(0).uniform(0, 255, (1, *shape)).astype("float32")
    # A plain view of the model: a loaded one expects its input wrapped in a list.
    direct = keras.Model(model.inputs[0], model.outputs[0])
    expected = keras.ops.convert_to_numpy(direct(probe, training=False))
    logits = predict_logits(scores, probe)
    got = keras.ops.convert_to_numpy(getattr(keras.ops, squash)(logits)) if squash else logits
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4, rtol=1e-3):
        raise UserError(_cannot_follow(model))


def input_gradients(scores: keras.Model, images: np.ndarray, classes: np.ndarray
                    ) -> np.ndarray:
    """Gradient of each image's class logit with respect to its pixels, ``(n, h, w, 3)``.

    ``scores`` is a ``score_model``; ``classes`` holds one class index per image.

    Example:
        >>> import keras
        >>> scores = keras.Sequential([keras.Input((1, 2, 3)), keras.layers.Flatten(),
        ...                            keras.layers.Dense(2)])
        >>> scores.set_weights([np.arange(12.0).reshape(6, 2), np.zeros(2)])
        >>> input_gradients(scores, np.zeros((1, 1, 2, 3)), np.array([1])).tolist()  # kernel[:, 1]
        [[[[1.0, 3.0, 5.0], [7.0, 9.0, 11.0]]]]
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images, dtype="float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = scores(x, training=False)
        logits = logits[-1] if isinstance(logits, list | tuple) else logits
        chosen = tf.gather(logits, tf.constant(classes, dtype="int32"), axis=1, batch_dims=1)
    return tape.gradient(chosen, x).numpy()


def gradient_maps(scores: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Saliency maps from a ``score_model`` for the given classes (see ``saliency``).

    Example:
        >>> import keras
        >>> scores = keras.Sequential([keras.Input((1, 2, 3)), keras.layers.Flatten(),
        ...                            keras.layers.Dense(2)])
        >>> scores.set_weights([np.arange(12.0).reshape(6, 2), np.zeros(2)])
        >>> gradient_maps(scores, np.zeros((1, 1, 2, 3)), np.array([1])).tolist()  # 5 and 11
        [[[0.3125, 0.6875]]]
    """
    return to_distribution(np.abs(input_gradients(scores, images, classes)).max(axis=-1))


def smoothgrad_maps(scores: keras.Model, images: np.ndarray, classes: np.ndarray,
                    samples: int = 20, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """SmoothGrad maps from a ``score_model`` for the given classes (see ``smoothgrad``).

    Example:
        >>> import keras
        >>> scores = keras.Sequential([keras.Input((1, 2, 3)), keras.layers.Flatten(),
        ...                            keras.layers.Dense(2)])
        >>> scores.set_weights([np.arange(12.0).reshape(6, 2), np.zeros(2)])
        >>> # A linear model's gradient is the same at every noisy copy: the plain saliency map.
        >>> smoothgrad_maps(scores, np.zeros((1, 1, 2, 3)), np.array([1]), samples=3).tolist()
        [[[0.3125, 0.6875]]]
    """
    rng = np.random.default_rng(seed)
    maps = []
    for image, chosen in zip(images, classes, strict=True):
        sigma = noise * max(float(image.max() - image.min()), 1.0)
        noisy = image + rng.normal(0.0, sigma, (samples, *image.shape)).astype("float32")
        gradient = input_gradients(scores, noisy, np.full(samples, chosen)).mean(axis=0)
        maps.append(np.abs(gradient).max(axis=-1))
    return to_distribution(np.stack(maps))


def saliency(model: keras.Model, images: np.ndarray,
             class_index: int | Sequence[int] | None = None) -> np.ndarray:
    """Simonyan et al.'s gradient saliency: |d logit / d pixel|, the largest over channels.

    ``images`` are what the model takes (raw RGB 0-255 for a tlkit classifier), ``(n, h, w,
    3)``; ``class_index`` None explains each image's predicted class.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> maps = saliency(build_tiny_cnn(include_top=True, classes=3), np.zeros((1, 32, 32, 3)))
        >>> float(maps.sum())
        1.0
    """
    return gradient_maps(*prepare(model, images, class_index))


def smoothgrad(model: keras.Model, images: np.ndarray,
               class_index: int | Sequence[int] | None = None, samples: int = 20,
               noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """Smilkov et al.'s SmoothGrad: gradients averaged over ``samples`` noisy copies.

    Gaussian noise has standard deviation ``noise`` times each image's value range (0.15 is
    the paper's middle setting); the class is chosen on the clean image. The averaged
    gradient's magnitude, the largest over channels, is the map.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> smoothgrad(model, np.zeros((1, 32, 32, 3), "float32"), samples=4).shape
        (1, 32, 32)
    """
    return smoothgrad_maps(*prepare(model, images, class_index), samples, noise, seed)


def prepare(model: keras.Model, images: np.ndarray, class_index: int | Sequence[int] | None,
            layer: str | None = None) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """(``score_model(model, layer)``, images as float32, the class to explain per image).

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> scores, images, classes = prepare(model, np.zeros((2, 32, 32, 3)), class_index=1)
        >>> scores.output_shape, images.dtype.name, classes.tolist()
        ((None, 3), 'float32', [1, 1])
    """
    images = np.asarray(images, dtype="float32")
    scores = score_model(model, layer)
    return scores, images, class_indices(predict_logits(scores, images), class_index)


def predict_logits(scores: keras.Model, images: np.ndarray) -> np.ndarray:
    """The class logits a ``score_model`` gives ``images`` (its last output).

    Example:
        >>> import keras
        >>> scores = keras.Sequential([keras.Input((1, 2, 3)), keras.layers.Flatten(),
        ...                            keras.layers.Dense(2)])
        >>> scores.set_weights([np.arange(12.0).reshape(6, 2), np.zeros(2)])
        >>> predict_logits(scores, np.ones((1, 1, 2, 3))).tolist()  # column sums of the kernel
        [[30.0, 36.0]]
    """
    import keras

    outputs = scores(images, training=False)
    return keras.ops.convert_to_numpy(outputs[-1] if isinstance(outputs, list | tuple)
                                      else outputs)
