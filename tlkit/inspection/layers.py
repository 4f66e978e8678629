"""Walk a Keras model's layer graph: one step per layer call, nested models expanded.

Each step carries what the arithmetic needs: the layer, its kind (how receptive fields,
activations and MACs treat it), input and output shapes, parameters counted once per layer,
and the receptive field of its output. Shapes are propagated by the layers themselves
(``compute_output_spec``), so a model built for an unknown input size can be inspected at a
given one.

Also here: the lecture's arithmetic of one convolution layer, on its own (``conv_arithmetic``).

Example:
    >>> from tlkit.backbones import build_backbone
    >>> steps = walk_model(build_backbone("tiny_cnn", 32))
    >>> [(s.name, s.output_shape) for s in steps[1:3]]
    [('block1_conv', (32, 32, 8)), ('block1_bn', (32, 32, 8))]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tlkit.errors import UserError
from tlkit.inspection import receptive_field as rf
from tlkit.inspection.receptive_field import Field
from tlkit.keras_internals import (
    LayerCall,
    functional_graph,
    layer_calls,
    variables_left_unallocated,
)


def _kinds(kind: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, kind)


# How the arithmetic treats each layer class (by class name, so Keras-internal classes such
# as ConvNeXt's LayerScale need no import). "identity" and "flatten"/"reshape" return a view
# or their input unchanged at inference: they create no new tensor. A class not listed here
# is "unknown": its parameters and output are still counted, its receptive field and MACs
# are not computed.
LAYER_KINDS: dict[str, str] = {
    "InputLayer": "input",
    **_kinds("conv", "Conv1D", "Conv2D", "Conv3D"),
    **_kinds("depthwise", "DepthwiseConv1D", "DepthwiseConv2D"),
    **_kinds("separable", "SeparableConv1D", "SeparableConv2D"),
    **_kinds("pool", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
             "AveragePooling2D", "AveragePooling3D"),
    **_kinds("global_pool", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
             "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
             "GlobalMaxPooling3D"),
    "Flatten": "flatten",
    "Reshape": "reshape",
    "Dense": "dense",
    "Embedding": "embedding",
    "TextVectorization": "tokens",
    **_kinds("pad", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
             "Cropping2D", "Cropping3D"),
    # Layer classes and keras.ops classes (x + y on symbolic tensors) share these names.
    **_kinds("merge", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
             "Concatenate", "CustomScaleLayer"),
    **_kinds("elementwise", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
             "BatchNormalization", "LayerNormalization", "GroupNormalization",
             "UnitNormalization", "Rescaling", "Normalization", "LayerScale",
             "StringLookup", "IntegerLookup", "Hashing"),
    **_kinds("identity", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
             "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
             "Identity", "StochasticDepth", "Masking", "RandomFlip", "RandomRotation",
             "RandomZoom", "RandomContrast", "RandomTranslation", "RandomBrightness"),
}

VIEW_KINDS = frozenset({"identity", "flatten", "reshape"})


@dataclass
class Step:
    """One call of one layer, with everything the per-layer columns are computed from.

    Example:
        >>> Step("fc", None, "dense", [(None, 128)], [(None, 10)], ["flatten"]).output_shape
        (10,)
    """

    name: str
    layer: Any
    kind: str
    input_shapes: list[tuple[int | None, ...]]
    output_shapes: list[tuple[int | None, ...]]
    inputs: list[str]
    params: int = 0
    trainable_params: int = 0
    param_bytes: int = 0
    field: Field | None = None
    block: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def output_shape(self) -> tuple[int | None, ...] | tuple[tuple[int | None, ...], ...]:
        """Output shape without the batch axis (a tuple of shapes for several outputs)."""
        shapes = tuple(shape[1:] for shape in self.output_shapes)
        return shapes[0] if len(shapes) == 1 else shapes


@dataclass
class _Tensor:
    spec: Any
    field: Field | None
    producer: str


def kind_of(layer: Any) -> str:
    """The arithmetic kind of a layer: that of its class or of the nearest known base class
    (a subclass of Embedding is an embedding); "unknown" when none is in ``LAYER_KINDS``.

    Example:
        >>> import keras
        >>> kind_of(keras.layers.Conv2D(8, 3)), kind_of(keras.layers.Lambda(lambda x: x))
        ('conv', 'unknown')
    """
    for cls in type(layer).__mro__:
        if cls.__name__ in LAYER_KINDS:
            return LAYER_KINDS[cls.__name__]
    return "unknown"


def walk_model(model: Any, blocks: dict[str, str] | None = None,
               input_size: int | None = None) -> list[Step]:
    """Every layer call of ``model`` in execution order, nested functional models expanded.

    ``blocks`` maps layer names of ``model`` itself to block names (from the backbone table);
    without it, ``model`` and nested backbones are recognised by their parameter count and
    block layer names. ``input_size`` fills the unspecified sides (or sequence length) of the
    inputs.

    Example:
        >>> from tlkit.backbones import build_backbone
        >>> len(walk_model(build_backbone("tiny_cnn", 32)))
        12
    """
    import keras

    graph = functional_graph(model)
    if graph is None:
        raise UserError(f"cannot inspect '{model.name}', a subclassed {type(model).__name__}: "
                        "inspection reads the layer graph; build it as a functional or "
                        "Sequential model")
    input_layers = {id(layer.output): layer for layer in graph.layers
                    if isinstance(layer, keras.layers.InputLayer)}
    steps: list[Step] = []
    inputs = []
    for tensor in graph.inputs:
        layer = input_layers[id(tensor)]
        spec = _sized(tensor, input_size, layer.name)
        field_ = rf.input_field(tuple(spec.shape), str(spec.dtype))
        steps.append(Step(layer.name, layer, "input", [], [tuple(spec.shape)], [],
                          field=field_))
        inputs.append(_Tensor(spec, field_, layer.name))
    blocks = _blocks_of(model) if blocks is None else blocks
    _walk_graph(model, inputs, "", True, blocks, steps, set())
    return steps


def _sized(tensor: Any, input_size: int | None, name: str) -> Any:
    """The input tensor, or a spec of it with its unspecified sides set to ``input_size``."""
    shape = tuple(tensor.shape)
    sides = shape[1:-1] if len(shape) >= 3 else shape[1:]
    if input_size is None or all(side == input_size for side in sides):
        return tensor
    if None not in sides:
        raise UserError(f"input '{name}' is fixed at {'x'.join(map(str, shape[1:]))}; "
                        "an input size applies to backbone names and to models built with "
                        "unspecified sizes")
    import keras

    sized = tuple(input_size if side is None else side for side in shape[1:])
    if len(shape) >= 3:
        sized = (*sized[:-1], shape[-1])
    return keras.KerasTensor((shape[0], *sized), dtype=tensor.dtype)


def _walk_graph(model: Any, inputs: list[_Tensor], prefix: str, trainable: bool,
                blocks: dict[str, str], steps: list[Step], seen: set[int]) -> list[_Tensor]:
    graph = functional_graph(model)
    tensors = {id(t): value for t, value in zip(graph.inputs, inputs, strict=True)}
    calls: dict[int, int] = {}
    for call in layer_calls(graph):
        layer = call.layer
        ins = [tensors[id(t)] for t in call.inputs]
        name = prefix + layer.name
        calls[id(layer)] = calls.get(id(layer), -1) + 1
        if calls[id(layer)]:
            name += f"#{calls[id(layer)]}"
        nested = functional_graph(layer)
        if nested is not None:
            outs = _walk_graph(layer, ins[:len(nested.inputs)], name + "/",
                               trainable and layer.trainable, _blocks_of(layer), steps, seen)
        else:
            specs = _output_specs(call, ins)
            step = _step(layer, name, ins, specs, trainable, seen)
            step.block = blocks.get(layer.name, "")
            steps.append(step)
            outs = [_Tensor(spec, step.field, name) for spec in specs]
        for tensor, value in zip(call.outputs, outs, strict=True):
            tensors[id(tensor)] = value
    return [tensors[id(t)] for t in graph.outputs]


def _step(layer: Any, name: str, ins: list[_Tensor], out_specs: list[Any], trainable: bool,
          seen: set[int]) -> Step:
    kind = kind_of(layer)
    step = Step(name, layer, kind, [tuple(t.spec.shape) for t in ins],
                [tuple(s.shape) for s in out_specs], [t.producer for t in ins])
    # A layer called twice (shared weights) owns its parameters once, at its first call.
    if id(layer) not in seen:
        seen.add(id(layer))
        weights = list(getattr(layer, "weights", []))
        step.params = sum(math.prod(w.shape) for w in weights)
        step.param_bytes = sum(math.prod(w.shape) * _itemsize(w.dtype) for w in weights)
        if trainable and getattr(layer, "trainable", False):
            step.trainable_params = sum(math.prod(w.shape) for w in layer.trainable_weights)
    if kind == "unknown":
        step.notes.append(f"unknown layer type {type(layer).__name__}: "
                          "receptive field and MACs not computed")
    step.field = _field(kind, layer, ins, step)
    if step.field is not None and step.field.context and not any(
            t.field is not None and t.field.context for t in ins):
        step.notes.append("sees the whole input through a global branch (squeeze-excite gate)")
    return step


def _field(kind: str, layer: Any, ins: list[_Tensor], step: Step) -> Field | None:
    fields = [t.field for t in ins]
    if kind == "tokens":
        return rf.token_field()
    if kind == "unknown" or not fields or any(f is None for f in fields):
        return None
    if kind == "merge":
        return rf.join(fields)
    first, in_shape = fields[0], step.input_shapes[0]
    if kind in ("conv", "depthwise", "separable", "pool"):
        return rf.window_of_layer(first, layer, _spatial_sizes(in_shape, layer))
    if kind == "pad":
        return rf.shift(first, rf.padding_before(layer))
    if kind in ("global_pool", "flatten"):
        return rf.collapse(first, _spatial_sizes(in_shape, layer))
    if kind == "reshape":
        # Reshaping a pooled vector (squeeze-excite) keeps it global; reshaping a feature map
        # would move units between positions, which the interval arithmetic cannot follow.
        return None if first.spatial else first
    return first


def _spatial_sizes(shape: tuple[int | None, ...], layer: Any) -> tuple[int | None, ...]:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return tuple(shape[2:])
    return tuple(shape[1:-1])


def _output_specs(call: LayerCall, ins: list[_Tensor]) -> list[Any]:
    """Output specs of a call for the propagated inputs; the graph's own when shapes match."""
    if all(tuple(t.spec.shape) == tuple(x.shape)
           for x, t in zip(call.inputs, ins, strict=True)):
        return list(call.outputs)
    return call.output_specs([t.spec for t in ins])


def _itemsize(dtype: Any) -> int:
    import numpy as np

    return np.dtype(str(dtype).replace("bfloat16", "float16")).itemsize


def _blocks_of(model: Any) -> dict[str, str]:
    """Block names of a nested backbone, if it is one of the table's (same params and blocks)."""
    from tlkit.backbones import BACKBONES

    names = {layer.name for layer in model.layers}
    params = model.count_params()
    for row in BACKBONES.values():
        boundaries = {b.removeprefix("after:") for b in row.blocks}
        if row.params == params and boundaries <= names:
            return block_names(model, row)
    return {}


def block_names(model: Any, row: Any) -> dict[str, str]:
    """Layer name -> name of the block it belongs to ("stem", then each block's first layer).

    Example:
        >>> from tlkit.backbones import build_backbone, get_backbone
        >>> names = block_names(build_backbone("tiny_cnn", 32), get_backbone("tiny_cnn"))
        >>> names["block1_pool"], names["block2_bn"]
        ('stem', 'block2_conv')
    """
    from tlkit.backbones import block_of_layers

    return {layer: row.block_names[index] for layer, index in block_of_layers(model, row).items()}


@contextmanager
def shapes_only() -> Iterator[None]:
    """Build Keras models inside without allocating their weights: inspection needs shapes only.

    The variables are left unallocated (``tlkit.keras_internals.variables_left_unallocated``):
    VGG16 builds in milliseconds instead of seconds and 2 GB. Models built here cannot run.

    Example:
        >>> from tlkit.backbones import build_backbone
        >>> with shapes_only():
        ...     model = build_backbone("vgg16", 224)
        >>> model.count_params()
        14714688
    """
    with variables_left_unallocated():
        yield


@dataclass(frozen=True)
class ConvArithmetic:
    """One convolution layer by the lecture formulas (shapes are height x width x depth).

    Example:
        >>> ConvArithmetic((32, 32, 10), weights=750, biases=10, units=10240, macs=768000).params
        760
    """

    output_shape: tuple[int, int, int]
    weights: int
    biases: int
    units: int
    macs: int

    @property
    def params(self) -> int:
        """Weights plus biases: F*F*D*K + K."""
        return self.weights + self.biases


def conv_arithmetic(input_shape: tuple[int, ...], filters: int, kernel: int | tuple[int, int],
                    stride: int = 1, pad: int = 0, bias: bool = True) -> ConvArithmetic:
    """Output size ``(W - F + 2P) / S + 1`` and parameters ``F*F*D*K + K`` of one conv layer.

    ``input_shape`` is ``(H, W)`` or ``(H, W, D)`` (depth 1 if left out). A stride that does not
    fit the padded input exactly is a UserError naming the strides that would.

    Example:
        >>> layer = conv_arithmetic((32, 32, 3), filters=10, kernel=5, stride=1, pad=2)
        >>> layer.output_shape, layer.params
        ((32, 32, 10), 760)
    """
    if len(input_shape) not in (2, 3) or min(input_shape) < 1:
        raise UserError(f"input shape {input_shape} should be HxW or HxWxD with positive sides")
    height, width, depth = (*input_shape, 1)[:3]
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if filters < 1 or min(kh, kw) < 1 or stride < 1 or pad < 0:
        raise UserError("filters, kernel and stride must be at least 1 and pad at least 0; got "
                        f"filters={filters}, kernel={kernel}, stride={stride}, pad={pad}")
    sides = []
    for side, k, label in ((height, kh, "height"), (width, kw, "width")):
        span = side - k + 2 * pad
        if span < 0:
            raise UserError(f"a {k}-wide filter does not fit the {label} {side} padded by {pad}; "
                            f"use pad {math.ceil((k - side) / 2)} or more")
        if span % stride:
            fits = [s for s in range(1, span + 1) if span % s == 0]
            raise UserError(f"stride {stride} does not fit the {label}: ({side} - {k} + 2*{pad}) "
                            f"/ {stride} + 1 = {span / stride + 1:.2f} is not a whole number; "
                            f"strides that fit: {', '.join(map(str, fits))}")
        sides.append(span // stride + 1)
    output_shape = (sides[0], sides[1], filters)
    weights = kh * kw * depth * filters
    units = math.prod(output_shape)
    return ConvArithmetic(output_shape, weights, filters if bias else 0, units,
                          units * kh * kw * depth)
