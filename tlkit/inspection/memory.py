"""Activation memory, multiply-accumulates, training memory and batch planning.

Conventions (the lecture's, and the usual published FLOP counts'): an activation is one value
of a tensor a layer creates, per image; views (Flatten, Reshape, Dropout at inference) create
none. MACs count the multiply-accumulates of weight layers (convolutions and dense layers);
pooling, normalisation, activations and additions are left out, as in the 15.5 G quoted for
VGG16. FLOPs are 2 x MACs.

Training memory is estimated, not measured: a step is played layer by layer over the table as
the allocations and frees of its tensors (``step_events``), which gives the bytes in use at
its peak; the same allocations replayed through TensorFlow's allocator (``allocator``) give
what the process holds. Two allowances fitted on this project's benchmark
(``benchmarks/plan_check.py``), for the runtime outside the allocator and for the executor's
allocation order, cover what the arithmetic cannot see.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from tlkit.errors import UserError
from tlkit.inspection.allocator import BFCReplay
from tlkit.inspection.layers import VIEW_KINDS, Step

DTYPE_BYTES: dict[str, int] = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def dtype_bytes(dtype: str) -> int:
    """Bytes per value of an activation dtype, or a UserError listing the known ones."""
    if dtype not in DTYPE_BYTES:
        raise UserError(f"unknown dtype '{dtype}'; choose one of: {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def activations(step: Step) -> int | None:
    """Values a layer call creates per image: its output size, 0 for views, None if unknown."""
    if step.kind in VIEW_KINDS:
        return 0
    sizes = [_per_image(shape) for shape in step.output_shapes]
    return None if None in sizes else sum(sizes)


def macs(step: Step) -> int | None:
    """Multiply-accumulates of a layer call per image; None for unknown layers or sizes."""
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
    """Bytes in decimal units, e.g. ``60.95 MB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count:.0f} B"



# Outside the allocator: TensorFlow's traced step, kernels' state and small tensors (oneDNN's
# allocator leaves those under 256 KiB to malloc), and the Python side. Fitted on the CPU
# runs of benchmarks/plan_check.py (VGG16 and ResNet50, both stages): 200 MB, plus 1 MB per
# layer call and pass (forward; backward).
RUNTIME_BASE = 200_000_000
RUNTIME_PER_LAYER_PASS = 1_000_000
# TensorFlow's executor does not allocate in exactly the layer order the replay plays, and
# identical runs differ: VGG16 full fine-tuning at batch 83 peaked at 6.2 GB in one run and
# 6.9 GB in the next. The replayed footprint gets this margin on top.
ORDER_MARGIN = 0.05

# Optimizer slots: values kept per trainable parameter besides the parameter and its gradient.
OPTIMIZER_SLOTS: dict[str, int] = {"sgd": 0, "momentum": 1, "rmsprop": 1, "adam": 2, "adamw": 2}

# Activations whose gradient is computed from the layer's output (TensorFlow's registered
# gradients); the others (swish, gelu, ...) need their input.
_OUTPUT_GRADIENT = frozenset({"relu", "relu6", "elu", "selu", "sigmoid", "tanh", "softmax",
                              "linear", ""})
_NORMALISATION = frozenset({"BatchNormalization", "LayerNormalization", "GroupNormalization",
                            "UnitNormalization"})
_DROPOUT = frozenset({"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                      "GaussianDropout", "AlphaDropout"})
_ACTIVATION_LAYERS = {"Activation": "linear", "ReLU": "relu", "LeakyReLU": "leaky_relu",
                      "ELU": "elu", "Softmax": "softmax", "PReLU": "prelu"}
_WEIGHT_KINDS = frozenset({"conv", "depthwise", "separable", "dense"})
_IN_PLACE = frozenset({"Activation", "ReLU", "LeakyReLU", "ELU", "BatchNormalization",
                       "Rescaling", "Normalization", "LayerScale", "Add", "Subtract",
                       "Multiply", "Maximum", "Minimum", "Average"})


def _trains(row: Any, stage: str) -> bool:
    """Does this layer's weights train in ``stage``? BatchNorm stays frozen (tlkit's policy)."""
    if not row.params or row.type == "BatchNormalization":
        return False
    return stage == "full" or bool(row.head)


def _saved(row: Any, trains: bool) -> tuple[bool, bool, bool]:
    """What a layer's backward pass needs from its forward pass: (inputs, output, extra).

    ``extra`` is one more tensor of the output's size (a dropout mask, the sigmoid inside
    swish; for max pooling, oneDNN's workspace of a byte per output value). Derived from
    TensorFlow's registered gradients: a convolution needs its input for the kernel
    gradient, ReLU its output, max pooling both, an addition nothing.
    """
    kind, name = row.kind, row.type
    function = row.activation
    if kind in _WEIGHT_KINDS:
        nonlinear = function not in ("linear", "")
        return trains, nonlinear and function in _OUTPUT_GRADIENT, nonlinear and (
            function not in _OUTPUT_GRADIENT)
    if name in _NORMALISATION:
        return trains or name != "BatchNormalization", False, False
    if name in _ACTIVATION_LAYERS:
        function = function or _ACTIVATION_LAYERS[name]
        outputs = function in _OUTPUT_GRADIENT
        return not outputs, outputs, function not in _OUTPUT_GRADIENT | {"leaky_relu"}
    if name == "LayerScale":
        return trains, False, False
    if kind == "pool" or (kind == "global_pool" and "Max" in name):
        # oneDNN's max pooling also keeps a workspace: a byte per output value (the extra).
        return True, kind == "pool", kind == "pool" and "Max" in name
    if kind == "merge":
        return name in ("Multiply", "Maximum", "Minimum"), False, False
    if name in _DROPOUT:
        return False, False, True
    if kind == "unknown":
        return True, True, False
    return False, False, False


def activation_peak(table: Any, stage: str | None = "full") -> int:
    """Peak bytes of activations and their gradients per image during one step.

    ``stage`` is "full" (every layer trains, BatchNorm frozen), "head" (only the head
    trains: the backbone runs forward once, keeping nothing for a backward pass) or None
    (inference); ``step_events`` says how the step is played.

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> activation_peak(inspect_model("vgg16"), "head") / 1e6  # doctest: +ELLIPSIS
        26.29...
    """
    return _peak_per_image(step_events(table, stage))


def _peak_per_image(events: list[Event]) -> int:
    live: dict[Hashable, int] = {}
    peak = 0
    for allocate, key, per_image, _ in events:
        if allocate:
            live[key] = per_image
            peak = max(peak, sum(live.values()))
        else:
            live.pop(key)
    return peak


# One allocation or free of a training step: (allocate?, key, bytes per image, fixed bytes).
Event = tuple[bool, Hashable, int, int]


def step_events(table: Any, stage: str | None = "full") -> list[Event]:
    """One step, played layer by layer, as the allocations and frees of its tensors.

    Forward: a layer allocates its output (views share their input's), then frees the
    inputs nobody reads any more and no backward step needs (``_saved``). Backward, in
    reverse: a layer allocates the gradients of its inputs and, when it trains, of its
    weights, then frees its own output's gradient and the tensors only it kept. A tensor
    read by several layers (a residual branch) gets its gradient summed: the second
    contribution exists next to the first until they are added. Weight gradients live until
    the optimizer has applied them. Weight layers compute through a copy of their weights
    in oneDNN's layout, forward and backward. The input batch lives through the step.
    """
    rows = list(table.itertuples())
    missing = [row.Index for row in rows if _is_missing(row.activation_bytes)]
    if missing:
        raise UserError(f"cannot plan memory: the output size of '{missing[0]}' is unknown; "
                        "give an input size (--input-size)")
    count = len(rows)
    index = {row.Index: i for i, row in enumerate(rows)}
    size = [int(row.activation_bytes) for row in rows]
    parents = [[index[name] for name in row.inputs] for row in rows]
    readers: list[list[int]] = [[] for _ in rows]
    for i in range(count):
        for p in parents[i]:
            readers[p].append(i)
    owner = list(range(count))
    for i, row in enumerate(rows):
        # oneDNN folds zero padding into the convolution that reads it: no tensor is made.
        folded = row.kind == "pad" and readers[i] and all(
            rows[j].kind == "conv" for j in readers[i])
        if (row.kind in VIEW_KINDS or folded) and parents[i]:
            owner[i] = owner[parents[i][0]]
    trains = [stage is not None and _trains(row, stage) for row in rows]
    on_path: list[bool] = []
    for i in range(count):
        on_path.append(trains[i] or any(on_path[p] for p in parents[i]))

    # keepers[b]: the backward steps that need buffer b; ("extra", i) is row i's extra.
    keepers: dict[Hashable, list[int]] = {}
    for i, row in enumerate(rows):
        if not on_path[i]:
            continue
        inputs, output, extra = _saved(row, trains[i])
        saved: set[Hashable] = {owner[p] for p in parents[i]} if inputs else set()
        saved |= {owner[i]} if output else set()
        saved |= {("extra", i)} if extra else set()
        for b in saved:
            keepers.setdefault(b, []).append(i)
    last_read = {owner[i]: i for i in range(count)}
    for i in range(count):
        for p in parents[i]:
            last_read[owner[p]] = max(last_read[owner[p]], i)

    # The input batch is the caller's: it lives through the step.
    for i, row in enumerate(rows):
        if row.kind == "input":
            keepers.setdefault(i, []).append(-1)
    events: list[Event] = []
    live: set[Hashable] = set()
    # An elementwise layer writes into its input's buffer when nothing else reads it later
    # (TensorFlow forwards the buffer): the output then lives in the input's allocation.
    allocation: dict[Hashable, Hashable] = {}

    def allocate(key: Hashable, per_image: int, fixed: int = 0) -> None:
        events.append((True, key, per_image, fixed))
        live.add(key)

    def free(key: Hashable) -> None:
        key = allocation.pop(key, key)
        if key in live:
            events.append((False, key, 0, 0))
            live.discard(key)

    for i, row in enumerate(rows):
        dying = {owner[p] for p in parents[i] if last_read[owner[p]] == i
                 and owner[p] not in keepers}
        donor = next((b for b in sorted(dying) if size[b] == size[i]), None)
        if owner[i] == i and donor is not None and row.type in _IN_PLACE:
            allocation[i] = allocation.pop(donor, donor)
            dying.discard(donor)
        elif owner[i] == i:
            allocate(i, size[i])
        if ("extra", i) in keepers:
            allocate(("extra", i), int(row.activations) if row.kind == "pool" else size[i])
        if row.kind in _WEIGHT_KINDS:
            # oneDNN copies the weights into its own layout before computing with them.
            allocate(("weights copy", i), 0, int(row.param_bytes))
            free(("weights copy", i))
        for b in dying:
            free(b)

    gradients: set[int] = set()
    for i in range(count):
        if owner[i] == i and on_path[i] and last_read[i] == i:
            allocate(("gradient", i), size[i])
            gradients.add(i)
    for i in reversed(range(count)):
        if not on_path[i] or owner[i] != i:
            continue
        summands = []
        for b in {owner[p] for p in parents[i] if on_path[p]}:
            if b in gradients:
                allocate(("summand", b), size[b])
                summands.append(("summand", b))
            else:
                allocate(("gradient", b), size[b])
                gradients.add(b)
        if rows[i].kind in _WEIGHT_KINDS:
            # The weights' working copy; the gradient through the activation is computed in
            # place, in the buffer of the output's gradient.
            allocate(("working", i), 0, int(rows[i].param_bytes))
            free(("working", i))
        for key in summands:
            free(key)
        if trains[i]:
            allocate(("weight gradient", i), 0, int(rows[i].param_bytes))
        free(("gradient", i))
        gradients.discard(i)
        for b, users in keepers.items():
            if min(users) == i:
                free(b)
    # The optimizer applies the weight gradients once everything else is gone.
    for key in sorted(live, key=lambda key: isinstance(key, tuple) and key[0] == "weight gradient"):
        free(key)
    return events


def _is_missing(value: Any) -> bool:
    return value is None or value != value or str(value) == "<NA>"


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes one training step needs: in use at its peak, and held by the process.

    ``in_use(batch)`` counts the tensors alive at the step's peak: the weights, the gradients
    and optimizer slots of the trained ones, and ``per_image`` bytes of activations and their
    gradients per image. ``at(batch)`` is what the process holds: the same allocations
    replayed through TensorFlow's allocator (``BFCReplay``) with ``ORDER_MARGIN``, plus the
    runtime's share and the data pipeline's copies of the batch, which live outside it.

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> memory = training_memory(inspect_model("vgg16", classes=10), "head")
        >>> round(memory.at(40) / 1e9, 2), round(memory.at(44) / 1e9, 2)  # 1 GiB regions at 44
        (1.6, 2.58)
    """

    stage: str
    optimizer: str
    weights: int
    gradients: int
    optimizer_state: int
    runtime: int
    per_image: int
    loader_per_image: int = 0
    variables: tuple[int, ...] = field(default=(), repr=False)
    slots: tuple[int, ...] = field(default=(), repr=False)
    events: tuple[Event, ...] = field(default=(), repr=False)

    @property
    def fixed(self) -> int:
        """Weights, their gradients, optimizer state and the framework's own share."""
        return self.weights + self.gradients + self.optimizer_state + self.runtime

    def in_use(self, batch: int) -> int:
        """Bytes of tensors alive at the peak of a step at ``batch`` images."""
        return self.weights + self.gradients + self.optimizer_state + batch * self.per_image

    def at(self, batch: int) -> int:
        """Estimated peak resident bytes of training at ``batch`` images."""
        resident = self.replay(batch).resident * (1 + ORDER_MARGIN)
        return math.ceil(resident) + self.runtime + batch * self.loader_per_image

    def replay(self, batch: int) -> BFCReplay:
        """Two training steps at ``batch`` images played through TensorFlow's allocator."""
        replay = BFCReplay()
        for n, size in enumerate(self.variables):
            # Keras draws a variable's initial value through two temporaries of its size.
            replay.allocate(("initial value", 0), size)
            replay.allocate(("initial value", 1), size)
            replay.allocate(("variable", n), size)
            replay.free(("initial value", 1))
            replay.free(("initial value", 0))
        # Two steps: the second starts from the regions the first left behind. Keras creates
        # the optimizer's slots when it first applies gradients, in the middle of step one.
        slots = list(enumerate(self.slots))
        for _ in range(2):
            for allocate, key, per_image, fixed in self.events:
                if allocate:
                    replay.allocate(key, batch * per_image + fixed)
                    continue
                if isinstance(key, tuple) and key[0] == "weight gradient":
                    for n, size in slots:
                        replay.allocate(("slot", n), size)
                    slots = []
                replay.free(key)
        return replay


def training_memory(table: Any, stage: str = "full", optimizer: str = "adam") -> TrainingMemory:
    """Memory of one training step of the inspected model, for ``stage`` "full" or "head".

    "full" trains every layer with weights except BatchNorm (tlkit keeps it frozen); "head"
    trains only the head rows and runs the rest forward without keeping activations.
    Per image: the peak of activations and gradients over the step (``step_events``).
    Fixed: all weights, gradients and optimizer slots (``OPTIMIZER_SLOTS``) of the trained
    weights, and the runtime's share (``RUNTIME_PER_LAYER_PASS``).

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> memory = training_memory(inspect_model("tiny_cnn"), "full", "sgd")
        >>> memory.gradients, memory.optimizer_state  # the convolutions' 5,976 float32s
        (23904, 0)
    """
    if stage not in ("full", "head"):
        raise UserError(f"unknown stage '{stage}'; choose full or head")
    if optimizer not in OPTIMIZER_SLOTS:
        raise UserError(f"unknown optimizer '{optimizer}'; choose one of: "
                        f"{', '.join(OPTIMIZER_SLOTS)}")
    rows = list(table.itertuples())
    trained = [int(row.param_bytes) for row in rows if _trains(row, stage)]
    # Layers a backward pass runs through: those with trained weights and everything after.
    backward = 0
    reached: set[str] = set()
    for row in rows:
        if _trains(row, stage) or any(name in reached for name in row.inputs):
            reached.add(row.Index)
            backward += 1
    events = step_events(table, stage)
    variables = [int(row.param_bytes) for row in rows if row.params]
    # Outside the allocator, the data pipeline holds two more copies of the input batch: the
    # caller's (or the prefetched next batch) and the one handed to TensorFlow.
    inputs = 2 * sum(int(row.activation_bytes) for row in rows if row.kind == "input")
    slots = OPTIMIZER_SLOTS[optimizer]
    return TrainingMemory(stage, optimizer, sum(variables), sum(trained), slots * sum(trained),
                          RUNTIME_BASE + RUNTIME_PER_LAYER_PASS * (len(rows) + backward),
                          _peak_per_image(events),
                          inputs, tuple(variables), tuple(trained * slots), tuple(events))


@dataclass(frozen=True)
class BatchPlan:
    """The largest batch whose estimated step fits in ``budget`` bytes (0: none fits)."""

    budget: int
    batch: int
    memory: TrainingMemory
    estimate: int  # estimated peak resident bytes at the planned batch


def plan_batch(table: Any, budget: int | str, stage: str = "full",
               optimizer: str = "adam") -> BatchPlan:
    """The largest batch that trains within ``budget`` (bytes, or a string such as "8GB").

    Example:
        >>> from tlkit.inspection import inspect_model
        >>> plan_batch(inspect_model("tiny_cnn"), "1GB", "head").batch > 1000
        True
    """
    budget = parse_memory(budget) if isinstance(budget, str) else int(budget)
    memory = training_memory(table, stage, optimizer)
    # The tensors in use bound the batch from above; the allocator's regions decide within.
    # Its footprint is not monotone in the batch (a region that doubles at batch 44 may be
    # shared better at 48), so this finds a batch that fits whose next one does not.
    fits, too_big = 0, max(0, (budget - memory.fixed) // memory.per_image) + 1
    estimate = memory.at(0)
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        at_middle = memory.at(middle)
        if at_middle <= budget:
            fits, estimate = middle, at_middle
        else:
            too_big = middle
    return BatchPlan(budget, fits, memory, estimate)
