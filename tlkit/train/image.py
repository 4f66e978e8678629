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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.backbones import Backbone, get_backbone
from tlkit.data.images import (
    ImageData,
    balanced_class_weight,
    check_images,
    make_dataset,
    read_recipe_table,
)
from tlkit.errors import UserError
from tlkit.evaluate import report_after_training
from tlkit.evaluation.metrics import classification_metrics, predictions_table
from tlkit.recipes import ImageRecipe, Stage
from tlkit.runs import PREDICTIONS_FILE, Run, RunWriter, check_destination, new_run_folder, run_name
from tlkit.train.fit import fit_stages


@dataclass
class CheckedImageRun:
    """An image recipe whose model-free checks passed: resolved size, table, destination."""

    recipe: ImageRecipe
    row: Backbone
    table: pd.DataFrame
    name: str


def check_image_run(recipe: ImageRecipe, out: str | Path = "runs", name: str | None = None,
                    data: Any = None) -> CheckedImageRun:
    """Every check that needs no model, in about a second and without TensorFlow.

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
    table = read_recipe_table(recipe, data)
    name = name or run_name(row.name)
    check_destination(out, name)
    return CheckedImageRun(recipe, row, table, name)


def finetune(recipe: ImageRecipe, out: str | Path = "runs", name: str | None = None,
             data: Any = None) -> Run:
    """Fine-tune ``recipe.backbone`` on ``recipe.data`` (or ``data``) and write a run folder.

    Stages run in order, each compiled once after freezing what it does not train. The
    epoch that is best by ``recipe.monitor`` over all stages is kept, evaluated on val and
    test, and saved with preprocessing inside ``model.keras``.

    Example:
        >>> run = finetune(ImageRecipe(data="datasets/shapes"), out="runs")  # doctest: +SKIP
    """
    checked = check_image_run(recipe, out, name, data)
    import keras

    from tlkit.models.image import build_classifier
    from tlkit.weights import build_weighted_backbone

    recipe, row = checked.recipe, checked.row
    images = check_images(recipe, checked.table)
    keras.utils.set_random_seed(recipe.seed)
    backbone = build_weighted_backbone(row.name, recipe.input_size, recipe.weights)
    _check_stages(backbone, row, recipe.stages)
    model = build_classifier(row, backbone, len(images.class_names), recipe.dropout)
    datasets = _datasets(recipe, images)
    with new_run_folder(out, checked.name) as writer:
        writer.write_recipe(recipe)
        writer.write_classes(images.class_names)
        writer.write_table("split.csv", images.table)
        history, seconds = _train(recipe, row, backbone, model, datasets, images, writer)
        metrics, predictions = _evaluate(model, datasets, images)
        metrics["train_seconds"] = round(seconds, 1)
        metrics["skipped_images"] = [{"path": p, "reason": r} for p, r in images.skipped]
        writer.write_json("metrics.json", metrics)
        writer.write_table(PREDICTIONS_FILE, predictions)
        writer.save_model(model)
    report_after_training(writer.final)
    return Run(path=writer.final, kind="image", recipe=recipe, class_names=images.class_names,
               metrics=metrics, model=model, history=history)


def _evaluate(model: Any, datasets: dict[str, Any], images: ImageData
              ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of the kept weights on val and test, and one prediction row per image."""
    metrics, tables = {}, []
    for split in ("val", "test"):
        if split in datasets:
            frame = images.split(split)
            labels = images.label_ids(frame)
            probabilities = model.predict(datasets[split], verbose=0)
            metrics[split] = classification_metrics(labels, probabilities, images.class_names)
            tables.append(predictions_table(frame["path"], labels, probabilities,
                                            images.class_names, split))
    return metrics, pd.concat(tables, ignore_index=True)


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


def _train(recipe: ImageRecipe, row: Backbone, backbone: Any, model: Any,
           datasets: dict[str, Any], images: ImageData, writer: RunWriter
           ) -> tuple[pd.DataFrame, float]:
    from tlkit.train.stages import compile_for_stage, prepare_stage

    class_weight = (balanced_class_weight(images.label_ids(images.split("train")),
                                          len(images.class_names))
                    if recipe.class_weight == "balanced" else None)

    def prepare(stage: Stage) -> None:
        plan = prepare_stage(backbone, row, stage, recipe.batchnorm_policy,
                             recipe.batchnorm_momentum)
        compile_for_stage(model, stage, plan)
        _announce(stage, plan, row)

    start = time.perf_counter()
    history = fit_stages(model, recipe.stages, datasets, writer.path, prepare=prepare,
                         monitor=recipe.monitor, early_stopping=recipe.early_stopping,
                         class_weight=class_weight)
    return history, time.perf_counter() - start


def _datasets(recipe: ImageRecipe, images: ImageData) -> dict[str, Any]:
    datasets = {}
    for split in ("train", "val", "test"):
        frame = images.split(split)
        if frame.empty:
            continue
        training = split == "train"
        datasets[split] = make_dataset(
            frame["path"].tolist(), images.label_ids(frame), recipe.input_size,
            recipe.batch_size, training=training, augment=recipe.augment if training else None,
            cache=recipe.cache, seed=recipe.seed)
    return datasets


def _announce(stage: Stage, plan: Any, row: Backbone) -> None:
    blocks = ("none (backbone frozen)" if plan.backbone_frozen
              else ", ".join(row.block_names[k] for k in plan.trainable_blocks))
    decay = f", lr_decay {stage.lr_decay} per block" if stage.lr_decay < 1 else ""
    print(f"stage '{stage.name}': {stage.epochs} epochs at lr {stage.lr:g}{decay}; "
          f"training backbone blocks: {blocks}", flush=True)
