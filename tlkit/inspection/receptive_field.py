"""Receptive fields: which part of the input one unit of a layer can see.

A ``Field`` describes unit 0 of a tensor along each spatial axis (pixels for images, tokens
for text) as the interval ``[lo, hi)`` of the zero-padded input it depends on, in input
coordinates where the input spans ``[0, W)`` and pixel ``i`` covers ``[i, i + 1)``; unit ``n``
covers the same interval shifted by ``n * jump``. Each layer type moves it by the lecture
rules: a window of ``k`` taps (dilation ``d``, stride ``s``, ``p`` zeros padded before) grows
the size by ``(k - 1) * d * jump``, multiplies the jump by ``s`` and shifts the start by
``-p * jump``.

Where paths join (Add, Concatenate, Multiply, ...) the field is the largest over all paths
into the join, axis by axis. A path that went through global pooling (a squeeze-excite gate)
is not spatial any more: it sets ``context`` instead, meaning "also sees the whole input".

Example:
    >>> f = input_field((None, 32, 32, 3), "float32")
    >>> f = window(f, kernel=(3, 3), strides=(1, 1), dilation=(1, 1), pad_before=(1, 1))
    >>> f.size, f.jump, f.centre
    ((3, 3), (1, 1), (0.5, 0.5))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """Unit 0's interval per spatial axis; ``jump`` is None once the axes are pooled away.

    Example:
        >>> field = Field(lo=(-1,), hi=(2,), jump=(1,))
        >>> field.size, field.centre, field.spatial
        ((3,), (0.5,), True)
    """

    lo: tuple[int, ...]
    hi: tuple[int, ...]
    jump: tuple[int, ...] | None
    context: bool = False

    @property
    def size(self) -> tuple[int, ...]:
        """Receptive field size per axis, in input pixels (or tokens)."""
        return tuple(h - lo for lo, h in zip(self.lo, self.hi, strict=True))

    @property
    def centre(self) -> tuple[float, ...]:
        """Centre of unit 0 per axis; unit ``n`` is centred at ``centre + n * jump``."""
        return tuple((lo + h) / 2 for lo, h in zip(self.lo, self.hi, strict=True))

    @property
    def spatial(self) -> bool:
        """True while the tensor still has spatial (or token) axes."""
        return self.jump is not None and len(self.jump) > 0


def input_field(shape: Sequence[int | None], dtype: str) -> Field:
    """The field of a model input: one pixel or token per unit.

    Images and feature maps ``(batch, *axes, channels)`` have ``rank - 2`` spatial axes;
    integer ``(batch, length)`` inputs are token ids with one axis; anything else (a feature
    vector, raw strings) has none.

    Example:
        >>> input_field((None, 50), "int32"), input_field((None, 128), "float32").spatial
        (Field(lo=(0,), hi=(1,), jump=(1,), context=False), False)
    """
    rank = len(shape)
    if rank >= 3:
        axes = rank - 2
    elif rank == 2 and "int" in str(dtype):
        axes = 1
    else:
        axes = 0
    return Field((0,) * axes, (1,) * axes, (1,) * axes)


def token_field() -> Field:
    """The field of a token sequence produced inside the model (``TextVectorization``).

    Example:
        >>> token_field() == input_field((None, 20), "int32")  # as if token ids came in
        True
    """
    return Field((0,), (1,), (1,))


def window(field: Field, kernel: Sequence[int], strides: Sequence[int],
           dilation: Sequence[int], pad_before: Sequence[int]) -> Field | None:
    """Apply a convolution or pooling window; None when the axes do not match the kernel.

    Example:
        >>> f = window(token_field(), kernel=(3,), strides=(2,), dilation=(1,), pad_before=(1,))
        >>> f.lo, f.hi, f.jump
        ((-1,), (2,), (2,))
    """
    if not field.spatial:
        return field
    if len(kernel) != len(field.lo):
        return None
    lo, hi, jump = [], [], []
    for axis, (k, s, d, p) in enumerate(zip(kernel, strides, dilation, pad_before, strict=True)):
        j = field.jump[axis]
        lo.append(field.lo[axis] - p * j)
        hi.append(field.hi[axis] + ((k - 1) * d - p) * j)
        jump.append(j * s)
    return Field(tuple(lo), tuple(hi), tuple(jump), field.context)


def shift(field: Field, before: Sequence[int]) -> Field | None:
    """Zero padding (``before`` > 0) or cropping (``before`` < 0) moves unit 0, nothing else.

    Example:
        >>> shift(token_field(), before=(2,))  # two zeros in front: unit 0 sees zeros
        Field(lo=(-2,), hi=(-1,), jump=(1,), context=False)
    """
    if not field.spatial:
        return field
    if len(before) != len(field.lo):
        return None
    jump = field.jump
    lo = tuple(lo - b * j for lo, b, j in zip(field.lo, before, jump, strict=True))
    hi = tuple(h - b * j for h, b, j in zip(field.hi, before, jump, strict=True))
    return Field(lo, hi, jump, field.context)


def collapse(field: Field, sizes: Sequence[int | None]) -> Field | None:
    """Global pooling or flattening: every unit now sees all ``sizes`` positions at once.

    None when a size is unknown (a sequence of unspecified length).

    Example:
        >>> collapse(token_field(), sizes=(10,))
        Field(lo=(0,), hi=(10,), jump=None, context=False)
    """
    if not field.spatial:
        return field
    if any(n is None for n in sizes) or len(sizes) != len(field.lo):
        return None
    hi = tuple(h + (n - 1) * j for h, n, j in zip(field.hi, sizes, field.jump, strict=True))
    return Field(field.lo, hi, None, field.context)


def join(fields: Sequence[Field | None]) -> Field | None:
    """Where paths meet: the largest field over the spatial paths, axis by axis.

    Inputs that have no spatial axes any more (a squeeze-excite gate broadcast over the map)
    set ``context``. None when any input is unknown.

    Example:
        >>> gate = collapse(token_field(), sizes=(10,))
        >>> join([Field((0,), (3,), (1,)), Field((-2,), (3,), (1,)), gate])
        Field(lo=(-2,), hi=(3,), jump=(1,), context=True)
    """
    if not fields or any(f is None for f in fields):
        return None
    spatial = [f for f in fields if f.spatial]
    candidates = spatial or list(fields)
    axes = {len(f.lo) for f in candidates}
    if len(axes) != 1:
        return None
    lo, hi, jump = [], [], []
    for axis in range(axes.pop()):
        widest = max(candidates, key=lambda f: f.hi[axis] - f.lo[axis])
        lo.append(widest.lo[axis])
        hi.append(widest.hi[axis])
        if widest.jump is not None:
            jump.append(widest.jump[axis])
    context = any(f.context for f in fields) or (bool(spatial) and len(spatial) < len(fields))
    return Field(tuple(lo), tuple(hi), tuple(jump) if spatial else None, context)


def same_padding_before(size: int | None, kernel: int, stride: int, dilation: int) -> int:
    """Zeros TensorFlow pads before the first position for ``padding="same"``.

    The total is whatever makes ``ceil(size / stride)`` outputs fit; the odd one goes after.
    For an unknown size, assume it is a multiple of the stride (the usual case).

    Example:
        >>> same_padding_before(224, kernel=7, stride=2, dilation=1)  # 5 zeros: 2 before
        2
    """
    span = (kernel - 1) * dilation + 1
    if size is None:
        total = max(span - stride, 0)
    else:
        total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2


def window_of_layer(field: Field, layer: Any, in_sizes: Sequence[int | None]) -> Field | None:
    """A Keras convolution or pooling layer as a window (kernel, strides, dilation, padding).

    Example:
        >>> import keras
        >>> conv = keras.layers.Conv2D(8, 3, strides=2, padding="same")
        >>> window_of_layer(input_field((None, 32, 32, 3), "float32"), conv, (32, 32))
        Field(lo=(0, 0), hi=(3, 3), jump=(2, 2), context=False)
    """
    kernel = tuple(getattr(layer, "kernel_size", None) or layer.pool_size)
    strides = tuple(layer.strides)
    dilation = tuple(getattr(layer, "dilation_rate", None) or (1,) * len(kernel))
    if layer.padding == "valid":
        before = (0,) * len(kernel)
    elif layer.padding == "causal":
        before = tuple((k - 1) * d for k, d in zip(kernel, dilation, strict=True))
    else:
        before = tuple(same_padding_before(n, k, s, d)
                       for n, k, s, d in zip(in_sizes, kernel, strides, dilation, strict=True))
    return window(field, kernel, strides, dilation, before)


def padding_before(layer: Any) -> tuple[int, ...]:
    """Leading zeros per axis of a ZeroPadding layer, or minus the leading crop of Cropping.

    Example:
        >>> import keras
        >>> padding_before(keras.layers.ZeroPadding2D(((1, 2), (3, 4))))
        (1, 3)
        >>> padding_before(keras.layers.Cropping1D((2, 0)))
        (-2,)
    """
    amounts = getattr(layer, "padding", None)
    sign = 1
    if amounts is None:
        amounts, sign = layer.cropping, -1
    # ZeroPadding1D / Cropping1D hold one (before, after) pair, the 2D/3D ones one per axis.
    pairs = (amounts,) if isinstance(amounts[0], int) else amounts
    return tuple(sign * pair[0] for pair in pairs)
