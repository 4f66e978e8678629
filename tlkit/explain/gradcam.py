"""Grad-CAM (Selvaraju et al. 2017) through nested classifiers.

The map is the ReLU of the convolutional layer's feature maps weighted by the spatial mean
of the class logit's gradient, upsampled bilinearly to the input resolution. The layer may
sit inside a nested backbone: ``score_model`` rebuilds the forward pass around it, which is
where tools that look for the layer in the outer model only fail.

Example:
    >>> from tlkit.backbones import build_backbone, get_backbone
    >>> from tlkit.models.image import build_classifier
    >>> model = build_classifier(get_backbone("tiny_cnn"), build_backbone("tiny_cnn", 32), 3)
    >>> maps = gradcam(model, np.full((1, 32, 32, 3), 128.0, "float32"), layer="block3_relu")
    >>> maps.shape, maps.dtype.name, bool(maps.min() >= 0)
    ((1, 32, 32), 'float32', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tlkit.errors import UserError
from tlkit.explain.saliency import prepare, to_distribution

if TYPE_CHECKING:
    import keras


def default_layer(model: keras.Model) -> str:
    """The last layer with a 4-D output (a feature map), looking inside nested models.

    tlkit's runs name the layer from the backbone table's ``last_conv`` instead; this is
    for models without a table row and rows whose last feature map has no fixed name.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> default_layer(model)
        'block3_relu'
    """
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return default_layer(layer)
            except UserError:
                continue
        if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4:
            return layer.name
    raise UserError(f"model '{model.name}' has no layer with a 2-D feature map for Grad-CAM")


def gradcam_maps(scores: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM maps from a two-output ``score_model`` (feature map, logits) for ``classes``.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> scores, images, _ = prepare(model, np.zeros((2, 32, 32, 3)), None, "block3_relu")
        >>> gradcam_maps(scores, images, np.array([0, 2])).shape  # upsampled from 8x8
        (2, 32, 32)
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images, dtype="float32")
    with tf.GradientTape() as tape:
        features, logits = scores(x, training=False)
        chosen = tf.gather(logits, tf.constant(classes, dtype="int32"), axis=1, batch_dims=1)
    gradients = tape.gradient(chosen, features)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    # Bilinear weights are convex, so the upsampled map stays non-negative.
    cams = tf.image.resize(cams, x.shape[1:3], method="bilinear")
    return to_distribution(cams[..., 0].numpy())


def gradcam(model: keras.Model, images: np.ndarray,
            class_index: int | Sequence[int] | None = None, layer: str | None = None
            ) -> np.ndarray:
    """Grad-CAM heatmaps ``(n, h, w)`` at input resolution, non-negative, summing to 1.

    ``images`` are what the model takes (raw RGB 0-255 for a tlkit classifier);
    ``class_index`` None explains each image's predicted class, an int (or one per image)
    the named class; ``layer`` None takes ``default_layer(model)``.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> model = build_tiny_cnn(include_top=True, classes=3)
        >>> gradcam(model, np.zeros((2, 32, 32, 3), "float32"), class_index=[0, 1]).shape
        (2, 32, 32)
    """
    return gradcam_maps(*prepare(model, images, class_index, layer or default_layer(model)))

