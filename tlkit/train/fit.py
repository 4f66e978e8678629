"""The stage loop every job shares: compile once per stage, fit with Keras callbacks.

A stage may fit another model than the one the run saves, sharing its weights: a head
trained on cached features, or the text CNN's training path. ``checkpoints/best.weights.h5``
always holds the run model's weights; such a stage keeps the fitted model's best epoch and
writes the run model's when it ends.

Example:
    >>> history = fit_stages(model, stages, datasets, folder,
    ...                      prepare=lambda stage: model.compile(...))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.devices import progress_verbosity
from tlkit.progress import phase
from tlkit.recipes import Stage
from tlkit.runs import BEST_FILE, CHECKPOINTS_FOLDER, HISTORY_FILE, LOGS_FOLDER, STAGE_BEST
from tlkit.seeds import EpochClock, epoch_seeds
from tlkit.train.checkpoints import (
    ResumePoint,
    epoch_callbacks,
    record_stage,
    restore,
    save_weights,
)
from tlkit.train.stages import schedule_rate


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
    """What one stage fits: a model sharing the run model's layers, and its data streams.

    Example:
        >>> StageFit(model="head", train="train batches")  # no val: the stage watches loss
        StageFit(model='head', train='train batches', val=None)
    """

    model: Any
    train: Any
    val: Any = None


def _callbacks(best_file: Path, folder: Path, stage: Stage, index: int, monitor: str, mode: str,
               log: pd.DataFrame, first_epoch: int, early_stopping: int | None,
               clock: EpochClock | None) -> list[Any]:
    """The stage's callbacks: seeds first, the kill-safe per-epoch writers last."""
    import keras

    callbacks: list[Any] = [epoch_seeds(clock)] if clock is not None else []
    if stage.ema:  # first: validation, early stopping and checkpoints see the averaged weights
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.append(_rate_log())  # before the writers, so history.csv gets its ``lr``
    callbacks.append(keras.callbacks.TensorBoard(folder / LOGS_FOLDER))
    if early_stopping:
        earlier = log.loc[log["epoch"] >= first_epoch, monitor].tolist() if len(log) else []
        callbacks.append(_early_stopping(monitor, mode, early_stopping, earlier))
    best = _best(log, monitor, mode)
    return callbacks + epoch_callbacks(best_file, folder, stage.name, index, monitor, mode, best)


@contextmanager
def _stage_phase(stage: Stage, train: Any, epochs: int) -> Iterator[Any]:
    """The stage as a progress phase, and a callback counting its batches into it.

    Keras writes its epoch lines (a bar on a terminal) to stdout: they go to stderr, beside
    the other progress. In a file, where Keras says nothing until an epoch ends, the phase
    adds a line every ``LINE_INTERVAL`` with the batches done in the stage and its ETA.
    """
    import keras

    steps = int(train.cardinality())
    with (phase(f"stage {stage.name}", steps * epochs if steps > 0 else None, unit="batch",
                detail=f"{epochs} epoch{'s' * (epochs != 1)} to run", draw=False) as step,
          redirect_stdout(sys.stderr)):

        class CountBatches(keras.callbacks.Callback):
            # With steps_per_execution (the text CNN) Keras calls this once per execution,
            # with the index of its last batch: the count follows the index.
            def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                self.in_epoch = 0

            def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None
                                   ) -> None:
                step.advance(batch + 1 - self.in_epoch)
                self.in_epoch = batch + 1

        yield CountBatches()


def _rate_log() -> Any:
    """A callback adding ``lr`` to each epoch's logs: the optimizer's rate at the epoch's end
    (its schedule at the steps done so far)."""
    import keras

    class RateLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is not None:
                logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    return RateLog()


def steps_per_epoch(train: Any) -> int:
    """Batches in one epoch of the ``train`` dataset: its cardinality, else counted.

    Example:
        >>> import tensorflow as tf
        >>> steps_per_epoch(tf.data.Dataset.range(10).batch(4)), steps_per_epoch(
        ...     tf.data.Dataset.range(10).filter(lambda x: x < 5).batch(2))
        (3, 3)
    """
    known = int(train.cardinality())
    return known if known >= 0 else sum(1 for _ in train)


def _early_stopping(monitor: str, mode: str, patience: int, earlier: list[float]) -> Any:
    """Keras's EarlyStopping, carrying the patience already used by this stage's epochs."""
    import keras

    class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            super().on_train_begin(logs)
            for value in earlier:  # replays on_epoch_end's counting for the logged epochs
                self.wait += 1
                if self.best is None or (value < self.best if mode == "min"
                                         else value > self.best):
                    self.best, self.wait = value, 0

    return ResumedEarlyStopping(monitor=monitor, mode=mode, patience=patience)


def _best(log: pd.DataFrame, monitor: str, mode: str) -> float | None:
    if log.empty or monitor not in log:
        return None
    return float(log[monitor].min() if mode == "min" else log[monitor].max())


def _stage_start(model: Any, folder: Path, index: int) -> None:
    """Each stage starts from the best weights so far, kept so a resumed stage starts alike."""
    start = folder / CHECKPOINTS_FOLDER / f"stage-{index}-start.weights.h5"
    if start.is_file():
        model.load_weights(start)
        return
    best = folder / CHECKPOINTS_FOLDER / BEST_FILE
    if index and best.is_file():
        model.load_weights(best)
    save_weights(model, start)


def _keep_stage_best(model: Any, fitted: Any, stage_best: Path, folder: Path) -> None:
    """After a stage that fitted another model: the run model's weights at its best epoch."""
    if fitted is not model and stage_best.is_file():
        fitted.load_weights(stage_best)  # its weights are the run model's
        save_weights(model, folder / CHECKPOINTS_FOLDER / BEST_FILE)


def fit_stages(model: Any, stages: list[Stage], datasets: dict[str, Any], folder: Path, *,
               prepare: Callable[[Stage], StageFit | None], monitor: str = "val_loss",
               early_stopping: int | None = None, class_weight: dict[int, float] | None = None,
               clock: EpochClock | None = None, jit_compile: bool = False,
               verbose: int | None = None) -> pd.DataFrame:
    """Train ``model`` stage by stage; keep the best weights by ``monitor`` over all stages.

    ``prepare(stage)`` sets what trains and compiles: once per stage, because Keras reads
    ``trainable`` at compile time. It returns what the stage fits, or None for ``model`` on
    ``datasets["train"]`` and ``datasets["val"]``. Each stage starts from the best weights
    so far. Writes ``checkpoints/best.weights.h5`` (the best epoch's weights),
    ``history.csv`` (one row per epoch, with its ``stage`` and the rate ``lr`` at its end)
    and TensorBoard ``logs/`` into ``folder``. A folder left by a killed run continues where
    it stopped (``tlkit.train.checkpoints``): finished stages are skipped, and the current one
    restarts from its last epoch's weights and optimizer state.

    Example:
        >>> import keras, numpy as np, tempfile, tensorflow as tf
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> train = tf.data.Dataset.from_tensor_slices((np.eye(2), [0.0, 1.0])).batch(2)
        >>> log = fit_stages(model, [Stage(epochs=2)], {"train": train}, Path(tempfile.mkdtemp()),
        ...                  prepare=lambda stage: model.compile("sgd", "mse"), verbose=0)
        >>> list(log.columns), log["epoch"].tolist()  # no val split: loss is watched
        (['epoch', 'stage', 'loss', 'lr'], [0, 1])
    """
    monitor, mode = monitored(monitor, "val" in datasets)
    (folder / CHECKPOINTS_FOLDER).mkdir(exist_ok=True)
    point = ResumePoint.read(folder)
    log, first, epoch = point.log(folder), point.stage_first_epoch, point.epoch
    for index, stage in enumerate(stages[point.stages_done:], start=point.stages_done):
        _stage_start(model, folder, index)
        fitting = prepare(stage) or StageFit(model, datasets["train"], datasets.get("val"))
        fitting.model.jit_compile = jit_compile  # XLA, per the recipe
        if stage.schedule != "constant" or stage.warmup:  # the schedule needs the steps
            schedule_rate(fitting.model.optimizer, stage, steps_per_epoch(fitting.train))
        if point.backup is not None and index == point.stages_done:
            restore(fitting.model, point.backup)
        stage_best = folder / CHECKPOINTS_FOLDER / (BEST_FILE if fitting.model is model
                                               else STAGE_BEST)
        callbacks = _callbacks(stage_best, folder, stage, index, monitor, mode, log, first,
                               early_stopping, clock)
        with _stage_phase(stage, fitting.train, first + stage.epochs - epoch) as counter:
            fitting.model.fit(
                fitting.train, validation_data=fitting.val, initial_epoch=epoch,
                epochs=first + stage.epochs, class_weight=class_weight,
                callbacks=[*callbacks, counter], shuffle=False,
                verbose=progress_verbosity() if verbose is None else verbose)
        _keep_stage_best(model, fitting.model, stage_best, folder)
        log = pd.read_csv(folder / HISTORY_FILE)
        first = epoch = int(log["epoch"].max()) + 1
        record_stage(folder, index + 1, epoch)
        stage_best.with_name(STAGE_BEST).unlink(missing_ok=True)
    model.load_weights(folder / CHECKPOINTS_FOLDER / BEST_FILE)
    for start in (folder / CHECKPOINTS_FOLDER).glob("stage-*-start.weights.h5"):
        start.unlink()
    return log
