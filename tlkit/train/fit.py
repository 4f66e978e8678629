"""The stage loop every job shares: compile once per stage, fit with Keras callbacks.

A stage may fit another model than the one the run saves: a head trained on cached
features shares its layers with the classifier, and the checkpoints always hold the
classifier's weights.

Example:
    >>> history = fit_stages(model, stages, datasets, folder,
    ...                      prepare=lambda stage: model.compile(...))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.recipes import Stage
from tlkit.train.epochs import EpochClock, epoch_seeds


def progress_verbosity() -> int:
    """Keras's progress bar on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stdout.isatty() else 2


def monitored(monitor: str, has_val: bool) -> tuple[str, str]:
    """The metric to watch and its mode; without a validation split, its training twin.

    Example:
        >>> monitored("val_accuracy", has_val=True), monitored("val_loss", has_val=False)
        (('val_accuracy', 'max'), ('loss', 'min'))
    """
    name = monitor if has_val else monitor.removeprefix("val_")
    return name, "min" if name.endswith("loss") else "max"


@dataclass
class StageFit:
    """What one stage fits: a model sharing the run model's layers, and its data streams."""

    model: Any
    train: Any
    val: Any = None


def _checkpoint_of(target: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``ModelCheckpoint`` that saves ``target``'s weights whatever model ``fit`` trains."""
    import keras

    class Checkpoint(keras.callbacks.ModelCheckpoint):
        def set_model(self, model: Any) -> None:
            super().set_model(target)

    return Checkpoint(*args, **kwargs)


def fit_stages(model: Any, stages: list[Stage], datasets: dict[str, Any], folder: Path, *,
               prepare: Callable[[Stage], StageFit | None], monitor: str = "val_loss",
               early_stopping: int | None = None, class_weight: dict[int, float] | None = None,
               clock: EpochClock | None = None, verbose: int | None = None) -> pd.DataFrame:
    """Train ``model`` stage by stage; keep the best weights by ``monitor`` over all stages.

    ``prepare(stage)`` sets what trains and compiles: once per stage, because Keras reads
    ``trainable`` at compile time. It returns what the stage fits, or None for ``model`` on
    ``datasets["train"]`` and ``datasets["val"]``. Writes
    ``checkpoints/best.weights.h5``, ``checkpoints/last.weights.h5``, ``history.csv`` (one
    row per epoch, with its ``stage``) and TensorBoard ``logs/`` into ``folder``.
    """
    import keras

    monitor, mode = monitored(monitor, "val" in datasets)
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    best_path = checkpoints / "best.weights.h5"
    best: float | None = None
    epoch = 0
    frames = []
    for stage in stages:
        fitting = prepare(stage) or StageFit(model, datasets["train"], datasets.get("val"))
        best_checkpoint = _checkpoint_of(
            model, best_path, monitor=monitor, mode=mode, save_best_only=True,
            save_weights_only=True, initial_value_threshold=best)
        callbacks = [
            best_checkpoint,
            _checkpoint_of(model, checkpoints / "last.weights.h5", save_weights_only=True),
            keras.callbacks.CSVLogger(folder / "history.csv", append=True),
            keras.callbacks.TensorBoard(folder / "logs"),
        ]
        if clock is not None:
            callbacks.insert(0, epoch_seeds(clock))
        if early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=early_stopping,
                restore_best_weights=True))
        fitted = fitting.model.fit(fitting.train, validation_data=fitting.val,
                           initial_epoch=epoch, epochs=epoch + stage.epochs,
                           class_weight=class_weight, callbacks=callbacks, shuffle=False,
                           verbose=progress_verbosity() if verbose is None else verbose)
        frame = pd.DataFrame(fitted.history)
        frame.insert(0, "epoch", fitted.epoch)
        frame.insert(1, "stage", stage.name)
        frames.append(frame)
        epoch += len(fitted.epoch)
        best = best_checkpoint.best
    model.load_weights(best_path)
    history = pd.concat(frames, ignore_index=True)
    history.to_csv(folder / "history.csv", index=False)  # the epoch log, with stages
    return history

