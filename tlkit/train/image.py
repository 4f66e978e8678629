"""The image job: fine-tune a backbone on labelled images and write a run folder.

Everything that needs no model (backbone, sizes, data table, destination) is checked by
``check_image_run`` before TensorFlow loads; then stages run in order, each compiled once.

Example:
    >>> import tlkit
    >>> from tlkit.recipes import ImageRecipe, two_stage
    >>> run = tlkit.finetune(ImageRecipe(backbone="efficientnet_lite0", data="datasets/shapes",
    ...                                  stages=two_stage(head_epochs=2, finetune_epochs=1)),
    ...                      out="runs")  # doctest: +SKIP
    >>> run.metrics["test"]["accuracy"]  # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tlkit.backbones import Backbone, get_backbone
from tlkit.data.images import (
    ImageData,
    check_images,
    make_dataset,
    read_image_table,
    read_recipe_table,
)
from tlkit.data.labels import LabelFormat
from tlkit.devices import TrainingSetup
from tlkit.errors import UserError
from tlkit.progress import phase, recording, say
from tlkit.recipes import ImageRecipe, Stage
from tlkit.runs import (
    CACHE_FOLDER,
    Run,
    RunWriter,
    check_destination,
    partial_path,
    read_split,
    run_name,
    unlock_run,
)
from tlkit.seeds import EpochClock
from tlkit.train.fit import StageFit, fit_stages
from tlkit.train.job import Job, run_job
from tlkit.train.workers import worker_out

if TYPE_CHECKING:
    from tlkit.evaluation.probe import LinearProbe


@dataclass
class CheckedImageRun:
    """An image recipe whose model-free checks passed: resolved size, table, destination.

    Example:
        >>> import tempfile
        >>> data = Path(tempfile.mkdtemp())
        >>> for label in ("cat", "dog"):
        ...     (data / label).mkdir()
        ...     for i in range(3): (data / label / f"{i}.png").touch()
        >>> checked = check_image_run(ImageRecipe(backbone="tiny_cnn", data=str(data)),
        ...                           out=tempfile.mkdtemp())
        >>> checked.recipe.input_size, checked.table["label"].tolist()  # the row's default size
        (32, ['cat', 'cat', 'cat', 'dog', 'dog', 'dog'])
    """

    recipe: ImageRecipe
    row: Backbone
    table: pd.DataFrame
    name: str


def check_image_run(recipe: ImageRecipe, out: str | Path = "runs", name: str | None = None,
                    data: Any = None, resume: bool = False) -> CheckedImageRun:
    """Every check that needs no model, in about a second and without TensorFlow.

    A resumed run reads its images and splits back from its own ``split.csv``. Image paths
    are made absolute, so ``split.csv`` and ``predictions.csv`` work from any folder.

    Example:
        >>> check_image_run(ImageRecipe(data="no/such/folder"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: data path 'no/such/folder' does not exist; ...
    """
    row = get_backbone(recipe.backbone)
    recipe = dataclasses.replace(recipe, input_size=recipe.input_size or row.default_size)
    if recipe.weights not in ("imagenet", "none") and not Path(recipe.weights).is_file():
        raise UserError(f"weights file '{recipe.weights}' does not exist; pass imagenet, none "
                        "or a path to a weights file")
    name = name or run_name(row.name)
    final = check_destination(worker_out(out), name, resume)
    with ExitStack() as on_error:
        on_error.callback(unlock_run, partial_path(final))  # a resume's check locked it
        table = (_resumed_table(final, out, recipe) if resume
                 else read_recipe_table(recipe, data))
        on_error.pop_all()
    table["path"] = [os.path.abspath(path) for path in table["path"]]
    return CheckedImageRun(recipe, row, table, name)


def _resumed_table(final: Path, out: str | Path, recipe: ImageRecipe) -> pd.DataFrame:
    """The images and splits of the unfinished run ``final``, from its ``split.csv``."""
    split = read_split(partial_path(final))
    if split is None:
        raise UserError(f"the unfinished run '{final.name}' stopped before it wrote its split; "
                        f"remove it with `tlkit runs {out} --remove-unfinished` and start "
                        "again")
    # label sets are written joined by labels.TABLE_SEP, whatever the data's separator was
    return read_image_table(split, "path", "label", labels=LabelFormat.of(recipe).written)


def finetune(recipe: ImageRecipe, out: str | Path = "runs", name: str | None = None,
             data: Any = None, resume: bool = False) -> Run:
    """Fine-tune ``recipe.backbone`` on ``recipe.data`` (or ``data``) and write a run folder.

    Stages run in order, each compiled once after freezing what it does not train. Each
    stage offers its best epoch by ``recipe.monitor`` or its last (``Stage.keep``); the
    offer that beats every earlier stage's is kept, evaluated on val and test, and saved with
    preprocessing inside ``model.keras``. With ``resume``, the unfinished
    run ``out/name`` (killed or interrupted) continues from its last completed epoch.

    Example:
        >>> run = finetune(ImageRecipe(data="datasets/shapes"), out="runs")  # doctest: +SKIP
    """
    with recording():  # the scan's time joins the run's phases
        return run_job(ImageJob(check_image_run(recipe, out, name, data, resume), out), resume)


class ImageJob(Job):
    """The image kind's part of the lifecycle: images, a backbone with a head, stages.

    Example:
        >>> import tempfile
        >>> data = Path(tempfile.mkdtemp())
        >>> for label in ("cat", "dog"):
        ...     (data / label).mkdir()
        ...     for i in range(3): (data / label / f"{i}.png").touch()
        >>> job = ImageJob(check_image_run(ImageRecipe(backbone="tiny_cnn", data=str(data)),
        ...                                out=tempfile.mkdtemp(), name="r"), "runs")
        >>> job.kind, job.name, job.labels()
        ('image', 'r', ['cat', 'cat', 'cat', 'dog', 'dog', 'dog'])
    """

    kind = "image"

    def __init__(self, checked: CheckedImageRun, out: str | Path) -> None:
        from tlkit.tasks import task_of

        self.checked, self.recipe, self.row = checked, checked.recipe, checked.row
        self.task = task_of(checked.recipe)
        self.out, self.name = Path(out), checked.name
        self.probe: dict[str, Any] = {}
        self.lr_found: list[dict[str, Any]] = []  # stages with lr: auto, what the finder chose
        self.head_init = "random"  # or "probe", when the probe's weights started the head

    @property
    def class_names(self) -> list[str]:
        return self.images.class_names

    def build(self, setup: TrainingSetup) -> None:
        from tlkit.models.image import build_classifier
        from tlkit.weights import build_weighted_backbone

        recipe, row = self.recipe, self.row
        self.images = check_images(recipe, self.checked.table)
        with setup.strategy.scope():
            self.backbone = build_weighted_backbone(row.name, recipe.input_size, recipe.weights)
            _check_stages(self.backbone, row, recipe.stages)
            self.model = build_classifier(row, self.backbone, len(self.images.class_names),
                                          recipe.dropout, self.task.activation)
        self.clock = EpochClock(recipe.seed)
        self.datasets = _datasets(recipe, self.images, self.clock,
                                  recipe.batch_size * setup.replicas)

    def write_inputs(self, writer: RunWriter) -> None:
        writer.write_split(self.images.table)  # a resume reads its images and splits back

    def fit(self, folder: Path, setup: TrainingSetup) -> pd.DataFrame:
        """Every stage (head-only stages on cached features), after the linear probe."""
        from tlkit.train.heads import balanced_weights

        recipe, row, images, model = self.recipe, self.row, self.images, self.model
        class_weight, label_weights = (
            balanced_weights(self.task, images.targets(images.split("train")),
                             len(images.class_names))
            if recipe.class_weight == "balanced" else (None, None))
        features = FrozenFeatures(recipe, row, model, images,
                                  Path(recipe.cache_dir or folder / CACHE_FOLDER), self.clock,
                                  setup.strategy)
        probe = features.probe() if recipe.probe else None
        self.probe = probe.summary if probe is not None else {}
        if probe is not None and probe.summary["val"] is not None:
            say(f"linear probe on the frozen features: val {self.probe['metric']} "
                f"{self.probe['val']:.3f} (C={self.probe['C']:g})")
        if probe is not None and recipe.head_init == "probe":
            features.start_head_from(probe)
            self.head_init = "probe"

        def prepare(stage: Stage) -> StageFit | None:
            return self._prepare(stage, setup, features, folder, label_weights)

        history = fit_stages(model, recipe.stages, self.datasets, folder, prepare=prepare,
                             monitor=recipe.monitor, early_stopping=recipe.early_stopping,
                             class_weight=class_weight, clock=self.clock,
                             jit_compile=recipe.jit_compile)
        if not recipe.cache_dir:  # the run's own cache served its purpose; keep the folder small
            shutil.rmtree(folder / CACHE_FOLDER, ignore_errors=True)
        return history

    def _prepare(self, stage: Stage, setup: TrainingSetup, features: FrozenFeatures,
                 folder: Path, label_weights: np.ndarray | None) -> StageFit | None:
        """Freeze and compile for ``stage``; what it fits (None: the model on the image
        streams). Head-only stages fit the head on cached features; soft targets (label
        smoothing of the training targets, or MixUp/CutMix on the image stream) need
        one-hot streams."""
        from tlkit.data.images import soft_label_stream
        from tlkit.train.heads import head_loss, head_metrics
        from tlkit.train.stages import compile_for_stage, prepare_stage

        recipe, task = self.recipe, self.task
        if stage.lr == "auto":
            from tlkit.train.lr_find import find_stage_rate

            self.lr_found.append(find_stage_rate(
                self, setup, stage, Path(recipe.cache_dir or folder / CACHE_FOLDER)))
        plan = prepare_stage(self.backbone, self.row, stage, recipe.batchnorm_policy,
                             recipe.batchnorm_momentum)
        cached = plan.backbone_frozen and recipe.feature_cache
        augment = None if cached else recipe.augment  # batch mixing needs images
        mixing = augment is not None and bool(augment.mixup or augment.cutmix)
        soft = mixing or stage.label_smoothing > 0
        with setup.strategy.scope():
            compile_for_stage(features.head if cached else self.model, stage, plan,
                              head_loss(task, label_weights, soft), head_metrics(task))
        _announce(stage, plan, self.row, cached)
        fitting = (features.stage_fit() if cached
                   else StageFit(self.model, self.datasets["train"], self.datasets.get("val")))
        if not soft:
            return fitting if cached else None
        classes, multi = len(self.images.class_names), task.multi_label
        return StageFit(fitting.model,
                        soft_label_stream(fitting.train, classes, augment, recipe.seed, multi,
                                          stage.label_smoothing),
                        None if fitting.val is None
                        else soft_label_stream(fitting.val, classes, None, multi_label=multi))

    def held_out(self, split: str) -> tuple[Any, list[str], np.ndarray] | None:
        frame = self.images.split(split)
        if frame.empty:
            return None
        return self.model, frame["path"].tolist(), self.images.targets(frame)

    def extras(self) -> dict[str, Any]:
        return {"probe": self.probe, "head_init": self.head_init,
                **({"lr_found": self.lr_found} if self.lr_found else {}),
                "skipped_images": [{"path": p, "reason": r} for p, r in self.images.skipped]}

    def save(self, writer: RunWriter) -> Any:
        writer.save_model(self.model)
        return self.model

    def sizes(self) -> dict[str, int]:
        return {split: len(self.images.split(split)) for split in ("train", "val")}

    def labels(self) -> list[str]:
        return self.checked.table["label"].astype(str).tolist()

    def fold(self, train_rows: np.ndarray, test_rows: np.ndarray) -> ImageJob:
        """This job tested on ``test_rows``; of the others, its val images still watch."""
        table = self.checked.table.copy()
        table["split"] = table["split"].replace({"test": "train"})
        table.loc[table.index[test_rows], "split"] = "test"
        table = table.iloc[np.sort(np.concatenate([train_rows, test_rows]))]
        return ImageJob(dataclasses.replace(self.checked, table=table), self.out)


def _check_stages(backbone: Any, row: Backbone, stages: list[Stage]) -> None:
    """Resolve every stage's ``train_from`` on the built backbone before any stage trains."""
    from tlkit.backbones import block_of_layers
    from tlkit.train.stages import first_trainable_block

    layer_blocks = block_of_layers(backbone, row)
    for stage in stages:
        try:
            first_trainable_block(row, stage.train_from, layer_blocks)
        except UserError as error:
            raise UserError(f"stage '{stage.name}': {error}") from error


class FrozenFeatures:
    """Each split's frozen-backbone features, read from the feature cache (made on first use).

    The feature model and the head share the classifier's layers, so a head fitted on these
    features is the classifier's head. The cache key includes the backbone's weights, so a
    head stage after an unfrozen one computes fresh features.

    Example:
        >>> from tlkit.backbones import build_backbone
        >>> from tlkit.models.image import build_classifier
        >>> model = build_classifier(row := get_backbone("tiny_cnn"), build_backbone("tiny_cnn"), 2)
        >>> images = ImageData(pd.DataFrame({"path": ["a.png", "b.png"], "label": ["dog", "cat"],
        ...                                  "split": "train"}), ["cat", "dog"], [])
        >>> frozen = FrozenFeatures(ImageRecipe(backbone="tiny_cnn"), row, model, images,
        ...                         Path("cache"), EpochClock(0), model.distribute_strategy)
        >>> frozen.feature_model.output_shape, frozen.head.output_shape, frozen.labels("train")
        ((None, 32), (None, 2), array([1, 0], dtype=int32))
    """

    def __init__(self, recipe: ImageRecipe, row: Backbone, model: Any, images: ImageData,
                 cache_dir: Path, clock: EpochClock, strategy: Any) -> None:
        import keras

        from tlkit.train.cache import split_classifier

        self.recipe, self.row, self.images, self.cache_dir = recipe, row, images, cache_dir
        self.clock = clock
        # one global batch per step, as in end-to-end stages: each replica gets batch_size
        self.global_batch = recipe.batch_size * strategy.num_replicas_in_sync
        self.feature_model, head = split_classifier(model)
        # The head trains under the run's strategy; the feature model stays outside it, so
        # each worker computes its own cache (under MultiWorkerMirroredStrategy,
        # predict_on_batch would gather every worker's copy of the same batch).
        with strategy.scope():
            self.head = keras.Model(head.inputs, head.outputs, name=head.name)

    def cache(self, split: str, views: int = 1) -> Any:
        """The features of one split (``views`` augmented views per image when above 1)."""
        from tlkit.train.cache import build_feature_cache

        recipe = self.recipe
        return build_feature_cache(
            self.feature_model, self.images.split(split)["path"].tolist(), recipe.batch_size,
            self.cache_dir, {"backbone": self.row.name, "weights": recipe.weights,
                             "preprocess": self.row.preprocess},
            augment=recipe.augment if views > 1 else None, views=views, seed=recipe.seed,
            name=f"cache {split}")

    def labels(self, split: str) -> Any:
        """Targets of one split (class ids, or a label-set indicator matrix), in the cache's
        row order."""
        return self.images.targets(self.images.split(split))

    def stage_fit(self) -> StageFit:
        """The head and its cached train and val streams, for a head-only stage."""
        from tlkit.train.cache import head_dataset

        recipe = self.recipe
        train = head_dataset(self.cache("train", recipe.augment_views), self.labels("train"),
                             self.global_batch, shuffle=True, seed=recipe.seed,
                             clock=self.clock)
        has_val = not self.images.split("val").empty
        val = (head_dataset(self.cache("val"), self.labels("val"), self.global_batch)
               if has_val else None)
        return StageFit(self.head, train, val)

    def probe(self) -> LinearProbe | None:
        """A logistic-regression probe on the train features, C chosen on val, scored on test
        (label sets: one-vs-rest, chosen and scored by mAP); None without a val split.

        Its ``summary`` goes into ``metrics.json``; its weights can start the head."""
        from tlkit.evaluation.probe import LinearProbe, fit_linear_probe, one_vs_rest_probe

        splits = [s for s in ("val", "test") if not self.images.split(s).empty]
        if "val" not in splits:
            return None
        x = {split: self.cache(split).view(0) for split in ["train", *splits]}
        y = {split: self.labels(split) for split in x}
        with phase("probe", detail="logistic regression on the frozen features"):
            if self.images.label_format.multi:
                fitted = one_vs_rest_probe(x["train"], y["train"], x["val"], y["val"],
                                           x.get("test"), y.get("test"))
                summary = {"metric": "mAP", "val": fitted.summary["val_map"],
                           "test": fitted.summary["test_map"]}
            else:
                fitted = fit_linear_probe(x["train"], y["train"], x["val"], y["val"],
                                          x.get("test"), y.get("test"),
                                          n_classes=len(self.images.class_names))
                summary = {"metric": "accuracy", "val": fitted.summary["val_accuracy"],
                           "test": fitted.summary["test_accuracy"]}
        summary.update({key: fitted.summary[key] for key in ("C", "n_features", "fit_seconds")})
        return LinearProbe(summary, fitted.coef, fitted.intercept)

    def start_head_from(self, probe: LinearProbe) -> None:
        """Give the head's output layer the probe's weights (linear probing, then training:
        LP-FT, Kumar et al. 2022): the head stage starts at the probe's solution rather than
        at random, so fine-tuning later starts from a head that already fits the features."""
        layer = self.head.get_layer("predictions")
        kernel, bias = layer.get_weights()
        layer.set_weights([probe.coef.T.astype(kernel.dtype), probe.intercept.astype(bias.dtype)])


def _datasets(recipe: ImageRecipe, images: ImageData, clock: EpochClock, batch_size: int
              ) -> dict[str, Any]:
    datasets = {}
    for split in ("train", "val", "test"):
        frame = images.split(split)
        if frame.empty:
            continue
        training = split == "train"
        datasets[split] = make_dataset(
            frame["path"].tolist(), images.targets(frame), recipe.input_size,
            batch_size, training=training, augment=recipe.augment if training else None,
            cache=recipe.cache, seed=recipe.seed, clock=clock)
    return datasets


def _announce(stage: Stage, plan: Any, row: Backbone, cached: bool) -> None:
    blocks = ("none (backbone frozen)" if plan.backbone_frozen
              else ", ".join(row.block_names[k] for k in plan.trainable_blocks))
    decay = f", lr_decay {stage.lr_decay} per block" if stage.lr_decay < 1 else ""
    how = "; the head trains on cached features" if cached else ""
    # early stopping may end a stage that offers its best epoch; one kept at its last runs all
    bound = "" if stage.keep == "last" else "up to "
    epochs = f"{bound}{stage.epochs} epoch{'s' * (stage.epochs != 1)}"
    say(f"stage '{stage.name}': {epochs} at lr {stage.lr:g}{decay}; "
        f"training backbone blocks: {blocks}{how}")
