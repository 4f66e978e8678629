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
from tlkit.runs import (
    CLASSES_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    new_run_folder,
    published_path,
    run_name,
    write_json,
)
from tlkit.train.fit import fit_stages, save_inference_model
from tlkit.train.stages import StagePlan, compile_for_stage, prepare_stage


@dataclass
class Run:
    """A finished run: its folder, trained model, per-epoch history and metrics."""

    path: Path
    model: Any
    history: pd.DataFrame
    metrics: dict[str, Any]
    class_names: list[str]


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
        def prepare(stage: Stage) -> None:
            plan = prepare_stage(backbone, row, stage, recipe.batchnorm_policy,
                                 recipe.batchnorm_momentum)
            compile_for_stage(model, stage, plan)
            _announce(stage, plan, row)

        history = fit_stages(model, recipe.stages, datasets, folder, prepare=prepare,
                             early_stopping=recipe.early_stopping, class_weight=class_weight)
        seconds = time.perf_counter() - start
        metrics = {split: classification_metrics(images.label_ids(images.split(split)),
                                                 model.predict(datasets[split], verbose=0),
                                                 images.class_names)
                   for split in ("val", "test") if split in datasets}
        metrics["train_seconds"] = round(seconds, 1)
        metrics["skipped_images"] = [{"path": p, "reason": r} for p, r in images.skipped]
        write_json(folder / "metrics.json", metrics)
        save_inference_model(model, folder / MODEL_FILE)
    final = published_path(folder)
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


def _announce(stage: Stage, plan: StagePlan, row: Any) -> None:
    blocks = ("none (backbone frozen)" if plan.backbone_frozen
              else ", ".join(row.block_names[k] for k in plan.trainable_blocks))
    decay = f", lr_decay {stage.lr_decay} per block" if stage.lr_decay < 1 else ""
    print(f"stage '{stage.name}': {stage.epochs} epochs at lr {stage.lr:g}{decay}; "
          f"training backbone blocks: {blocks}", flush=True)
