"""One training stage: freeze and unfreeze by block, per-block learning rates, compile once.

Freezing reads the backbone row's block boundaries (``tlkit.backbones.block_of_layers``), so
"unfreeze from block4" means the same thing to training and to inspection. BatchNorm
layers stay frozen (``trainable=False``, which in Keras 3 also runs them in inference mode)
unless the recipe says ``batchnorm: trainable``: small fine-tuning batches would otherwise
overwrite the ImageNet statistics.

Example:
    >>> from tlkit.backbones import build_backbone, get_backbone
    >>> backbone = build_backbone("tiny_cnn", 32)
    >>> plan = prepare_stage(backbone, get_backbone("tiny_cnn"), Stage(train_from=-1))
    >>> plan.trainable_blocks
    [2]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlkit.backbones import Backbone, block_of_layers
from tlkit.errors import UserError
from tlkit.keras_internals import optimizer_variable_index
from tlkit.recipes import Stage

if TYPE_CHECKING:
    import keras


@dataclass
class StagePlan:
    """What a stage trains: the backbone blocks, and each variable's learning-rate factor.

    Example:
        >>> StagePlan([], {}).backbone_frozen, StagePlan([2], {"conv/kernel": 1.0}).backbone_frozen
        (True, False)
    """

    trainable_blocks: list[int]
    lr_multipliers: dict[str, float]

    @property
    def backbone_frozen(self) -> bool:
        """True when only the head trains (so its input features could be computed once)."""
        return not self.trainable_blocks


def first_trainable_block(row: Backbone, train_from: str | int | None,
                          layer_blocks: dict[str, int]) -> int | None:
    """Resolve a stage's ``train_from`` to a block index (None: the backbone stays frozen).

    Example:
        >>> from tlkit.backbones import get_backbone
        >>> first_trainable_block(get_backbone("vgg16"), -2, {})
        3
    """
    n_blocks = len(row.blocks) + 1
    if train_from is None:
        return None
    if train_from == "all":
        return 0
    if isinstance(train_from, int):
        index = train_from if train_from >= 0 else n_blocks + train_from
        if not 0 <= index < n_blocks:
            raise UserError(f"train_from {train_from} is out of range: {row.name} has "
                            f"{n_blocks} blocks ({', '.join(row.block_names)})")
        return index
    name = train_from.removeprefix("after:")
    if name in row.block_names:
        return row.block_names.index(name)
    if name in layer_blocks:
        return layer_blocks[name]
    raise UserError(f"train_from '{train_from}' is neither a block nor a layer of {row.name}; "
                    f"blocks: {', '.join(row.block_names)}")


def prepare_stage(backbone: keras.Model, row: Backbone, stage: Stage,
                  batchnorm: str = "frozen", batchnorm_momentum: float | None = None
                  ) -> StagePlan:
    """Set ``trainable`` on every backbone layer for ``stage`` and work out per-variable rates.

    The head always trains. With ``lr_decay`` below 1, block k trains at
    ``lr * lr_decay ** (last_block - k)``: the top block at the stage's rate, earlier
    blocks slower (discriminative fine-tuning). ``batchnorm_momentum``, if given, replaces
    the momentum of the BatchNorm layers that train.

    Example:
        >>> from tlkit.backbones import build_backbone, get_backbone
        >>> backbone = build_backbone("tiny_cnn", 32)
        >>> plan = prepare_stage(backbone, get_backbone("tiny_cnn"),
        ...                      Stage(train_from="all", lr_decay=0.5))
        >>> plan.trainable_blocks, sorted(set(plan.lr_multipliers.values()))
        ([0, 1, 2], [0.25, 0.5, 1.0])
    """
    import keras

    layer_blocks = block_of_layers(backbone, row)
    start = first_trainable_block(row, stage.train_from, layer_blocks)
    backbone.trainable = start is not None
    trainable_blocks = [] if start is None else list(range(start, len(row.blocks) + 1))
    multipliers: dict[str, float] = {}
    if start is None:
        return StagePlan(trainable_blocks, multipliers)
    last = len(row.blocks)
    for layer in backbone.layers:
        block = layer_blocks[layer.name]
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = block >= start and not (is_bn and batchnorm == "frozen")
        if is_bn and layer.trainable and batchnorm_momentum is not None:
            layer.momentum = batchnorm_momentum
        if layer.trainable and stage.lr_decay < 1:
            for variable in layer.trainable_weights:
                multipliers[variable.path] = stage.lr_decay ** (last - block)
    return StagePlan(trainable_blocks, multipliers)


_LAYERWISE_CLASSES: dict[str, type] = {}


def layerwise_optimizer_class(base: type) -> type:
    """``base`` (a Keras optimizer class) with a learning-rate factor per variable.

    Keras 3 optimizers share one rate; this subclass scales it in ``update_step``, the one
    place every optimizer applies the rate to a variable, so Adam's moments stay exact.

    Example:
        >>> import keras
        >>> layerwise_optimizer_class(keras.optimizers.Adam).__name__
        'LayerwiseAdam'
    """
    name = f"Layerwise{base.__name__}"
    if name in _LAYERWISE_CLASSES:
        return _LAYERWISE_CLASSES[name]
    import keras

    def __init__(self: Any, lr_multipliers: dict[str, float] | None = None, **kwargs: Any) -> None:
        base.__init__(self, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})

    def build(self: Any, variables: list[Any]) -> None:
        base.build(self, variables)
        self._lr_scales = [self.lr_multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self: Any, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        scale = self._lr_scales[optimizer_variable_index(self, variable)]
        return base.update_step(self, gradient, variable, learning_rate * scale)

    def get_config(self: Any) -> dict[str, Any]:
        return {**base.get_config(self), "lr_multipliers": self.lr_multipliers}

    cls = type(name, (base,), {"__init__": __init__, "build": build,
                               "update_step": update_step, "get_config": get_config})
    cls = keras.saving.register_keras_serializable(package="tlkit")(cls)
    _LAYERWISE_CLASSES[name] = cls
    return cls


def make_optimizer(stage: Stage, lr_multipliers: dict[str, float] | None = None) -> Any:
    """The stage's Keras optimizer, layerwise when some variables train at other rates.

    Example:
        >>> make_optimizer(Stage(optimizer="sgd", lr=0.01)).__class__.__name__
        'SGD'
    """
    import importlib

    from tlkit.optimizers import OPTIMIZERS

    row = OPTIMIZERS[stage.optimizer]
    base = getattr(importlib.import_module(row.module), row.keras_class)
    kwargs: dict[str, Any] = {**row.fixed, "learning_rate": stage.lr}
    if stage.weight_decay:
        kwargs["weight_decay"] = stage.weight_decay
    if stage.ema:  # Keras's default momentum 0.99; fit_stages validates on the average
        kwargs["use_ema"] = True
    if lr_multipliers:
        return layerwise_optimizer_class(base)(lr_multipliers=lr_multipliers, **kwargs)
    return base(**kwargs)


def schedule_rate(optimizer: Any, stage: Stage, steps_per_epoch: int) -> None:
    """Give a compiled, not yet built ``optimizer`` the stage's schedule over its steps.

    The schedule reads the optimizer's iteration count, saved and restored with its state,
    so a resumed stage continues it; per-block factors (``lr_decay``) scale its value in
    ``update_step``. A constant stage without warmup keeps its float rate untouched.

    Example:
        >>> import keras
        >>> optimizer = keras.optimizers.SGD(0.1)
        >>> schedule_rate(optimizer, Stage(epochs=2, lr=0.1, schedule="step"), 10)
        >>> round(float(optimizer.learning_rate), 6)  # step 0 of 20
        0.1
    """
    from tlkit.schedules import learning_rate

    rate = learning_rate(stage.schedule, stage.lr, stage.epochs * steps_per_epoch, stage.warmup)
    if not isinstance(rate, float):
        optimizer.learning_rate = rate  # Keras untracks the float rate's variable


def compile_for_stage(model: keras.Model, stage: Stage, plan: StagePlan, loss: Any = None,
                      metrics: list[Any] | None = None) -> None:
    """Compile ``model`` for one stage; called once per stage, after ``prepare_stage``.
    ``loss`` and ``metrics`` are the head's (``tlkit.train.heads``; default: one label).

    Keras reads ``trainable`` at compile time, so changing what trains without recompiling
    silently trains the old set: that is why the library, not the user, recompiles.

    Example:
        >>> from tlkit.backbones import build_backbone
        >>> model = build_backbone("tiny_cnn", 32)
        >>> compile_for_stage(model, Stage(optimizer="sgd"), StagePlan([], {}))
        >>> model.optimizer.__class__.__name__
        'SGD'
    """
    import keras

    model.compile(optimizer=make_optimizer(stage, plan.lr_multipliers),
                  loss=loss or keras.losses.SparseCategoricalCrossentropy(),
                  metrics=metrics or ["accuracy"])
