"""Activation memory, multiply-accumulates, and the training memory behind batch plans.

Conventions (the lecture's, and the usual published FLOP counts'): an activation is one value
of a tensor a layer creates, per image; views (Flatten, Reshape, Dropout at inference) create
none. MACs count the multiply-accumulates of weight layers (convolutions and dense layers);
pooling, normalisation, activations and additions are left out, as in the 15.5 G quoted for
VGG16. FLOPs are 2 x MACs.

Training memory is that of the process a user starts, ``tlkit finetune``: training, the data
pipeline, validation and test evaluation. It is estimated from the layer table as

    runtime + model state + batch x per image (+ for a head stage: a share of one region)

where the runtime is TensorFlow, Keras and the traced functions, the model state is the
weights plus the gradients and optimizer slots of those that train (slots from
``tlkit.optimizers.OPTIMIZERS``, the table the trainer builds its optimizers from), and per
image come the activations the allocator holds (what a training step keeps, or a forward
pass's peak) and the decoded images in the data pipeline. A head stage runs the frozen
backbone forward only, and its largest buffer needs an allocator region of its own
(``region_bytes``). The constants below were fitted on measurements of ``tlkit finetune``
(``benchmarks/plan_check.py``, ``benchmarks/results/plan_check_calibration.csv``);
docs/inspection.md shows them and the check.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from tlkit.errors import UserError
from tlkit.inspection.layers import VIEW_KINDS, Step
from tlkit.optimizers import OPTIMIZERS

DTYPE_BYTES: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def dtype_bytes(dtype: str) -> int:
    """Bytes per value of an activation dtype, or a UserError listing the known ones.

    Example:
        >>> dtype_bytes("bfloat16")
        2
    """
    if dtype not in DTYPE_BYTES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def activations(step: Step) -> int | None:
    """Values a layer call creates per image: its output size, 0 for views, None if unknown.

    Example:
        >>> activations(Step("conv", None, "conv", [(None, 8, 8, 3)], [(None, 8, 8, 16)], []))
        1024
    """
    if step.kind in VIEW_KINDS:
        return 0
    sizes = [_per_image(shape) for shape in step.output_shapes]
    return None if None in sizes else sum(sizes)


def macs(step: Step) -> int | None:
    """Multiply-accumulates of a layer call per image; None for unknown layers or sizes.

    Example:
        >>> from tlkit.backbones import build_backbone
        >>> from tlkit.inspection.layers import walk_model
        >>> conv = walk_model(build_backbone("tiny_cnn", 32))[1]
        >>> conv.name, macs(conv)  # 32*32*8 outputs, each 3*3*3 taps
        ('block1_conv', 221184)
    """
    if step.kind == "unknown":
        return None
    if step.kind not in ("conv", "depthwise", "separable", "dense"):
        return 0
    out = _per_image(step.output_shapes[0])
    in_shape = step.input_shapes[0]
    if out is None:
        return None
    layer = step.layer
    if step.kind == "dense":
        return out * in_shape[-1]
    channels_first = getattr(layer, "data_format", "") == "channels_first"
    in_channels = in_shape[1] if channels_first else in_shape[-1]
    taps = math.prod(layer.kernel_size)
    if step.kind == "conv":
        return out * taps * in_channels // layer.groups
    if step.kind == "depthwise":
        return out * taps
    # Separable: a depthwise pass producing in_channels * depth_multiplier maps, then 1x1.
    positions = out // layer.filters
    middle = in_channels * layer.depth_multiplier
    return positions * middle * taps + positions * middle * layer.filters


def _per_image(shape: tuple[int | None, ...]) -> int | None:
    dims = shape[1:]
    return None if None in dims else math.prod(dims)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20,
          "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}


def parse_memory(text: str) -> int:
    """Bytes in a memory string: ``8GB``, ``1.5G`` (powers of 1000), ``512MiB`` (of 1024).

    Example:
        >>> parse_memory("512MiB"), parse_memory("1.5G")
        (536870912, 1500000000)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise UserError(f"cannot read memory size '{text}'; write a positive number and a unit, "
                        "e.g. 8GB, 1.5G (powers of 1000) or 512MiB (powers of 1024)")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(count: float) -> str:
    """Bytes in decimal units.

    Example:
        >>> format_bytes(60_949_432)
        '60.95 MB'
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"


# Fitted on measurements of `tlkit finetune` (docs/inspection.md). Full training: VGG16 and
# ResNet50; the head stage: VGG16, ResNet50, EfficientNet-Lite0 and MobileNetV2.
RUNTIME = 1_125_000_000  # TensorFlow, Keras, tlkit, the traced steps, the run's bookkeeping
RUNTIME_PER_TRAINED_LAYER = 3_000_000  # its share of the traced backward pass and update
# A head stage traces forward passes only (the feature model's and the classifier's) and
# trains a small head on cached features: less runtime, and a share per layer of the graphs.
HEAD_RUNTIME = 875_000_000
HEAD_RUNTIME_PER_LAYER = 1_000_000
ACTIVATION_FACTOR = 1.3  # buffers in use -> what the allocator holds for them
PIPELINE_IMAGES = 4  # decoded images per batch image in tf.data and Keras's hands
# The share of the largest buffer's region that stays resident besides: the regions it
# outgrew (see TrainingMemory.at).
REGION_SHARE = 0.3
# TensorFlow's allocator grows by regions of 2 MiB, 4 MiB, 8 MiB, ... and keeps them.
FIRST_REGION = 2 << 20
STAGES = ("full", "head")


def kept_activations(table: Any, batchnorm: str = "frozen") -> int:
    """Bytes per image that full training keeps from the forward pass for the backward pass.

    The backward pass needs what the forward pass wrote, so every buffer (``buffers``) is
    kept. A BatchNorm that trains writes a buffer of its own: its gradient needs its input.

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> table = inspect_model("tiny_cnn")  # 3 BatchNorms of 32 kB, 16 kB and 8 kB per image
        >>> kept_activations(table, "trainable"), kept_activations(table, "frozen")
        (139264, 81920)
    """
    sizes = dict(zip(table.index, _buffer_sizes(table), strict=True))
    return sum(sizes[name] for name in set(buffers(table, batchnorm).values()))


def live_buffers(table: Any) -> list[tuple[int, ...]]:
    """Per layer of a forward pass that keeps nothing: bytes per image of the live buffers.

    A buffer (``buffers``) lives from the layer that writes it to the last layer that reads
    it, so branches that wait to be joined count.

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> max(live_buffers(inspect_model("vgg16")), key=sum)  # block1_conv2 reads conv1's
        (12845056, 12845056)
    """
    sizes = dict(zip(table.index, _buffer_sizes(table), strict=True))
    owner = buffers(table, "frozen")
    last_read = {owner[name]: i for i, row in enumerate(table.itertuples())
                 for name in row.inputs}
    live: dict[str, int] = {}
    alive = []
    for i, row in enumerate(table.itertuples()):
        live.setdefault(owner[row.Index], sizes[row.Index])
        alive.append(tuple(live.values()))
        for name in row.inputs:
            if last_read[owner[name]] == i:
                live.pop(owner[name], None)
    return alive


def region_bytes(size: int) -> int:
    """What TensorFlow's allocator holds to serve ``size`` bytes at once: a power of two.

    Its regions double in size and are never given back, so serving a peak takes the next
    power of two (times the first region's 2 MiB); below 2 MiB, the size itself.

    Example:
        >>> region_bytes(600 << 20) >> 20  # 600 MiB at once: the allocator grows to 1 GiB
        1024
    """
    if size <= FIRST_REGION:
        return size
    return FIRST_REGION << math.ceil(math.log2(size / FIRST_REGION))


# Activations whose gradient TensorFlow computes from their output: they can write over
# their input. The others (swish, gelu, ...) need the input.
_OUTPUT_GRADIENT = frozenset({"relu", "relu6", "elu", "selu", "sigmoid", "tanh", "softmax",
                              "linear"})
_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "ELU", "Softmax"})


def buffers(table: Any, batchnorm: str = "frozen") -> dict[str, str]:
    """Row -> the row whose buffer its output lives in: its own, or its input's.

    A view (Flatten, Dropout at inference) shares its input's buffer. So does a layer that
    writes over an input nothing else reads and that its backward pass does not need, as
    TensorFlow does: a frozen BatchNorm, an addition, an activation whose gradient is
    computed from its output (ReLU).

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> owner = buffers(inspect_model("tiny_cnn"))
        >>> owner["block1_relu"], owner["block1_pool"]
        ('block1_conv', 'block1_pool')
    """
    readers = _readers(table)
    owner: dict[str, str] = {}
    for row in table.itertuples():
        donors = list(row.inputs[:1]) if row.kind in VIEW_KINDS else [
            name for name in row.inputs if _overwrites_input(row, batchnorm)
            and len(readers[name]) == len(readers[owner[name]]) == 1]
        owner[row.Index] = owner[donors[0]] if donors else row.Index
    return owner


def _overwrites_input(row: Any, batchnorm: str) -> bool:
    if row.type == "BatchNormalization":
        return batchnorm != "trainable"
    if row.type in _ACTIVATION_LAYERS:
        return row.activation in _OUTPUT_GRADIENT
    return row.type in ("Add", "Subtract")


def _buffer_sizes(table: Any) -> list[int]:
    """Bytes per image of each row's output; a UserError when one is unknown."""
    missing = table.index[table["activation_bytes"].isna()]
    if len(missing):
        raise UserError(f"cannot plan memory: the output size of '{missing[0]}' is unknown; "
                        "give an input size (--input-size)")
    return [int(size) for size in table["activation_bytes"]]


def _readers(table: Any) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {name: [] for name in table.index}
    for row in table.itertuples():
        for name in row.inputs:
            readers[name].append(row.Index)
    return readers


@dataclass(frozen=True)
class TrainingMemory:
    """Peak resident bytes of ``tlkit finetune`` at a batch: ``at(batch)``.

    ``fixed`` plus, per image, the ``activations`` and the ``pipeline``'s decoded images.
    A head stage adds a share of the allocator region that its ``largest_buffer`` (bytes
    per image of the forward pass's largest tensor) needs: a tensor never spans two
    regions, regions double (``region_bytes``), and the smaller regions the allocator
    outgrew on the way stay resident.

    Example:
        >>> memory = TrainingMemory("full", "adam", "frozen", runtime=700, weights=100,
        ...                         gradients=50, optimizer_state=100, activations=8,
        ...                         pipeline=2)
        >>> memory.fixed, memory.per_image, memory.at(32)
        (950, 10, 1270)
    """

    stage: str
    optimizer: str
    batchnorm: str
    runtime: int
    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    pipeline: int
    largest_buffer: int = 0

    @property
    def fixed(self) -> int:
        """The runtime, the weights, and the gradients and slots of the trained ones."""
        return self.runtime + self.weights + self.gradients + self.optimizer_state

    @property
    def per_image(self) -> int:
        """Activations and pipeline per image, before the allocator's rounding."""
        return self.activations + self.pipeline

    def at(self, batch: int) -> int:
        """Estimated peak resident bytes at ``batch`` images."""
        regions = 0
        if self.stage == "head":
            regions = math.ceil(REGION_SHARE * region_bytes(batch * self.largest_buffer))
        return self.fixed + batch * self.per_image + regions


def training_memory(table: Any, stage: str = "full", optimizer: str = "adam",
                    batchnorm: str = "frozen") -> TrainingMemory:
    """Memory of ``tlkit finetune`` training the inspected model, for ``stage`` full or head.

    "full" trains every layer with weights (the schedule ``full``), BatchNorm's gamma and
    beta only when ``batchnorm`` is "trainable", and keeps ``kept_activations``; "head"
    trains the head rows (the schedule ``feature-extraction``) on cached features and runs
    the backbone forward only, whose peak is the most ``live_buffers`` hold at once. Either
    way the allocator holds ``ACTIVATION_FACTOR`` times the buffers in use. ``optimizer``
    names a row of ``tlkit.optimizers.OPTIMIZERS``, the table the trainer builds its
    optimizer from.

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> memory = training_memory(inspect_model("tiny_cnn"), "full", "sgd")
        >>> memory.gradients, memory.optimizer_state  # 5,976 float32s, one velocity each
        (23904, 23904)
    """
    if stage not in STAGES:
        raise UserError(f"unknown stage '{stage}'; choose one of: {', '.join(STAGES)}")
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer '{optimizer}'; choose one of: "
                        f"{', '.join(OPTIMIZERS)}")
    trained = [_trained_bytes(row, stage, batchnorm) for row in table.itertuples()]
    if stage == "full":
        runtime = RUNTIME + RUNTIME_PER_TRAINED_LAYER * sum(map(bool, trained))
        in_use, largest = kept_activations(table, batchnorm), 0
    else:
        runtime = HEAD_RUNTIME + HEAD_RUNTIME_PER_LAYER * len(table)
        in_use, largest = max(map(sum, live_buffers(table))), max(_buffer_sizes(table))
    inputs = int(table.loc[table["kind"] == "input", "activation_bytes"].sum())
    return TrainingMemory(stage, optimizer, batchnorm, runtime,
                          int(table["param_bytes"].sum()), sum(trained),
                          OPTIMIZERS[optimizer].slots * sum(trained),
                          math.ceil(ACTIVATION_FACTOR * in_use), PIPELINE_IMAGES * inputs,
                          largest)


def _trained_bytes(row: Any, stage: str, batchnorm: str) -> int:
    """Bytes of a row's weights that train in ``stage``."""
    if not row.params or not (stage == "full" or row.head):
        return 0
    if row.type == "BatchNormalization":
        # gamma and beta train; the moving mean and variance are updated, not trained.
        return int(row.param_bytes) // 2 if batchnorm == "trainable" else 0
    return int(row.param_bytes)


@dataclass(frozen=True)
class BatchPlan:
    """The largest batch whose estimate fits in ``budget`` bytes (0: none fits).

    Example:
        >>> memory = TrainingMemory("full", "adam", "frozen", runtime=700, weights=100,
        ...                         gradients=50, optimizer_state=100, activations=8, pipeline=2)
        >>> BatchPlan(budget=1300, batch=35, memory=memory).estimate
        1300
    """

    budget: int
    batch: int
    memory: TrainingMemory

    @property
    def estimate(self) -> int:
        """Estimated peak resident bytes at the planned batch."""
        return self.memory.at(self.batch)


def plan_batch(table: Any, budget: int | str, stage: str = "full", optimizer: str = "adam",
               batchnorm: str = "frozen") -> BatchPlan:
    """The largest batch that trains within ``budget`` (bytes, or a string such as "8GB").

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> plan = plan_batch(inspect_model("tiny_cnn"), "2GB", "head")
        >>> plan.batch > 1000, plan.estimate <= plan.budget < plan.memory.at(plan.batch + 1)
        (True, True)
    """
    budget = parse_memory(budget) if isinstance(budget, str) else int(budget)
    memory = training_memory(table, stage, optimizer, batchnorm)
    # at(batch) grows with the batch and is at least fixed + batch * per_image: bisect below
    # the batch that bound rules out.
    fits, too_big = 0, max(0, (budget - memory.fixed) // memory.per_image) + 1
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        fits, too_big = (middle, too_big) if memory.at(middle) <= budget else (fits, middle)
    return BatchPlan(budget, fits, memory)
