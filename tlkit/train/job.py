"""One lifecycle for every kind of run, and cross-validation as a wrapper around it.

check (before TensorFlow, by the kind's ``check_*`` function) -> set up devices -> build
-> open the run folder -> fit the stages -> score -> write -> report. A kind supplies a
``Job``: what is its own (its data, model, fitting, scoring and saved files); everything
else (devices, seeds, the run folder and its lock, workers, metrics.json and
predictions.csv, the report) happens here, once, in the same order for every kind.

Example:
    >>> run = run_job(job, resume=False)  # doctest: +SKIP
    >>> run = cross_validate(job, folds=10, resume=False)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.labels import CALIBRATION_SPLIT
from tlkit.devices import TrainingSetup, training_setup
from tlkit.progress import phase, recording, say
from tlkit.recipes import KIND_COMMANDS, Stage
from tlkit.runs import (
    METRICS_FILE,
    Run,
    RunWriter,
    new_run_folder,
    read_json,
    releasing,
    write_json,
)
from tlkit.train.fit import monitored, stage_outcomes
from tlkit.train.workers import discard_worker_run, peer_failures, worker_destination, worker_out


class Job(ABC):
    """What one kind of run supplies to the lifecycle (``run_job``, ``cross_validate``).

    ``kind`` is the recipe's kind; ``out`` and ``name`` say where the run folder goes (the
    kind's checks resolved them). The methods run in the lifecycle's order.
    """

    kind: str
    recipe: Any
    task: Any  # the run's tlkit.tasks.Task: head, scoring, metrics
    out: Path
    name: str

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Class names in id order (known once ``build`` has read the data)."""

    @abstractmethod
    def build(self, setup: TrainingSetup) -> None:
        """Read what needs TensorFlow, then build the model and its data streams."""

    @abstractmethod
    def write_inputs(self, writer: RunWriter) -> None:
        """Files of its own about its data (a resume or a later command reads them back)."""

    @abstractmethod
    def fit(self, folder: Path, setup: TrainingSetup) -> pd.DataFrame:
        """Fit the stages into ``folder`` (checkpoints, history, logs); return the history."""

    def stages(self) -> list[Stage]:
        """The stages ``fit`` trains, in order (the recipe's, by default)."""
        return list(self.recipe.stages)

    @abstractmethod
    def held_out(self, split: str) -> tuple[Any, list[str], np.ndarray] | None:
        """(model, raw inputs, targets) of a held-out split (``val``, ``test``) for the task to
        score, the model as saved; None when the split is empty."""

    def extras(self) -> dict[str, Any]:
        """More of ``metrics.json``: what the kind has to say about its data or training."""
        return {}

    @abstractmethod
    def save(self, writer: RunWriter) -> Any:
        """Write the model (and the files it needs beside it); return the saved model."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """Examples per split it trains and watches on (``folds.csv`` columns)."""

    @abstractmethod
    def labels(self) -> list[str]:
        """One label per example of the data it would cross-validate, for stratified folds."""

    def folds(self, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train rows, test rows) of ``k`` stratified folds of its data, from its seed
        (label sets: iterative stratification)."""
        from tlkit.data.labels import LabelFormat
        from tlkit.data.text import kfold_splits

        sep = LabelFormat.of(self.recipe).table_sep
        return kfold_splits(self.labels(), k, self.recipe.seed, sep)

    @abstractmethod
    def fold(self, train_rows: np.ndarray, test_rows: np.ndarray) -> Job:
        """The same job on some rows of its data, tested on others (one fold)."""


@dataclass
class Outcome:
    """A fitted and scored job: its history, ``metrics.json`` and ``predictions.csv``.

    Example:
        >>> Outcome(pd.DataFrame(), {"test": {"accuracy": 1.0}}, pd.DataFrame(), 2.0).seconds
        2.0
    """

    history: pd.DataFrame
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    seconds: float


def run_job(job: Job, resume: bool = False) -> Run:
    """Train one job and publish its run folder, in the lifecycle's order.

    The model is built before the run folder is opened, so a model that cannot be built
    leaves nothing behind; the recipe is written first in the folder, so a killed run
    resumes from it. Only the chief of a multi-worker run publishes and reports.

    Example:
        >>> run = run_job(job)  # doctest: +SKIP
    """
    with (recording() as times, releasing(worker_out(job.out) / job.name),
          _tensorflow_loaded(), training_setup(job.recipe) as setup):
        job.build(setup)
        with _run_folder(job, setup, resume) as writer:
            writer.write_classes(job.class_names)
            job.write_inputs(writer)
            outcome = fit_and_score(job, writer.path, setup)
            outcome.metrics["phases"] = times  # the run's metrics: later phases join
            writer.write_metrics(outcome.metrics)
            writer.write_predictions(outcome.predictions)
            with phase("save", detail="the model and its run files"):
                model = job.save(writer)
    _report(writer.final, setup, times)
    return Run(path=Path(job.out) / job.name, kind=job.kind, recipe=job.recipe,
               class_names=job.class_names, metrics=outcome.metrics, model=model,
               history=outcome.history)


def cross_validate(job: Job, folds: int, resume: bool = False) -> Run:
    """Stratified k-fold of ``job``'s data: each fold trains on k-1 parts, tests on one.

    Each fold is the job on its rows (``Job.fold``), fitted in ``folds/<k>/`` from the
    run's seed, so a resumed run continues at the fold that was cut short and a finished
    fold is only rebuilt from its best weights and scored again. The run's numbers are the
    folds' mean and spread; its model and history are the last fold's (each is an equal
    estimate); ``predictions.csv`` has every example once, from the fold that held it out.

    Example:
        >>> run = cross_validate(job, folds=10)  # doctest: +SKIP
    """
    splits = job.folds(folds)
    with (recording() as times, releasing(worker_out(job.out) / job.name),
          _tensorflow_loaded(), training_setup(job.recipe) as setup,
          _run_folder(job, setup, resume) as writer):
        rows, held_out = [], []
        for k, (train_rows, test_rows) in enumerate(splits):
            fold = job.fold(train_rows, test_rows)
            setup.reseed()
            fold.build(setup)
            outcome = fit_and_score(fold, writer.fold(k), setup)
            rows.append(_fold_row(k, fold, outcome))
            held_out.append(outcome.predictions.query("split == 'test'"))
            say(f"fold {k + 1}/{folds}: test accuracy {rows[-1]['test_accuracy']:.4f}")
        table = pd.DataFrame(rows)
        metrics = {"cv": {"folds": folds,
                          "accuracy_mean": float(table["test_accuracy"].mean()),
                          "accuracy_std": float(table["test_accuracy"].std(ddof=1)),
                          "macro_f1_mean": float(table["test_macro_f1"].mean())},
                   "train_seconds": float(table["seconds"].sum()), "phases": times}
        writer.write_folds(table)
        writer.write_history(outcome.history)
        writer.write_classes(fold.class_names)
        writer.write_metrics(metrics)
        writer.write_predictions(pd.concat(held_out, ignore_index=True))
        fold.write_inputs(writer)
        with phase("save", detail="the model and its run files"):
            model = fold.save(writer)
    _report(writer.final, setup, times)
    return Run(path=Path(job.out) / job.name, kind=job.kind, recipe=job.recipe,
               class_names=fold.class_names, metrics=metrics, model=model,
               history=outcome.history, folds=table)


def _fold_row(k: int, fold: Job, outcome: Outcome) -> dict[str, Any]:
    """Fold ``k``'s row of ``folds.csv``: its sizes, test numbers and training time."""
    test = outcome.metrics["test"]
    # a label set is right when the whole set is (subset accuracy)
    accuracy = test["accuracy"] if "accuracy" in test else test["subset_accuracy"]
    return {"fold": k, **fold.sizes(), "test": test["n"], "test_accuracy": accuracy,
            "test_macro_f1": test["macro_f1"], "seconds": outcome.seconds}


def fit_and_score(job: Job, folder: Path, setup: TrainingSetup) -> Outcome:
    """Fit a built job into ``folder`` and score it: its ``Outcome``.

    Example:
        >>> outcome = fit_and_score(job, writer.path, setup)  # doctest: +SKIP
    """
    start = time.perf_counter()
    history = job.fit(folder, setup)
    seconds = round(time.perf_counter() - start, 1)
    metrics, predictions = score(job)
    metrics.update(job.extras())
    watched = job.recipe.monitor if job.recipe.monitor in history else monitored(
        job.recipe.monitor, has_val=False)[0]
    metrics.update(train_seconds=seconds, devices=setup.record(),
                   stages=stage_outcomes(history, job.stages(), watched))
    return Outcome(history, metrics, predictions, seconds)


def score(job: Job) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of the kept weights on val and test, and one prediction row per input, through
    the task's pipeline (the one evaluate and predict use). A multi-label task's per-class
    thresholds are chosen on val (each class's best F1) and decide val and test; the val
    metrics hold them (``thresholds``), where evaluate, predict and export read them. Before
    anything is scored, the model's temperature is fitted on val and set inside it
    (``Task.calibrate``, unless the recipe says ``calibrate: false``; ``temperature_scaling``
    holds ECE and NLL before and after); the calibration split's rows (predictions.csv) are
    what prediction sets are calibrated on, and ``conformal`` holds their test coverage.

    Example:
        >>> metrics, predictions = score(job)  # doctest: +SKIP
    """
    task, class_names = job.task, job.class_names
    parts = {split: part for split in ("val", "test", CALIBRATION_SPLIT)
             if (part := job.held_out(split)) is not None}
    model = next(iter(parts.values()))[0]
    # first: the thresholds and every score below are of the calibrated model, as saved
    scaling: dict[str, Any] = {}
    if job.recipe.calibrate:
        with phase("calibrate", detail="the model's temperature"):
            scaling = task.calibrate(model, {split: part[1:] for split, part in parts.items()})
    thresholds = task.fit_thresholds(model, parts["val"][1:] if "val" in parts else None)
    metrics, tables = {}, []
    for split, (model, inputs, targets) in parts.items():
        with phase(f"evaluate {split}", len(inputs), unit=task.noun, record="evaluate"):
            scored = task.score(model, inputs, targets, class_names, split, progress=True,
                                thresholds=thresholds)
        metrics[split] = scored.metrics
        tables.append(scored.predictions)
    table = pd.concat(tables, ignore_index=True)
    if scaling:
        metrics["temperature_scaling"] = scaling
    calibration, test = (table[table["split"] == split] for split in (CALIBRATION_SPLIT, "test"))
    if not calibration.empty and not test.empty:  # the sets' coverage, on examples they never saw
        metrics["conformal"] = {"test": task.coverage(calibration, test, class_names)}
    return metrics, table


@contextmanager
def _tensorflow_loaded() -> Iterator[None]:
    """Loading TensorFlow takes seconds (11 s on a busy 2-core machine): a phase of its own,
    so a log does not fall silent after the images are found."""
    if "tensorflow" not in sys.modules:
        with phase("tensorflow", detail="loading TensorFlow"):
            import tensorflow  # noqa: F401
    yield


@contextmanager
def _run_folder(job: Job, setup: TrainingSetup, resume: bool) -> Iterator[RunWriter]:
    """The job's partial run folder (this worker's own copy, off the chief), recipe first;
    a lost peer keeps it with one line naming the resume command."""
    out, name = worker_destination(setup, job.out, job.name)
    with (new_run_folder(out, name, job.kind, resume) as writer,
          peer_failures(writer.final, KIND_COMMANDS[job.kind])):
        writer.write_recipe(job.recipe)  # first: a killed run resumes from it
        yield writer


def _report(final: Path, setup: TrainingSetup, times: dict[str, float]) -> None:
    """The chief writes the published run's report, then adds the report's own time (and the
    save's) to metrics.json's ``phases``; another worker drops its copy."""
    from tlkit.evaluate import report_after_training

    if not setup.chief:
        discard_worker_run(final, setup)
        return
    with phase("report", detail="report.html, report.md and figures") as drawing:
        report_after_training(final)
    times["report"] = round(drawing.seconds, 2)  # the run's record may be closed by now
    metrics = read_json(final / METRICS_FILE)
    write_json(final / METRICS_FILE, {**metrics, "phases": dict(times)})
