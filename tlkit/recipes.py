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

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union  # Union: to recognise typing.Union hints

import yaml

from tlkit.errors import UserError
from tlkit.optimizers import OPTIMIZERS

BATCHNORM_POLICIES = ("auto", "frozen", "trainable")


@dataclass
class Stage:
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
    lr: float = 1e-3
    train_from: str | int | None = None
    lr_decay: float = 1.0
    optimizer: str = "adam"
    weight_decay: float = 0.0


@dataclass
class Augment:
    """Random augmentation of the training stream (never of validation or test images)."""

    flip: bool = True
    rotation: float = 0.05  # fraction of a full turn
    zoom: float = 0.1
    contrast: float = 0.1


@dataclass
class ImageRecipe:
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
    path_column: str = "path"
    label_column: str = "label"
    seed: int = 42
    dropout: float = 0.2
    batchnorm: str = "auto"  # auto: frozen with pretrained weights, trainable with none
    augment: Augment | None = field(default_factory=Augment)
    class_weight: str | None = None  # "balanced" or None
    cache: bool = False
    strict: bool = False
    early_stopping: int | None = 5  # patience in epochs, None: off
    stages: list[Stage] = field(default_factory=lambda: two_stage())

    def __post_init__(self) -> None:
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


def feature_extraction(epochs: int = 10, lr: float = 1e-3) -> list[Stage]:
    """The backbone stays frozen; only the new head trains.

    Example:
        >>> feature_extraction(epochs=3)[0].train_from is None
        True
    """
    return [Stage(name="head", epochs=epochs, lr=lr)]


def two_stage(head_epochs: int = 5, finetune_epochs: int = 5, lr: float = 1e-3,
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


# One row per named schedule; `--schedule NAME` picks one.
SCHEDULES: dict[str, Any] = {
    "feature-extraction": feature_extraction,
    "two-stage": two_stage,
    "gradual-unfreezing": gradual_unfreezing,
    "discriminative": discriminative,
    "full": full_finetuning,
}


def validate_image_recipe(recipe: ImageRecipe) -> None:
    """Check the values a type check cannot (choices and ranges); raise a UserError."""
    if recipe.batchnorm not in BATCHNORM_POLICIES:
        raise UserError(f"batchnorm '{recipe.batchnorm}' is not one of {BATCHNORM_POLICIES}")
    if recipe.class_weight not in (None, "balanced"):
        raise UserError(f"class_weight '{recipe.class_weight}' must be 'balanced' or empty")
    if not 0 <= recipe.val_fraction < 1 or not 0 <= recipe.test_fraction < 1:
        raise UserError("val_fraction and test_fraction must be in [0, 1)")
    if recipe.val_fraction + recipe.test_fraction >= 1:
        raise UserError("val_fraction + test_fraction must leave images to train on")
    if not recipe.stages:
        raise UserError("a recipe needs at least one stage")
    for stage in recipe.stages:
        if stage.optimizer not in OPTIMIZERS:
            raise UserError(f"stage '{stage.name}': optimizer '{stage.optimizer}' is not one of "
                            f"{', '.join(OPTIMIZERS)}")
        if stage.epochs < 1 or stage.lr <= 0 or not 0 < stage.lr_decay <= 1:
            raise UserError(f"stage '{stage.name}': epochs must be >= 1, lr > 0 and "
                            "lr_decay in (0, 1]")


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """A plain dict of the recipe, ready for YAML or JSON."""
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Any, path: str | Path | None = None) -> str:
    """The recipe as YAML text (``kind`` first, then its fields); written to ``path`` if given.

    Example:
        >>> dump_recipe(ImageRecipe()).splitlines()[0]
        'kind: image'
    """
    text = yaml.safe_dump({"kind": _kind_of(type(recipe)), **recipe_to_dict(recipe)},
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
    file = Path(path)
    if not file.is_file():
        raise UserError(f"recipe file '{file}' does not exist")
    return load_recipe_text(file.read_text(encoding="utf-8"), overrides, source=str(file))


def load_recipe_text(text: str, overrides: list[str] | None = None,
                     source: str = "recipe") -> Any:
    """Like ``load_recipe`` for YAML text."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{source} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of recipe fields")
    kind = data.pop("kind", "image")
    cls = RECIPE_KINDS.get(kind)
    if cls is None:
        raise UserError(f"{source}: unknown kind '{kind}'; choose one of: "
                        f"{', '.join(RECIPE_KINDS)}")
    return build_recipe(cls, data, overrides, source)


def build_recipe(cls: type, data: dict[str, Any], overrides: list[str] | None = None,
                 source: str = "recipe") -> Any:
    """Make a ``cls`` recipe from a dict plus ``key=value`` overrides, checking keys and types.

    Example:
        >>> build_recipe(ImageRecipe, {"backbone": "vgg16"}, ["stages.0.epochs=2"]).stages[0].epochs
        2
    """
    data = {key: value for key, value in data.items()}
    if "stages" not in data and any(o.startswith("stages.") for o in overrides or []):
        data["stages"] = recipe_to_dict(cls())["stages"]
    for override in overrides or []:
        _apply_override(data, override)
    return _from_dict(cls, data, source)


def apply_overrides(recipe: Any, overrides: list[str]) -> Any:
    """A copy of ``recipe`` with ``key=value`` overrides applied and checked."""
    return build_recipe(type(recipe), recipe_to_dict(recipe), overrides)


def _apply_override(data: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep:
        raise UserError(f"override '{override}' must look like key=value")
    value = yaml.safe_load(raw) if raw.strip() else None
    parts = key.strip().split(".")
    target: Any = data
    for part in parts[:-1]:
        if isinstance(target, list):
            if not part.isdigit() or int(part) >= len(target):
                raise UserError(f"override '{override}': no list item {part}")
            target = target[int(part)]
        else:
            target = target.setdefault(part, {})
    if isinstance(target, list):
        raise UserError(f"override '{override}' must end in a field name")
    target[parts[-1]] = value


def _kind_of(cls: type) -> str:
    for kind, recipe_cls in RECIPE_KINDS.items():
        if recipe_cls is cls:
            return kind
    raise TypeError(f"{cls.__name__} is not a registered recipe kind")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
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
        return _from_dict(hint, value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _is_float(value):
        return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
    if hint in (int, str, bool) and type(value) is hint:
        return value
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
    return "empty" if hint is type(None) else getattr(hint, "__name__", str(hint))


@dataclass
class TextCNNRecipe:
    """A Kim (2014) sentence CNN run; ``tlkit.train_textcnn(recipe, out)`` runs it.

    Defaults are the paper's: widths 3/4/5 with 100 maps, dropout 0.5, max-norm 3, batch 50,
    Adadelta (rate 1.0, rho 0.95), 25 epochs, 10% of training held out as dev when no dev
    file is given; the best dev-loss epoch is kept. ``data`` is a CSV/TSV, a folder of
    ``<class>.txt`` files, or a list of Kim's one-file-per-class files. ``cv`` runs k-fold
    cross-validation on ``data`` instead of a train/test split.

    Example:
        >>> TextCNNRecipe(variant="static", vectors="glove.6B.300d.txt").filter_widths
        [3, 4, 5]
    """

    data: str | list[str] | None = None
    test: str | None = None
    dev: str | None = None
    text_column: str = "text"
    label_column: str = "label"
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
    cv: int | None = None
    seed: int = 42
    early_stopping: int | None = None

    def __post_init__(self) -> None:
        if self.variant not in TEXTCNN_VARIANTS:
            raise UserError(f"unknown variant '{self.variant}'; choose one of: "
                            f"{', '.join(TEXTCNN_VARIANTS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("epochs and batch_size must be >= 1 and lr > 0")
        if self.cv is not None and self.cv < 2:
            raise UserError(f"--cv {self.cv}: cross-validation needs at least 2 folds "
                            "(the paper uses 10)")


TEXTCNN_VARIANTS = ("rand", "static", "non-static", "multichannel")

# One row per recipe kind.
RECIPE_KINDS: dict[str, type] = {"image": ImageRecipe, "textcnn": TextCNNRecipe}
