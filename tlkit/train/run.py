"""Run an image recipe end to end: data, model, stages, evaluation, run folder.

Example:
    >>> import tlkit
    >>> from tlkit.recipes import ImageRecipe, two_stage
    >>> run = tlkit.finetune(ImageRecipe(backbone="efficientnet_lite0", data="datasets/shapes",
    ...                                  stages=two_stage(head_epochs=2, finetune_epochs=1)),
    ...                      out="runs")  # doctest: +SKIP
    >>> run.metrics["test"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.backbones import check_input_size, get_backbone
from tlkit.data.images import (
    ImageData,
    balanced_class_weight,
    load_image_data,
    make_dataset,
)
from tlkit.evaluation.metrics import classification_metrics
from tlkit.recipes import ImageRecipe, Stage, dump_recipe
from tlkit.runs import CLASSES_FILE, MODEL_FILE, RECIPE_FILE, new_run_folder, run_name, write_json
from tlkit.train.stages import compile_for_stage, prepare_stage


@dataclass
class Run:
    """A finished run: its folder, trained model, per-epoch history and metrics."""

    path: Path
    model: Any
    history: pd.DataFrame
    metrics: dict[str, Any]
    class_names: list[str]


def progress_verbosity() -> int:
    """Keras's progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def finetune(recipe: ImageRecipe, out: str | Path = "runs", name: str | None = None,
             data: Any = None) -> Run:
    """Fine-tune ``recipe.backbone`` on ``recipe.data`` (or ``data``) and write a run folder.

    Stages run in order, each compiled once after freezing what it does not train. The
    best weights (by validation loss, over all stages) are kept, evaluated on val and test,
    and saved with preprocessing inside ``model.keras``.

    Example:
        >>> run = finetune(ImageRecipe(data="datasets/shapes"), out="runs")  # doctest: +SKIP
    """
    import keras

    from tlkit.models.image import build_classifier
    from tlkit.weights import build_weighted_backbone

    row = get_backbone(recipe.backbone)
    recipe = dataclasses.replace(recipe, input_size=recipe.input_size or row.default_size)
    size = recipe.input_size
    check_input_size(row, size)
    images = load_image_data(recipe, data)
    keras.utils.set_random_seed(recipe.seed)
    backbone = build_weighted_backbone(row.name, size, recipe.weights)
    model = build_classifier(row, backbone, len(images.class_names), recipe.dropout)
    datasets = _datasets(recipe, images, size)
    class_weight = (balanced_class_weight(images.label_ids(images.split("train")),
                                          len(images.class_names))
                    if recipe.class_weight == "balanced" else None)

    with new_run_folder(out, name or run_name(row.name)) as folder:
        dump_recipe(recipe, folder / RECIPE_FILE)
        write_json(folder / CLASSES_FILE, images.class_names)
        images.table.to_csv(folder / "split.csv", index=False)
        start = time.perf_counter()
        history = _train_stages(model, backbone, row, recipe, datasets, class_weight, folder)
        seconds = time.perf_counter() - start
        metrics = {split: classification_metrics(images.label_ids(images.split(split)),
                                                 model.predict(datasets[split], verbose=0),
                                                 images.class_names)
                   for split in ("val", "test") if split in datasets}
        metrics["train_seconds"] = round(seconds, 1)
        metrics["skipped_images"] = [{"path": p, "reason": r} for p, r in images.skipped]
        write_json(folder / "metrics.json", metrics)
        # An uncompiled view of the same layers is saved: the file then holds no optimizer
        # state (a layerwise optimizer would need tlkit to load) and stays inference-only.
        keras.Model(model.inputs, model.outputs, name=model.name).save(folder / MODEL_FILE)
    final = Path(out) / folder.name.removeprefix(".").removesuffix(".partial")
    return Run(final, model, history, metrics, images.class_names)


def _datasets(recipe: ImageRecipe, images: ImageData, size: int) -> dict[str, Any]:
    datasets = {}
    for split in ("train", "val", "test"):
        frame = images.split(split)
        if frame.empty:
            continue
        training = split == "train"
        datasets[split] = make_dataset(
            frame["path"].tolist(), images.label_ids(frame), size, recipe.batch_size,
            training=training, augment=recipe.augment if training else None,
            cache=recipe.cache, seed=recipe.seed)
    return datasets


def _train_stages(model: Any, backbone: Any, row: Any, recipe: ImageRecipe,
                  datasets: dict[str, Any], class_weight: dict[int, float] | None,
                  folder: Path) -> pd.DataFrame:
    import keras

    monitor = "val_loss" if "val" in datasets else "loss"
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    best_path = checkpoints / "best.weights.h5"
    best: float | None = None
    epoch = 0
    frames = []
    for stage in recipe.stages:
        plan = prepare_stage(backbone, row, stage, recipe.batchnorm_policy)
        compile_for_stage(model, stage, plan)
        best_checkpoint = keras.callbacks.ModelCheckpoint(
            best_path, monitor=monitor, save_best_only=True, save_weights_only=True,
            initial_value_threshold=best)
        callbacks = [
            best_checkpoint,
            keras.callbacks.ModelCheckpoint(checkpoints / "last.weights.h5",
                                            save_weights_only=True),
            keras.callbacks.CSVLogger(folder / "history.csv", append=True),
            keras.callbacks.TensorBoard(folder / "logs"),
        ]
        if recipe.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=monitor, patience=recipe.early_stopping, restore_best_weights=True))
        _announce(stage, plan, row)
        fitted = model.fit(datasets["train"], validation_data=datasets.get("val"),
                           initial_epoch=epoch, epochs=epoch + stage.epochs,
                           class_weight=class_weight, callbacks=callbacks, shuffle=False,
                           verbose=progress_verbosity())
        frame = pd.DataFrame(fitted.history)
        frame.insert(0, "epoch", fitted.epoch)
        frame.insert(1, "stage", stage.name)
        frames.append(frame)
        epoch += len(fitted.epoch)
        best = best_checkpoint.best
    model.load_weights(best_path)
    return pd.concat(frames, ignore_index=True)


def _announce(stage: Stage, plan: Any, row: Any) -> None:
    blocks = ("none (backbone frozen)" if plan.backbone_frozen
              else ", ".join(row.block_names[k] for k in plan.trainable_blocks))
    decay = f", lr_decay {stage.lr_decay} per block" if stage.lr_decay < 1 else ""
    print(f"stage '{stage.name}': {stage.epochs} epochs at lr {stage.lr:g}{decay}; "
          f"training backbone blocks: {blocks}", flush=True)
