"""The backbone table: one row per pretrained image backbone, and ``build_backbone``.

A row is data, not code: the constructor is named as ``"module:function"`` and imported only
when the backbone is built, so listing the table (``tlkit backbones``) costs no TensorFlow
start-up. Block boundaries are layer names, read by unfreezing, per-block learning rates
and inspection alike.

Example:
    >>> from tlkit.backbones import get_backbone
    >>> get_backbone("vgg16").blocks
    ('block2_conv1', 'block3_conv1', 'block4_conv1', 'block5_conv1')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlkit.errors import UserError

if TYPE_CHECKING:
    import keras

# Per-channel preprocessing the ImageNet weights were trained with, applied by a layer inside
# the classifier so that saved models take raw RGB in 0-255:
#   none   the Keras model rescales its own input (EfficientNet, ConvNeXt, MobileNetV3)
#   tf     x / 127.5 - 1
#   torch  x / 255, then ImageNet mean/std per channel
#   caffe  RGB -> BGR, then ImageNet mean subtracted per channel (no scaling)
#   lite0  (x - 127) / 128
PREPROCESS_MODES = ("none", "tf", "torch", "caffe", "lite0")


@dataclass(frozen=True, kw_only=True)
class Backbone:
    """One row of the table.

    ``blocks`` lists the layers where each block after the stem starts: block 0 (the stem)
    is everything the first boundary depends on. A boundary written ``after:NAME`` starts
    right after layer NAME, for families whose block-start layers only have automatic names
    (Inception). ``last_conv`` is the last convolutional feature map, the natural layer for
    Grad-CAM (``tlkit.explain.gradcam``); None means the backbone's output, where Keras
    leaves that layer unnamed.

    Example:
        >>> row = get_backbone("tiny_cnn")
        >>> row.block_names, row.last_conv
        (('stem', 'block2_conv', 'block3_conv'), 'block3_relu')
    """

    name: str
    constructor: str
    preprocess: str
    default_size: int
    min_size: int
    blocks: tuple[str, ...]
    last_conv: str | None
    params: int
    offline_weights: bool = False
    has_imagenet: bool = True

    @property
    def block_names(self) -> tuple[str, ...]:
        """Names of all blocks, the stem first: ``("stem", "block2_conv1", ...)``."""
        return ("stem", *self.blocks)


def _keras_app(name: str, constructor: str, preprocess: str, blocks: list[str],
               last_conv: str | None, params: int, default_size: int = 224,
               min_size: int = 32) -> Backbone:
    """A row for a ``keras.applications`` constructor, by its class name."""
    return Backbone(name=name, constructor=f"keras.applications:{constructor}",
                    preprocess=preprocess, default_size=default_size, min_size=min_size,
                    blocks=tuple(blocks), last_conv=last_conv, params=params)


_EFFICIENTNET_BLOCKS = (["block1a_dwconv"] + [f"block{i}a_expand_conv" for i in range(2, 8)]
                        + ["top_conv"])


def _efficientnet(suffix: str, size: int, params: int) -> Backbone:
    return _keras_app(f"efficientnet{suffix}", f"EfficientNet{suffix.upper()}", "none",
                      blocks=_EFFICIENTNET_BLOCKS, last_conv="top_activation", params=params,
                      default_size=size)


def _efficientnet_v2(suffix: str, size: int, n_blocks: int, params: int) -> Backbone:
    blocks = (["block1a_project_conv"]
              + [f"block{i}a_expand_conv" for i in range(2, n_blocks + 1)] + ["top_conv"])
    return _keras_app(f"efficientnetv2{suffix}", f"EfficientNetV2{suffix.upper()}", "none",
                      blocks=blocks, last_conv="top_activation", params=params,
                      default_size=size)


def _convnext(size_name: str, params: int) -> Backbone:
    prefix = f"convnext_{size_name.lower()}"
    return _keras_app(prefix, f"ConvNeXt{size_name}", "none",
                      blocks=[f"{prefix}_downsampling_block_{i}" for i in range(3)],
                      last_conv=None, params=params)


def _resnet(depth: int, params: int, v2: bool = False) -> Backbone:
    suffix = "v2" if v2 else ""
    first = "preact_bn" if v2 else "1_conv"
    return _keras_app(f"resnet{depth}{suffix}", f"ResNet{depth}{suffix.upper()}",
                      "tf" if v2 else "caffe",
                      blocks=[f"conv{i}_block1_{first}" for i in range(2, 6)],
                      last_conv="post_relu" if v2 else "conv5_block3_out", params=params)


def _densenet(depth: int, params: int) -> Backbone:
    return _keras_app(f"densenet{depth}", f"DenseNet{depth}", "torch",
                      blocks=[f"conv{i}_block1_0_bn" for i in range(2, 6)], last_conv="relu",
                      params=params)


_ROWS: list[Backbone] = [
    _keras_app("vgg16", "VGG16", "caffe", blocks=[f"block{i}_conv1" for i in range(2, 6)],
               last_conv="block5_conv3", params=14_714_688),
    _keras_app("vgg19", "VGG19", "caffe", blocks=[f"block{i}_conv1" for i in range(2, 6)],
               last_conv="block5_conv4", params=20_024_384),
    _resnet(50, 23_587_712),
    _resnet(101, 42_658_176),
    _resnet(152, 58_370_944),
    _resnet(50, 23_564_800, v2=True),
    _resnet(101, 42_626_560, v2=True),
    _resnet(152, 58_331_648, v2=True),
    _keras_app("inceptionv3", "InceptionV3", "tf",
               blocks=["after:mixed0", "after:mixed2", "after:mixed4", "after:mixed7",
                       "after:mixed9"],
               last_conv="mixed10", params=21_802_784, default_size=299, min_size=75),
    _keras_app("inceptionresnetv2", "InceptionResNetV2", "tf",
               blocks=["mixed_5b", "mixed_6a", "mixed_7a", "conv_7b"], last_conv="conv_7b_ac",
               params=54_336_736, default_size=299, min_size=75),
    _keras_app("xception", "Xception", "tf",
               blocks=["block2_sepconv1", "block3_sepconv1_act", "block4_sepconv1_act",
                       "block5_sepconv1_act", "block13_sepconv1_act"],
               last_conv="block14_sepconv2_act", params=20_861_480, default_size=299,
               min_size=71),
    _keras_app("mobilenet", "MobileNet", "tf",
               blocks=["conv_dw_2", "conv_dw_4", "conv_dw_6", "conv_dw_12"],
               last_conv="conv_pw_13_relu", params=3_228_864),
    _keras_app("mobilenetv2", "MobileNetV2", "tf",
               blocks=["block_1_expand", "block_3_expand", "block_6_expand", "block_13_expand",
                       "Conv_1"],
               last_conv="out_relu", params=2_257_984),
    _keras_app("mobilenetv3small", "MobileNetV3Small", "none",
               blocks=["expanded_conv_depthwise_pad", "expanded_conv_1_expand",
                       "expanded_conv_3_expand", "expanded_conv_8_expand", "conv_1"],
               last_conv=None, params=939_120),
    _keras_app("mobilenetv3large", "MobileNetV3Large", "none",
               blocks=["expanded_conv_1_expand", "expanded_conv_3_expand",
                       "expanded_conv_6_expand", "expanded_conv_12_expand", "conv_1"],
               last_conv=None, params=2_996_352),
    _densenet(121, 7_037_504),
    _densenet(169, 12_642_880),
    _densenet(201, 18_321_984),
    _keras_app("nasnetmobile", "NASNetMobile", "tf",
               blocks=["after:reduction_concat_stem_2", "after:reduction_concat_reduce_4",
                       "after:reduction_concat_reduce_8"],
               last_conv=None, params=4_269_716),
    _keras_app("nasnetlarge", "NASNetLarge", "tf",
               blocks=["after:reduction_concat_stem_2", "after:reduction_concat_reduce_6",
                       "after:reduction_concat_reduce_12"],
               last_conv=None, params=84_916_818, default_size=331),
    _efficientnet("b0", 224, 4_049_571),
    _efficientnet("b1", 240, 6_575_239),
    _efficientnet("b2", 260, 7_768_569),
    _efficientnet("b3", 300, 10_783_535),
    _efficientnet("b4", 380, 17_673_823),
    _efficientnet("b5", 456, 28_513_527),
    _efficientnet("b6", 528, 40_960_143),
    _efficientnet("b7", 600, 64_097_687),
    _efficientnet_v2("b0", 224, 6, 5_919_312),
    _efficientnet_v2("b1", 240, 6, 6_931_124),
    _efficientnet_v2("b2", 260, 6, 8_769_374),
    _efficientnet_v2("b3", 300, 6, 12_930_622),
    _efficientnet_v2("s", 384, 6, 20_331_360),
    _efficientnet_v2("m", 480, 7, 53_150_388),
    _efficientnet_v2("l", 480, 7, 117_746_848),
    _convnext("Tiny", 27_820_128),
    _convnext("Small", 49_454_688),
    _convnext("Base", 87_566_464),
    _convnext("Large", 196_230_336),
    _convnext("XLarge", 348_147_968),
    Backbone(name="efficientnet_lite0", constructor="tlkit.lite0:build_efficientnet_lite0",
             preprocess="lite0", default_size=224, min_size=32,
             blocks=tuple(_EFFICIENTNET_BLOCKS), last_conv="top_activation", params=3_413_024,
             offline_weights=True),
    # A few thousand parameters: lets tests walk every code path in seconds.
    Backbone(name="tiny_cnn", constructor="tlkit.backbones:build_tiny_cnn", preprocess="tf",
             default_size=32, min_size=16, blocks=("block2_conv", "block3_conv"),
             last_conv="block3_relu", params=6_200, has_imagenet=False),
]

BACKBONES: dict[str, Backbone] = {row.name: row for row in _ROWS}


def get_backbone(name: str) -> Backbone:
    """Return the table row for ``name`` (case-insensitive), or a UserError listing the choices.

    Example:
        >>> get_backbone("ResNet50").default_size
        224
    """
    row = BACKBONES.get(name.lower().replace("-", "_"))
    if row is None:
        raise UserError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}")
    return row


def check_input_size(row: Backbone, input_size: int) -> None:
    """Refuse an input size the backbone cannot take (its stride would shrink it to nothing).

    Example:
        >>> check_input_size(get_backbone("inceptionv3"), 64)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: input size 64 is below inceptionv3's minimum of 75; ...
    """
    if input_size < row.min_size:
        raise UserError(f"input size {input_size} is below {row.name}'s minimum of "
                        f"{row.min_size}; use --input-size {row.min_size} or more "
                        f"(default {row.default_size})")


def build_backbone(name: str, input_size: int | None = None, weights: str | None = None,
                   include_top: bool = False) -> keras.Model:
    """Build a backbone from the table without its ImageNet head, taking preprocessed input.

    ``weights`` is None (random), ``"imagenet"`` or a path to a weights file; loading and
    checking them is ``tlkit.weights``'s job, so this only passes the argument through.

    Example:
        >>> model = build_backbone("tiny_cnn", input_size=32)
        >>> model.output_shape
        (None, 8, 8, 32)
    """
    row = get_backbone(name)
    size = input_size or row.default_size
    check_input_size(row, size)
    module_name, function_name = row.constructor.split(":")
    constructor = getattr(importlib.import_module(module_name), function_name)
    return constructor(include_top=include_top, weights=weights, input_shape=(size, size, 3))


def build_tiny_cnn(include_top: bool = False, weights: str | None = None,
                   input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10,
                   **_: Any) -> keras.Model:
    """A three-block CNN with BatchNorm, laid out like a keras.applications model, for tests.

    Example:
        >>> build_tiny_cnn(input_shape=(32, 32, 3)).count_params()
        6200
    """
    import keras

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, filters in enumerate((8, 16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                                name=f"block{block}_conv")(x)
        x = keras.layers.BatchNormalization(name=f"block{block}_bn")(x)
        x = keras.layers.Activation("relu", name=f"block{block}_relu")(x)
        if block < 3:
            x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="tiny_cnn")
    if weights not in (None, "imagenet"):
        model.load_weights(weights)
    return model


def block_of_layers(model: keras.Model, row: Backbone) -> dict[str, int]:
    """Map every layer of a backbone built from ``row`` to its block index (0 is the stem).

    A layer belongs to block k when it is not needed to compute the input of block k's
    boundary. Reading the graph instead of layer positions keeps side branches right: a
    ResNet or Xception shortcut convolution created before its block's first named layer
    still belongs to that block.

    Example:
        >>> blocks = block_of_layers(build_backbone("tiny_cnn"), get_backbone("tiny_cnn"))
        >>> blocks["block1_conv"], blocks["block3_conv"]
        (0, 2)
    """
    layers = {layer.name: layer for layer in model.layers}
    block = {name: 0 for name in layers}
    for index, boundary in enumerate(row.blocks, start=1):
        after = boundary.startswith("after:")
        name = boundary.removeprefix("after:")
        if name not in layers:
            raise UserError(f"block boundary '{name}' is not a layer of {row.name}")
        needed = _ancestors(model, layers[name])
        if after:
            needed.add(name)
        for layer_name in layers:
            if layer_name not in needed:
                block[layer_name] = index
    return block


def _ancestors(model: keras.Model, layer: Any) -> set[str]:
    """Names of the layers whose outputs ``layer`` needs, directly or indirectly: the layers
    of the model from ``model``'s inputs to ``layer``'s input (each backbone layer is
    called once, so its input is one)."""
    import keras

    return {ancestor.name
            for ancestor in keras.Model(model.inputs, layer.input, name="ancestors").layers}


def backbone_table() -> Any:
    """The table as a pandas DataFrame, one row per backbone, for listing and docs.

    Example:
        >>> backbone_table().loc[0, "name"]
        'vgg16'
    """
    import pandas as pd

    return pd.DataFrame([{
        "name": row.name,
        "params": row.params,
        "default_size": row.default_size,
        "min_size": row.min_size,
        "blocks": len(row.block_names),
        "block_starts": " ".join(row.block_names),
        "last_conv": row.last_conv or "(output)",
        "preprocess": row.preprocess,
        "imagenet": ("offline" if row.offline_weights
                     else "download" if row.has_imagenet else "none"),
    } for row in _ROWS])
