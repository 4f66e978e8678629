"""Recipes: dataclasses that say everything about a run and round-trip through YAML.

Values resolve in this order: dataclass defaults, then the recipe file, then CLI flags (as
``key=value`` overrides with dotted paths such as ``stages.1.lr=1e-5``). The resolved recipe
is written into the run folder, so a run can be repeated from its folder alone.

Example:
    >>> stages = two_stage(train_from="block5_conv1")
    >>> recipe = ImageRecipe(backbone="vgg16", data="imgs/", stages=stages)
    >>> load_recipe_text(dump_recipe(recipe)) == recipe
    True
"""

from __future__ import annotations

import codecs
import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union  # Union: to recognise typing.Union hints

import yaml

from tlkit.errors import UserError
from tlkit.optimizers import OPTIMIZERS
from tlkit.schedules import LR_SCHEDULES

BATCHNORM_POLICIES = ("auto", "frozen", "trainable")
MONITORS = ("val_loss", "val_accuracy")
STAGE_KEEPS = ("best", "last")  # which epoch a stage offers to the run (Stage.keep)
# single: one label per example (softmax); multi: a set of labels per example, possibly empty.
LABEL_KINDS = ("single", "multi")
# The largest square input tlkit trains at: beyond it one image's activations alone exceed
# what a CPU or a common GPU holds.
MAX_INPUT_SIZE = 1024


class Checked:
    """A dataclass whose fields are type-checked on every assignment, then ``validate``d.

    The same checks run whether a value comes from YAML, a flag, ``--set`` or Python:
    ``ImageRecipe(batch_size="16")`` and ``stage.epochs = 0`` are errors, not surprises.

    Example:
        >>> Stage().epochs = 0
        Traceback (most recent call last):
        tlkit.errors.UserError: stage 'head': epochs must be at least 1, got 0
    """

    def __setattr__(self, name: str, value: Any) -> None:
        hints = _hints(type(self))
        if name in hints:
            value = _convert(hints[name], value, f"{type(self).__name__}.{name}")
        object.__setattr__(self, name, value)
        if self.__dict__.get("_checked"):
            self.validate()

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_checked", True)

    def validate(self) -> None:
        """Check what a type cannot say (ranges, choices); raise a UserError."""


def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


@dataclass
class Stage(Checked):
    """One training stage: which part of the backbone trains, at what rate, for how long.

    ``train_from`` chooses what trains besides the head: None keeps the whole backbone frozen
    (feature extraction); ``"all"`` trains all of it; an integer k trains from block k on
    (negative counts from the end: -1 is the last block); a string names the block or layer
    from which training starts. ``lr_decay`` gives discriminative learning rates: each block
    below the last trains at ``lr_decay`` times the rate of the block above it.

    Example:
        >>> Stage(name="fine-tune", epochs=5, lr=1e-4, train_from="block5_conv1").train_from
        'block5_conv1'
    """

    name: str = "head"
    epochs: int = 5
    lr: float | str = 1e-3  # or "auto": the lr finder chooses it before the stage trains
    train_from: str | int | None = None
    lr_decay: float = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"  # the rate within the stage: a row of tlkit.schedules
    warmup: float | None = None  # fraction of the stage's steps; None: the schedule's default
    # Per stage: Kornblith et al. 2019 found label smoothing hurts frozen features.
    label_smoothing: float = 0.0
    ema: bool = False  # validate and keep an exponential moving average of the weights
    # Which epoch the stage offers to the run: its best by the monitor, or its last (where a
    # decayed schedule has brought the rate to 0). The run keeps the offer that beats every
    # earlier stage's; a stage kept at its last epoch runs all its epochs (no early stopping).
    keep: str = "best"

    def validate(self) -> None:
        """Epochs, rate and decay in range; an optimizer from ``tlkit.optimizers``, a
        schedule from ``tlkit.schedules``."""
        where = f"stage '{self.name}'"
        _check(self.optimizer in OPTIMIZERS, f"{where}: optimizer '{self.optimizer}' is not "
               f"one of {', '.join(OPTIMIZERS)}")
        _check(self.epochs >= 1, f"{where}: epochs must be at least 1, got {self.epochs}")
        if isinstance(self.lr, str) and self.lr != "auto":  # YAML 1.1 reads 1e-4 as text
            _check(_is_float(self.lr), f"{where}: lr must be a number or auto, got {self.lr!r}")
            object.__setattr__(self, "lr", float(self.lr))
        _check(self.lr == "auto" or self.lr > 0, f"{where}: lr must be above 0, got {self.lr}")
        _check(0 < self.lr_decay <= 1, f"{where}: lr_decay must be in (0, 1], got "
               f"{self.lr_decay}")
        _check(self.weight_decay >= 0, f"{where}: weight_decay must be >= 0")
        _check(self.schedule in LR_SCHEDULES, f"{where}: schedule '{self.schedule}' is not one "
               f"of {', '.join(LR_SCHEDULES)}")
        _check(self.warmup is None or 0 <= self.warmup < 1, f"{where}: warmup is a fraction "
               f"of the stage's steps in [0, 1), got {self.warmup}")
        _check(not self.warmup or LR_SCHEDULES[self.schedule].takes_warmup, f"{where}: "
               f"schedule '{self.schedule}' has no warmup; set warmup to 0 or use cosine")
        _check(0 <= self.label_smoothing < 1, f"{where}: label_smoothing must be in [0, 1), "
               f"got {self.label_smoothing}")
        _check(self.keep in STAGE_KEEPS, f"{where}: keep must be one of "
               f"{', '.join(STAGE_KEEPS)}, got {self.keep!r}")


@dataclass
class Augment(Checked):
    """Random augmentation of the training stream (never of validation or test images).

    Example:
        >>> Augment(zoom=1.0)
        Traceback (most recent call last):
        tlkit.errors.UserError: augment.zoom must be in [0, 1), got 1.0
    """

    flip: bool = True
    rotation: float = 0.05  # fraction of a full turn
    zoom: float = 0.1
    contrast: float = 0.1
    randaugment: bool = False  # Keras's RandAugment: 2 random operations at strength 0.5
    # Batch mixing, for stages that train on images (not on cached features); one of the two:
    mixup: float = 0.0  # MixUp's alpha (0: off; 0.2 is Keras's default)
    cutmix: float = 0.0  # CutMix's factor (0: off; 1.0 is Keras's default)

    def validate(self) -> None:
        """Each strength in [0, 1) (the mixing strengths in [0, 1]); one kind of mixing."""
        for name in ("rotation", "zoom", "contrast"):
            value = getattr(self, name)
            _check(0 <= value < 1, f"augment.{name} must be in [0, 1), got {value}")
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"augment.{name} must be in [0, 1], got {value}")
        _check(not (self.mixup and self.cutmix), "augment.mixup and augment.cutmix are "
               "alternatives; set one of them to 0")


@dataclass
class ImageRecipe(Checked):
    """Everything a fine-tuning run needs; ``tlkit.finetune(recipe, out)`` runs it.

    ``data`` is a folder (one subfolder per class, or train/val/test subfolders holding
    them) or a CSV with ``path_column`` and ``label_column``. Without a given split,
    ``val_fraction`` and ``test_fraction`` of the images are held out, stratified by class.

    Example:
        >>> recipe = ImageRecipe(backbone="efficientnet_lite0", data="datasets/shapes")
        >>> [stage.name for stage in recipe.stages]
        ['head', 'fine-tune']
    """

    backbone: str = "efficientnet_lite0"
    data: str | None = None
    weights: str = "imagenet"
    input_size: int | None = None  # None: the backbone's default size
    batch_size: int = 32
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # Of the training images, held out for conformal prediction sets only (docs/calibration.md)
    calibration_fraction: float = 0.1
    calibrate: bool = True  # fit a temperature on val after training (docs/calibration.md)
    path_column: str = "path"
    label_column: str = "label"
    labels: str = "single"  # or multi: each image has a set of labels (a CSV, not folders)
    label_sep: str = "|"  # multi: what joins the labels of a set in one cell ("beach|sunset")
    label_columns: list[str] | None = None  # multi: 0/1 columns, one per label, instead
    encoding: str = "utf-8"  # of a CSV given as data (a byte-order mark overrides it)
    seed: int = 42
    dropout: float = 0.2
    batchnorm: str = "auto"  # auto: frozen with pretrained weights, trainable with none
    augment: Augment | None = field(default_factory=Augment)
    class_weight: str | None = None  # "balanced" or None
    cache: bool = False  # keep decoded images in memory between epochs (tf.data cache)
    # Stages that train only the head read the frozen backbone's features from a file made
    # once per image (in the run folder, or cache_dir to reuse it across runs).
    feature_cache: bool = True
    augment_views: int = 1  # 1: features of the original images; K > 1: K augmented views
    cache_dir: str | None = None
    probe: bool = True  # a logistic-regression probe on the same features: the run's floor
    # random (Keras's initialiser), or probe: the head starts from the probe's weights when the
    # run fits one. Random won on train/val (docs/defaults.md): a head started at the probe
    # fits train almost exactly at once, early stopping ends it, and fine-tuning then gets
    # almost no gradient.
    head_init: str = "random"
    strict: bool = False
    # Patience in epochs (None: off). The head trains to convergence: 100 epochs is a bound
    # that early stopping on val_loss ends (docs/defaults.md: chosen on flowers12 train/val).
    early_stopping: int | None = 10
    monitor: str = "val_loss"  # what decides the kept epoch: val_loss (min) or val_accuracy (max)
    strategy: str = "auto"  # auto: mirrored over several GPUs; none; mirrored; multiworker
    gpus: str | None = None  # e.g. "0,1"; None: every GPU (memory growth on)
    mixed_precision: str = "off"  # off, auto (by GPU), float16, bfloat16
    jit_compile: bool = False  # XLA
    deterministic: bool = True  # deterministic kernels and data order (same seed, same run)
    # LP-FT (docs/defaults.md): the head to convergence on cached features, then the whole
    # backbone at 1e-4 with warmup and cosine decay for 10 epochs; the fine-tuning stage's
    # last epoch is kept when its val_loss beats the head's best, else the head's best.
    stages: list[Stage] = field(default_factory=lambda: lp_ft())

    def validate(self) -> None:
        """Check what a type cannot (choices, ranges, backbone and sizes); raise a UserError."""
        validate_image_recipe(self)

    @property
    def batchnorm_policy(self) -> str:
        """``frozen`` or ``trainable``: ``auto`` freezes BatchNorm only over pretrained weights.

        Frozen statistics keep ImageNet's normalisation intact under small fine-tuning
        batches; random weights have no statistics worth keeping, and a network whose
        BatchNorm never adapts cannot learn from scratch.
        """
        if self.batchnorm != "auto":
            return self.batchnorm
        return "trainable" if self.weights == "none" else "frozen"

    @property
    def batchnorm_momentum(self) -> float | None:
        """0.9 when training from random weights, else None (each layer keeps its own).

        Keras's 0.99 lets the moving statistics trail a fast-changing network by hundreds
        of steps; on a small dataset trained from scratch, inference then runs on stale
        statistics and predicts one class.
        """
        return 0.9 if self.weights == "none" and self.batchnorm_policy == "trainable" else None


def feature_extraction(epochs: int = 100, lr: float = 3e-3) -> list[Stage]:
    """The backbone stays frozen; only the new head trains.

    Example:
        >>> feature_extraction(epochs=3)[0].train_from is None
        True
    """
    return [Stage(name="head", epochs=epochs, lr=lr)]


def two_stage(head_epochs: int = 100, finetune_epochs: int = 5, lr: float = 3e-3,
              finetune_lr: float = 1e-4, train_from: str | int = -2) -> list[Stage]:
    """Train the head, then unfreeze from a block at a lower rate (Keras guide, fastai).

    Example:
        >>> [s.train_from for s in two_stage(train_from="block5_conv1")]
        [None, 'block5_conv1']
    """
    return [Stage(name="head", epochs=head_epochs, lr=lr),
            Stage(name="fine-tune", epochs=finetune_epochs, lr=finetune_lr, train_from=train_from)]


def gradual_unfreezing(blocks: int = 3, epochs: int = 2, lr: float = 1e-3,
                       finetune_lr: float = 1e-4) -> list[Stage]:
    """Head first, then one more block per stage, from the top down (ULMFiT).

    Example:
        >>> [s.train_from for s in gradual_unfreezing(blocks=2)]
        [None, -1, -2]
    """
    return [Stage(name="head", epochs=epochs, lr=lr)] + [
        Stage(name=f"unfreeze-{k}", epochs=epochs, lr=finetune_lr, train_from=-k)
        for k in range(1, blocks + 1)
    ]


def discriminative(epochs: int = 5, lr: float = 1e-3, finetune_lr: float = 1e-4,
                   lr_decay: float = 0.5) -> list[Stage]:
    """Head first, then the whole backbone with lower rates for earlier blocks.

    Example:
        >>> discriminative()[1].lr_decay
        0.5
    """
    return [Stage(name="head", epochs=epochs, lr=lr),
            Stage(name="discriminative", epochs=epochs, lr=finetune_lr, train_from="all",
                  lr_decay=lr_decay)]


def full_finetuning(epochs: int = 10, lr: float = 1e-4) -> list[Stage]:
    """Everything trains from the start (useful with weights none, or lots of data).

    Example:
        >>> full_finetuning()[0].train_from
        'all'
    """
    return [Stage(name="full", epochs=epochs, lr=lr, train_from="all")]


def lp_ft(head_epochs: int = 100, finetune_epochs: int = 10, lr: float = 3e-3,
          finetune_lr: float = 1e-4, train_from: str | int = "all", lr_decay: float = 1.0,
          warmup: float = 0.1) -> list[Stage]:
    """Linear probing, then fine-tuning (LP-FT, Kumar et al. 2022): the head trains on cached
    features to convergence (the backbone frozen: a linear probe by gradient descent), then
    the backbone trains from ``train_from`` at a small rate with warmup and cosine decay.

    The head's best epoch is kept unless the fine-tuning stage's *last* epoch (the rate
    decayed to 0) has a lower validation loss: one comparison fixed in advance, not the
    minimum of a stage whose validation loss jumps from epoch to epoch on a small val split
    (``docs/defaults.md``).

    Example:
        >>> [(s.train_from, s.schedule, s.keep) for s in lp_ft()]
        [(None, 'constant', 'best'), ('all', 'cosine', 'last')]
    """
    return [Stage(name="head", epochs=head_epochs, lr=lr),
            Stage(name="fine-tune", epochs=finetune_epochs, lr=finetune_lr,
                  train_from=train_from, lr_decay=lr_decay, schedule="cosine", warmup=warmup,
                  keep="last")]


# One row per named schedule; `--schedule NAME` picks one.
SCHEDULES: dict[str, Any] = {
    "lp-ft": lp_ft,
    "feature-extraction": feature_extraction,
    "two-stage": two_stage,
    "gradual-unfreezing": gradual_unfreezing,
    "discriminative": discriminative,
    "full": full_finetuning,
}


def default_schedule() -> str:
    """The row of ``SCHEDULES`` whose stages are the default image recipe's (``--help``).

    Example:
        >>> default_schedule()
        'lp-ft'
    """
    stages = ImageRecipe().stages
    return next((name for name, make in SCHEDULES.items() if make() == stages), "custom")


def check_calibration_fraction(fraction: float) -> None:
    """The share of training examples held out for conformal sets: in [0, 0.5].

    Example:
        >>> check_calibration_fraction(0.9)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: calibration_fraction must be in [0, 0.5] (0: no prediction ...
    """
    _check(0 <= fraction <= 0.5, f"calibration_fraction must be in [0, 0.5] (0: no prediction "
           f"sets), got {fraction}")


def validate_image_recipe(recipe: ImageRecipe) -> None:
    """Check the values a type check cannot (choices and ranges); raise a UserError.

    ``ImageRecipe.validate`` calls it on every change, so an out-of-range field fails at once.

    Example:
        >>> ImageRecipe(backbone="vgg16", val_fraction=0.5, test_fraction=0.5)
        Traceback (most recent call last):
        tlkit.errors.UserError: val_fraction + test_fraction must leave images to train on
    """
    from tlkit.backbones import check_input_size, get_backbone

    row = get_backbone(recipe.backbone)
    if recipe.input_size is not None:
        _check(recipe.input_size <= MAX_INPUT_SIZE, f"input_size {recipe.input_size} is above "
               f"{MAX_INPUT_SIZE}, the largest tlkit trains at; pass --input-size "
               f"{row.default_size} (the backbone's default) or another size up to "
               f"{MAX_INPUT_SIZE}")
        check_input_size(row, recipe.input_size)
    _check(recipe.batchnorm in BATCHNORM_POLICIES,
           f"batchnorm '{recipe.batchnorm}' is not one of {', '.join(BATCHNORM_POLICIES)}")
    _check(recipe.class_weight in (None, "balanced"),
           f"class_weight '{recipe.class_weight}' must be 'balanced' or empty")
    _check(0 <= recipe.val_fraction < 1 and 0 <= recipe.test_fraction < 1,
           "val_fraction and test_fraction must be in [0, 1)")
    _check(recipe.val_fraction + recipe.test_fraction < 1,
           "val_fraction + test_fraction must leave images to train on")
    check_calibration_fraction(recipe.calibration_fraction)
    _check(bool(recipe.stages), "a recipe needs at least one stage; stages is empty: leave it "
           "out for the default schedule, or pass --schedule (e.g. two-stage)")
    _check(0 <= recipe.dropout < 1, f"dropout must be in [0, 1), got {recipe.dropout}")
    _check(recipe.head_init in HEAD_INITS, f"head_init '{recipe.head_init}' is not one of "
           f"{', '.join(HEAD_INITS)}")
    _check(recipe.augment_views >= 1, f"augment_views must be at least 1, got "
           f"{recipe.augment_views}")
    _check(recipe.augment_views == 1 or recipe.augment is not None,
           f"augment_views: {recipe.augment_views} needs augmentation; set augment or "
           "augment_views: 1")
    _check_common(recipe)
    for stage in recipe.stages:
        # A name may be a block or any layer: layers are checked once the backbone is
        # built, before the first stage trains (tlkit.train.image).
        if isinstance(stage.train_from, int):
            blocks = len(row.block_names)
            _check(-blocks <= stage.train_from < blocks,
                   f"stage '{stage.name}': train_from {stage.train_from} is outside "
                   f"{row.name}'s {blocks} blocks (0..{blocks - 1}, or -1..-{blocks})")


def _check_common(recipe: Any) -> None:
    """The fields both kinds share: labels, batch size, seed, patience, monitor, engine."""
    from tlkit.choices import PRECISIONS, STRATEGIES

    check_label_fields(recipe)

    _check(recipe.strategy in STRATEGIES,
           f"strategy '{recipe.strategy}' is not one of {', '.join(STRATEGIES)}")
    _check(recipe.mixed_precision in PRECISIONS,
           f"mixed_precision '{recipe.mixed_precision}' is not one of {', '.join(PRECISIONS)}")
    _check(recipe.batch_size >= 1,
           f"batch_size must be at least 1, got {recipe.batch_size}; e.g. --batch-size 32")
    _check(recipe.early_stopping is None or recipe.early_stopping >= 1,
           f"early_stopping is a patience in epochs (>= 1) or empty, got "
           f"{recipe.early_stopping}")
    _check(recipe.monitor in MONITORS,
           f"monitor '{recipe.monitor}' is not one of {', '.join(MONITORS)}")
    _check(recipe.seed >= 0, f"seed must be >= 0, got {recipe.seed}")


def check_label_fields(recipe: Any) -> None:
    """``labels``, ``label_sep`` and ``label_columns`` agree; a one-line UserError if not.

    Example:
        >>> ImageRecipe(label_columns=["cat", "dog"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: label_columns (cat, dog) needs labels: multi; pass ...
    """
    _check(recipe.labels in LABEL_KINDS,
           f"labels '{recipe.labels}' is not one of {', '.join(LABEL_KINDS)} (multi: a set of "
           "labels per example, --multi-label)")
    _check(bool(recipe.label_sep.strip()),
           f"label_sep {recipe.label_sep!r} is blank; use a character that is in no label, "
           "e.g. --label-sep '|'")
    columns = recipe.label_columns
    if columns is None:
        return
    _check(recipe.labels == "multi",
           f"label_columns ({', '.join(columns)}) needs labels: multi; pass --multi-label, or "
           "leave out --label-columns to read one label per example from --label-column")
    _check(len(columns) >= 2 and all(c.strip() for c in columns),
           f"label_columns ({', '.join(columns)}) must name two or more 0/1 columns, e.g. "
           "--label-columns beach,sunset")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    _check(not twice, f"label_columns names '{twice[0] if twice else ''}' twice; list each "
           "column once")


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """A plain dict of the recipe, ready for YAML or JSON.

    Example:
        >>> recipe_to_dict(ImageRecipe(backbone="vgg16"))["stages"][0]["name"]
        'head'
    """
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Any, path: str | Path | None = None) -> str:
    """The recipe as YAML text (``kind`` first, then its fields); written to ``path`` if given.

    Example:
        >>> dump_recipe(ImageRecipe()).splitlines()[0]
        'kind: image'
    """
    text = yaml.safe_dump({"kind": kind_of(recipe), **recipe_to_dict(recipe)},
                          sort_keys=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    """Read a recipe YAML file, apply ``key=value`` overrides, and check every key and type.

    Example:
        >>> load_recipe("recipes/vgg16-two-stage.yaml", ["batch_size=16"]).batch_size
        16
    """
    kind, data = read_recipe_file(path)
    return build_recipe(RECIPE_KINDS[kind], data, overrides, source=str(path))


def read_recipe_file(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The kind and the raw fields of a recipe file, not yet checked against its class.

    Example:
        >>> kind, fields = read_recipe_file("recipes/vgg16-two-stage.yaml")
        >>> kind, fields["backbone"]
        ('image', 'vgg16')
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"recipe file '{file}' does not exist")
    text = _recipe_text(file)
    # An empty file (or one of comments only) would train on every default without a word.
    if _yaml_data(text, str(file)) is None:
        raise UserError(f"recipe '{file}' is empty; write the fields it sets (e.g. backbone: "
                        "vgg16), or leave out --recipe to train on the defaults")
    return parse_recipe_text(text, str(file))


def _recipe_text(file: Path) -> str:
    """The text of a recipe file: UTF-8, or UTF-16 with its byte-order mark (what Windows
    editors save as "Unicode"); other bytes are a one-line UserError naming the line."""
    data = file.read_bytes()
    utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"recipe '{file}', line {line}: bytes that are not UTF-8 "
                        f"({data[error.start:error.end]!r}); save the recipe as UTF-8") from error


def _yaml_data(text: str, source: str) -> Any:
    """What ``yaml.safe_load`` makes of ``text`` (None for nothing), or a one-line UserError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserError(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from error


def parse_recipe_text(text: str, source: str = "recipe") -> tuple[str, dict[str, Any]]:
    """The kind and raw fields of recipe YAML (``yaml.safe_load``: no Python objects).

    Without a ``kind`` key the recipe is an image recipe.

    Example:
        >>> parse_recipe_text("{kind: textcnn, epochs: 3}")
        ('textcnn', {'epochs': 3})
    """
    data = _yaml_data(text, source) or {}
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of recipe fields")
    kind = data.pop("kind", "image")
    if kind not in RECIPE_KINDS:
        raise UserError(f"{source}: unknown kind '{kind}'; choose one of: "
                        f"{', '.join(RECIPE_KINDS)}")
    return kind, data


def load_recipe_text(text: str, overrides: list[str] | None = None,
                     source: str = "recipe") -> Any:
    """Like ``load_recipe`` for YAML text.

    Example:
        >>> load_recipe_text("{kind: textcnn, epochs: 3}", ["lr=0.5"]).lr
        0.5
    """
    kind, data = parse_recipe_text(text, source)
    return build_recipe(RECIPE_KINDS[kind], data, overrides, source)


def build_recipe(cls: type, data: dict[str, Any], overrides: list[str] | None = None,
                 source: str = "recipe") -> Any:
    """Make a ``cls`` recipe from a dict plus ``key=value`` overrides, checking keys and types.

    Example:
        >>> build_recipe(ImageRecipe, {"backbone": "vgg16"}, ["stages.0.epochs=2"]).stages[0].epochs
        2
    """
    data = dict(data)
    defaults = recipe_to_dict(cls())
    for override in overrides or []:
        path = override.partition("=")[0].strip().split(".")
        # a dotted key into a field the data leaves at its default edits that default
        if len(path) > 1 and path[0] not in data and isinstance(defaults.get(path[0]),
                                                                (list, dict)):
            data[path[0]] = copy.deepcopy(defaults[path[0]])
        _apply_override(data, override)
    return _from_dict(cls, data, source)


def apply_overrides(recipe: Any, overrides: list[str]) -> Any:
    """A copy of ``recipe`` with ``key=value`` overrides applied and checked.

    Example:
        >>> recipe = ImageRecipe(backbone="vgg16")
        >>> apply_overrides(recipe, ["stages.0.lr=1e-4"]).stages[0].lr, recipe.stages[0].lr
        (0.0001, 0.003)
    """
    return build_recipe(type(recipe), recipe_to_dict(recipe), overrides)


def resolve_recipe(kind: str, path: str | Path | None = None,
                   flags: dict[str, Any] | None = None, overrides: list[str] | None = None
                   ) -> Any:
    """The recipe a command runs: defaults, then the file, then flags, then ``--set``.

    Every source is merged as plain data and the result is checked once. ``flags`` holds
    field values (None: not given); for image recipes ``schedule`` replaces the stages with a
    named schedule and ``epochs`` sets the epochs of every stage.

    Example:
        >>> recipe = resolve_recipe("image", flags={"schedule": "feature-extraction",
        ...                                         "epochs": 3}, overrides=["seed=1"])
        >>> [(s.name, s.epochs) for s in recipe.stages], recipe.seed
        ([('head', 3)], 1)
    """
    data: dict[str, Any] = {}
    if path:
        file_kind, data = read_recipe_file(path)
        if file_kind != kind:
            raise UserError(f"'{path}' is a recipe of kind '{file_kind}', not '{kind}'; run it "
                            f"with `{KIND_COMMANDS[file_kind]} --recipe {path}`")
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    source = f"{path} with options" if path else "options"
    if kind == "image":
        _image_flags(data, given, source)
    data.update(given)
    return build_recipe(RECIPE_KINDS[kind], data, overrides, source=source)


def _default_stages(cls: type) -> list[dict[str, Any]]:
    return recipe_to_dict(cls())["stages"]


def _image_flags(data: dict[str, Any], flags: dict[str, Any], source: str) -> None:
    """Turn ``--schedule`` and ``--epochs`` into stages (both leave ``flags``)."""
    schedule = flags.pop("schedule", None)
    epochs = flags.pop("epochs", None)
    if schedule is not None:
        if schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{schedule}'; choose one of: "
                            f"{', '.join(SCHEDULES)}")
        data["stages"] = [dataclasses.asdict(stage) for stage in SCHEDULES[schedule]()]
    if "stages" in data:
        _stage_list(data["stages"], source)
    if epochs is not None:
        # Stages the recipe gives, even none (refused when checked), are the ones --epochs sets.
        stages = data["stages"] if "stages" in data else _default_stages(ImageRecipe)
        data["stages"] = [{**stage, "epochs": epochs} for stage in stages]


def _stage_list(stages: Any, source: str) -> list[dict[str, Any]]:
    """``stages`` as given, once it is a list of mappings (a one-line UserError if not).

    Example:
        >>> _stage_list({"head": {"epochs": 3}}, "r.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: r.yaml: stages must be a list of stages, each a mapping ...
    """
    shape = ("a list of stages, each a mapping such as {name: head, epochs: 5} (in YAML, one "
             "'- name: ...' item per stage)")
    if not isinstance(stages, list):
        raise UserError(f"{source}: stages must be {shape}, got {stages!r}")
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict):
            raise UserError(f"{source}: stages[{i}] is {stage!r}, not a stage; stages must be "
                            f"{shape}")
    return stages


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep:
        raise UserError(f"override '{override}' must look like key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise UserError(f"override '{override}': the value is not plain YAML "
                        f"({str(error).splitlines()[0]}); quote it or fix it") from error
    parts = key.strip().split(".")
    target: Any = data
    for depth, part in enumerate(parts[:-1], start=1):
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise UserError(f"override '{override}': no list item {part}")
            target = target[int(part)]
        else:
            if target.get(part) is None:  # empty (e.g. augment off): start its fields
                target[part] = {}
            target = target[part]
        if not isinstance(target, (dict, list)):
            whole = ".".join(parts[:depth])
            raise UserError(f"override '{override}': {whole} is {target!r}, which has no "
                            f"fields; set it whole, e.g. --set {whole}=...")
    if isinstance(target, list):
        if not parts[-1].isdigit() or int(parts[-1]) >= len(target):
            raise UserError(f"override '{override}': no list item {parts[-1]}")
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value


def kind_of(recipe: Any) -> str:
    """The kind (``image`` or ``textcnn``) of a recipe or recipe class.

    Example:
        >>> kind_of(ImageRecipe())
        'image'
    """
    cls = recipe if isinstance(recipe, type) else type(recipe)
    for kind, recipe_cls in RECIPE_KINDS.items():
        if recipe_cls is cls:
            return kind
    raise TypeError(f"{cls.__name__} is not a registered recipe kind")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = _hints(cls)
    names = set(hints)
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' for {cls.__name__}; "
                        f"known keys: {', '.join(sorted(names))}")
    values = {key: _convert(hints[key], value, f"{where}: {key}") for key, value in data.items()}
    return cls(**values)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        if type(value) in options:  # 99 for ``str | int`` stays the int it was given as
            return value
        real = [option for option in options if option is not type(None)]
        if len(real) == 1:  # Optional[X]: X's own message names the field and the type
            return _convert(real[0], value, where)
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except UserError:
                continue
        raise UserError(f"{where} must be {_describe(hint)}, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, got {value!r}")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else _from_dict(hint, value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _is_float(value):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint is str and type(value) in (int, float):  # --set gpus=7 reads 7 as a number
        return str(value)
    if hint is str and isinstance(value, os.PathLike):  # ImageRecipe(data=Path("imgs"))
        return os.fspath(value)
    if hint is str and isinstance(value, bool):
        raise UserError(f"{where} must be text, got {value!r} (YAML reads yes/no/on/off as "
                        "true/false: quote the value)")
    raise UserError(f"{where} must be {_describe(hint)}, got {value!r}")


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _describe(hint: Any) -> str:
    args = typing.get_args(hint)
    if args:
        return " or ".join(_describe(a) for a in args)
    if hint is bool:
        return "true or false"
    return "empty" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass
class TextCNNRecipe(Checked):
    """A Kim (2014) sentence CNN run; ``tlkit.train_textcnn(recipe, out)`` runs it.

    Defaults are the paper's: widths 3/4/5 with 100 maps, dropout 0.5, max-norm 3, batch 50,
    Adadelta (rate 1.0, rho 0.95), 25 epochs, 10% of training held out as dev when no dev
    file is given; the epoch with the best dev accuracy is kept, as Kim did (``monitor``).
    ``data`` is a CSV/TSV, a folder of ``<class>.txt`` files, or a list of Kim's
    one-file-per-class files. ``cv`` runs k-fold cross-validation on ``data`` instead of a
    train/test split.

    Example:
        >>> TextCNNRecipe(variant="static", vectors="glove.6B.300d.txt").filter_widths
        [3, 4, 5]
    """

    data: str | list[str] | None = None
    test: str | None = None
    dev: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    labels: str = "single"  # or multi: each text has a set of labels (a table, not class files)
    label_sep: str = "|"
    label_columns: list[str] | None = None
    encoding: str = "utf-8"
    tokenizer: str = "kim"
    variant: str = "rand"
    vectors: str | None = None
    vectors_format: str | None = None
    embedding_dim: int = 300
    max_length: int | None = None
    min_count: int = 1
    filter_widths: list[int] = field(default_factory=lambda: [3, 4, 5])
    feature_maps: int = 100
    dropout: float = 0.5
    max_norm: float | None = 3.0
    batch_size: int = 50
    epochs: int = 25
    lr: float = 1.0
    dev_fraction: float = 0.1
    # Of the training texts, held out for conformal prediction sets only (docs/calibration.md)
    calibration_fraction: float = 0.1
    calibrate: bool = True  # fit a temperature on dev after training (docs/calibration.md)
    cv: int | None = None
    seed: int = 42
    early_stopping: int | None = None
    monitor: str = "val_accuracy"
    strategy: str = "auto"
    gpus: str | None = None
    mixed_precision: str = "off"
    jit_compile: bool = False
    deterministic: bool = True

    def validate(self) -> None:
        """Check what a type cannot (choices, ranges); raise a UserError."""
        from tlkit.choices import TOKENIZERS

        _check(self.variant in TEXTCNN_VARIANTS, f"unknown variant '{self.variant}'; choose "
               f"one of: {', '.join(TEXTCNN_VARIANTS)}")
        _check(self.tokenizer in TOKENIZERS, f"unknown tokenizer '{self.tokenizer}'; choose "
               f"one of: {', '.join(TOKENIZERS)}")
        _check(self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}")
        _check(self.lr > 0, f"lr must be above 0, got {self.lr}")
        _check(self.cv is None or self.cv >= 2, f"--cv {self.cv}: cross-validation needs at "
               "least 2 folds (the paper uses 10)")
        _check(0 <= self.dev_fraction < 1, f"dev_fraction must be in [0, 1), got "
               f"{self.dev_fraction}")
        check_calibration_fraction(self.calibration_fraction)
        _check(self.max_length is None or self.max_length >= 1,
               f"max_length must be at least 1 token, got {self.max_length}")
        _check(bool(self.filter_widths) and min(self.filter_widths) >= 1
               and self.feature_maps >= 1, "filter_widths and feature_maps must be >= 1")
        _check(len(set(self.filter_widths)) == len(self.filter_widths),
               f"filter_widths {self.filter_widths} names a width twice; list each width once "
               "and raise feature_maps for more filters of it")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.embedding_dim >= 1, f"embedding_dim must be at least 1, got "
               f"{self.embedding_dim}")
        _check(self.max_norm is None or self.max_norm > 0,
               f"max_norm must be above 0 (or empty: no constraint), got {self.max_norm}")
        from tlkit.choices import VECTOR_FORMATS as FORMATS

        _check(self.vectors_format in (None, *FORMATS), f"unknown vectors format "
               f"'{self.vectors_format}'; choose one of: {', '.join(FORMATS)} (or leave it empty "
               "to guess from the file)")
        _check_common(self)


HEAD_INITS = ("probe", "random")
TEXTCNN_VARIANTS = ("rand", "static", "non-static", "multichannel")

# One row per recipe kind, and the command that trains it.
RECIPE_KINDS: dict[str, type] = {"image": ImageRecipe, "textcnn": TextCNNRecipe}
KIND_COMMANDS: dict[str, str] = {"image": "tlkit finetune", "textcnn": "tlkit textcnn train"}
