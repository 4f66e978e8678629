"""The stage loop every job shares: compile once per stage, fit with Keras callbacks.

A stage may fit another model than the one the run saves, sharing its weights: a head
trained on cached features, or the text CNN's training path. ``checkpoints/best.weights.h5``
always holds the run model's weights; such a stage keeps the fitted model's weights of the
epoch it offers (``Stage.keep``) and writes the run model's when it ends.

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


def _callbacks(best_file: Path, folder: Path, stage: Stage, index: int, watch: Watch,
               log: pd.DataFrame, first_epoch: int, early_stopping: int | None,
               clock: EpochClock | None) -> list[Any]:
    """The stage's callbacks: seeds first, the kill-safe per-epoch writers last.

    ``watch.before`` is the best the earlier stages offered; a stage kept at its best epoch
    also weighs its own epochs logged before a resume, one kept at its last runs them all.
    """
    import keras

    callbacks: list[Any] = [epoch_seeds(clock)] if clock is not None else []
    if stage.ema:  # first: validation, early stopping and checkpoints see the averaged weights
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.append(_rate_log())  # before the writers, so history.csv gets its ``lr``
    callbacks.append(keras.callbacks.TensorBoard(folder / LOGS_FOLDER))
    own = log.loc[log["epoch"] >= first_epoch, watch.monitor].tolist() if len(log) else []
    best, last = watch.before, None
    if stage.keep == "last":
        last = first_epoch + stage.epochs - 1
    else:
        best = watch.better(best, *own)
        if early_stopping:
            callbacks.append(_early_stopping(watch.monitor, watch.mode, early_stopping, own))
    return callbacks + epoch_callbacks(best_file, folder, watch.label, index, watch.monitor,
                                       watch.mode, best, last)


@contextmanager
def _stage_phase(label: str, train: Any, epochs: int) -> Iterator[Any]:
    """The stage as a progress phase, and a callback counting its batches into it.

    Keras writes its epoch lines (a bar on a terminal) to stdout: they go to stderr, beside
    the other progress. In a file, where Keras says nothing until an epoch ends, the phase
    adds a line every ``LINE_INTERVAL`` with the batches done in the stage and its ETA.
    """
    import keras

    steps = int(train.cardinality())
    with (phase(f"stage {label}", steps * epochs if steps > 0 else None, unit="batch",
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


@dataclass
class Watch:
    """What decides the kept epoch in one stage: the monitor, its mode, the stage's label in
    ``history.csv`` and the best value the earlier stages offered.

    Example:
        >>> Watch("val_loss", "min").better(None, 0.4, 0.3, 0.5)
        0.3
    """

    monitor: str
    mode: str
    label: str = ""
    before: float | None = None

    def beats(self, value: float) -> bool:
        """Whether ``value`` is strictly better than ``before`` (anything beats nothing)."""
        return self.before is None or (value < self.before if self.mode == "min"
                                       else value > self.before)

    def better(self, *values: float | None) -> float | None:
        """The best of ``values`` by the mode (None and NaN are not values)."""
        known = [v for v in values if v is not None and v == v]
        return (min(known) if self.mode == "min" else max(known)) if known else None


def stage_labels(stages: list[Stage]) -> list[str]:
    """Each stage's label in ``history.csv``: its name, numbered from its second use on.

    Example:
        >>> stage_labels([Stage(), Stage(train_from="all"), Stage(name="fine-tune")])
        ['head', 'head-2', 'fine-tune']
    """
    labels: list[str] = []
    for stage in stages:
        uses = sum(1 for earlier in stages[:len(labels)] if earlier.name == stage.name)
        labels.append(f"{stage.name}-{uses + 1}" if uses else stage.name)
    return labels


def stage_outcomes(history: pd.DataFrame, stages: list[Stage], monitor: str = "val_loss"
                   ) -> list[dict[str, Any]]:
    """What each stage offered the run (its best or its last epoch, by ``Stage.keep``), what
    that gained on the best before it, and which offer the run kept: the last one that beat
    every earlier stage's. ``metrics.json: stages`` and the report's stage table.

    Example:
        >>> h = pd.DataFrame({"epoch": [0, 1, 2, 3], "stage": ["head", "head", "ft", "ft"],
        ...                   "val_loss": [0.5, 0.3, 0.1, 0.4]})  # ft's 0.1: not its offer
        >>> [(o["stage"], o["epoch"], o["gain"], o["kept"]) for o in stage_outcomes(
        ...     h, [Stage(), Stage(name="ft", keep="last")])]
        [('head', 1, None, True), ('ft', 3, -0.1, False)]
    """
    if monitor not in history:
        return []
    watch = Watch(monitor, monitored(monitor, True)[1])
    outcomes: list[dict[str, Any]] = []
    kept = None
    for stage, label in zip(stages, stage_labels(stages), strict=True):
        part = history[history["stage"] == label]
        values = part[monitor].dropna()
        if values.empty:
            continue
        at = values.index[-1] if stage.keep == "last" else (
            values.idxmin() if watch.mode == "min" else values.idxmax())
        value = float(values[at])
        gain = None if watch.before is None else round(
            (watch.before - value) * (1 if watch.mode == "min" else -1), 6)
        outcome = {"stage": label, "keep": stage.keep, "epochs": len(part),
                   "epoch": int(history.loc[at, "epoch"]), "monitor": monitor, "value": value,
                   "gain": gain}
        if monitor != "val_accuracy" and "val_accuracy" in history:
            outcome["val_accuracy"] = float(history.loc[at, "val_accuracy"])
        if watch.beats(value):
            watch.before, kept = value, len(outcomes)
        outcomes.append(outcome)
    for i, outcome in enumerate(outcomes):
        outcome["kept"] = i == kept
    return outcomes


def _watch(log: pd.DataFrame, stages: list[Stage], index: int, monitor: str) -> Watch:
    """Stage ``index``'s watch: its label, and the best offer of the stages before it."""
    watch = Watch(monitor, monitored(monitor, True)[1], stage_labels(stages)[index])
    offers = stage_outcomes(log, stages[:index], monitor) if len(log) else []
    watch.before = watch.better(*(offer["value"] for offer in offers))
    return watch


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
    """After a stage that fitted another model: the run model's weights at the epoch it
    offered, when that beat the earlier stages' offers."""
    if fitted is not model and stage_best.is_file():
        fitted.load_weights(stage_best)  # its weights are the run model's
        save_weights(model, folder / CHECKPOINTS_FOLDER / BEST_FILE)


def fit_stages(model: Any, stages: list[Stage], datasets: dict[str, Any], folder: Path, *,
               prepare: Callable[[Stage], StageFit | None], monitor: str = "val_loss",
               early_stopping: int | None = None, class_weight: dict[int, float] | None = None,
               clock: EpochClock | None = None, jit_compile: bool = False,
               verbose: int | None = None) -> pd.DataFrame:
    """Train ``model`` stage by stage; keep the weights each stage offers (its best or its
    last epoch by ``monitor``, ``Stage.keep``) when they beat every earlier stage's offer.

    ``prepare(stage)`` sets what trains and compiles: once per stage, because Keras reads
    ``trainable`` at compile time. It returns what the stage fits, or None for ``model`` on
    ``datasets["train"]`` and ``datasets["val"]``. Each stage starts from the best weights
    so far. Writes ``checkpoints/best.weights.h5`` (the best epoch's weights),
    ``history.csv`` (one row per epoch, with its stage's label and the rate ``lr`` at its end)
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
    monitor, _ = monitored(monitor, "val" in datasets)
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
        watch = _watch(log, stages, index, monitor)
        callbacks = _callbacks(stage_best, folder, stage, index, watch, log, first,
                               early_stopping, clock)
        with _stage_phase(watch.label, fitting.train, first + stage.epochs - epoch) as counter:
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
