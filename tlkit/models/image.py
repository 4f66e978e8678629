"""The image classifier: raw RGB 0-255 in, class probabilities out.

Layout: ``Input -> preprocessing layers -> backbone (nested Model) -> head (nested Model)``.
Keeping the preprocessing inside means a saved model cannot be fed wrongly normalised
images; keeping the head a model of its own lets a frozen stage train it on backbone
features computed once.

Example:
    >>> from tlkit.backbones import build_backbone, get_backbone
    >>> row = get_backbone("tiny_cnn")
    >>> model = build_classifier(row, build_backbone("tiny_cnn", 32), num_classes=3)
    >>> model.output_shape
    (None, 3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.backbones import Backbone
from tlkit.models.calibration import output_layers

if TYPE_CHECKING:
    import keras

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocessing_layers(mode: str) -> list[Any]:
    """Built-in Keras layers that turn RGB 0-255 into what ``mode``'s weights expect.

    Only stock layers are used, so ``keras.saving.load_model`` reads the model without tlkit.

    Example:
        >>> [layer.name for layer in preprocessing_layers("tf")]
        ['preprocess_tf']
    """
    import keras

    if mode == "none":
        return []
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "lite0":
        return [keras.layers.Rescaling(1 / 128, offset=-127 / 128, name="preprocess_lite0")]
    if mode == "torch":
        return [keras.layers.Rescaling(1 / 255, name="preprocess_torch_scale"),
                keras.layers.Normalization(mean=list(IMAGENET_MEAN_RGB),
                                           variance=[s * s for s in IMAGENET_STD_RGB],
                                           name="preprocess_torch_normalize")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction are one fixed affine map per pixel: a frozen 1x1
        # convolution expresses it with a stock layer.
        permute = np.zeros((1, 1, 3, 3), "float32")
        for rgb, bgr in ((0, 2), (1, 1), (2, 0)):
            permute[0, 0, rgb, bgr] = 1.0
        layer = keras.layers.Conv2D(3, 1, name="preprocess_caffe", trainable=False)
        layer.build((None, None, None, 3))
        layer.set_weights([permute, -np.array(CAFFE_MEAN_BGR, "float32")])
        return [layer]
    raise ValueError(f"unknown preprocessing mode '{mode}'")


def build_head(feature_shape: tuple[int | None, ...], num_classes: int, dropout: float,
               activation: str = "softmax") -> keras.Model:
    """Global average pooling, dropout (left out when 0), the logits, their temperature and
    a softmax (a sigmoid per class for label sets: ``activation``), as a model.

    Example:
        >>> [layer.name for layer in build_head((None, 7, 7, 512), 5, dropout=0.0).layers]
        ['features', 'avg_pool', 'predictions', 'temperature', 'probabilities']
    """
    import keras

    features = keras.Input(shape=feature_shape[1:], name="features")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = output_layers(x, num_classes, activation, name="predictions")
    return keras.Model(features, outputs, name="head")


def build_classifier(row: Backbone, backbone: keras.Model, num_classes: int,
                     dropout: float = 0.2, activation: str = "softmax") -> keras.Model:
    """Wrap ``backbone`` (built from ``row``) with its preprocessing and a new head whose
    output ``activation`` is the task's.

    Example:
        >>> from tlkit.backbones import build_backbone, get_backbone
        >>> model = build_classifier(get_backbone("tiny_cnn"), build_backbone("tiny_cnn", 32), 3)
        >>> [layer.name for layer in model.layers]
        ['image', 'preprocess_tf', 'tiny_cnn', 'head']
    """
    import keras

    size = backbone.input_shape[1]
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(row.preprocess):
        x = layer(x)
    x = backbone(x)
    outputs = build_head(backbone.output_shape, num_classes, dropout, activation)(x)
    return keras.Model(inputs, outputs, name=f"{row.name}_classifier")
