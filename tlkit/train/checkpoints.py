"""What a run keeps on disk while it trains, written so that a kill at any moment is safe.

Every file is written beside its final name and renamed into place, so a run killed
mid-write (SIGKILL, power loss) finds the previous complete file, never a torn one. Per
epoch, in this order:

1. ``history.csv`` gets the epoch's row (with its stage);
2. when the monitor improved, the best weights: ``checkpoints/best.weights.h5``, or in a
   stage that fits another model sharing the run model's weights (a head on cached
   features, the text CNN's training path), that model's own
   ``checkpoints/stage-best.weights.h5``; ``fit_stages`` writes the run model's best when
   the stage ends, so a head-only epoch writes kilobytes, not the backbone;
3. ``backup/epoch-<e>/`` (weights with the optimizer's state), then ``backup/latest``
   names it.

A resumed run starts after the epoch that ``backup/latest`` names and drops log rows past
it, so every epoch is counted once.

Example:
    >>> import tempfile
    >>> ResumePoint.read(Path(tempfile.mkdtemp()))
    ResumePoint(stages_done=0, stage_first_epoch=0, epoch=0, backup=None)
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.files import replacing, signals_held, write_text
from tlkit.runs import (  # noqa: F401 - BEST_FILE for the doctests
    BACKUP_FOLDER,
    BEST_FILE,
    HISTORY_FILE,
    LATEST_FILE,
    PROGRESS_FILE,
    read_json,
    write_json,
)


def save_weights(model: Any, path: Path) -> None:
    """``model.save_weights(path)``, written beside ``path`` and renamed into place.

    Example:
        >>> import keras, tempfile
        >>> path = Path(tempfile.mkdtemp()) / BEST_FILE
        >>> save_weights(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), path)
        >>> [file.name for file in path.parent.iterdir()]  # no partial file left beside it
        ['best.weights.h5']
    """
    partial = path.with_name(f".{path.name.removesuffix('.weights.h5')}.partial.weights.h5")
    check_room(model, partial)
    try:
        model.save_weights(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)  # a full disk leaves a torn file: give its space back


def check_room(model: Any, path: Path) -> None:
    """Raise ENOSPC unless the disk holding ``path`` has room for ``model.save_weights``.

    h5py crashes the process (a segmentation fault, no error) when the disk fills up while
    it closes a weights file, so a full disk must be found before writing. The size is the
    variables' bytes (the optimizer's too, which Keras saves with a built optimizer) plus
    HDF5's own per variable.

    Example:
        >>> import keras, tempfile
        >>> check_room(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
        ...            Path(tempfile.mkdtemp()) / BEST_FILE)
    """
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None
                                   and optimizer.built else [])]
    needed = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
    needed += 2048 * len(variables) + 65536
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device ({needed} bytes needed, "
                      f"{free} free)", str(path))


@dataclass
class ResumePoint:
    """Where a run folder's training stands: stages done, epochs, the backup to load.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> pd.DataFrame({"epoch": [0, 1, 2]}).to_csv(folder / HISTORY_FILE, index=False)
        >>> ResumePoint(0, 0, epoch=2, backup=None).log(folder)["epoch"].tolist()
        [0, 1]
    """

    stages_done: int
    stage_first_epoch: int
    epoch: int
    backup: Path | None

    @classmethod
    def read(cls, folder: Path) -> ResumePoint:
        """The point ``folder`` reached; a new folder starts at stage 0, epoch 0."""
        progress_file = folder / PROGRESS_FILE
        progress = read_json(progress_file) if progress_file.is_file() else {}
        done, first = progress.get("stages_done", 0), progress.get("epoch", 0)
        latest = folder / BACKUP_FOLDER / LATEST_FILE
        if latest.is_file():
            state = folder / BACKUP_FOLDER / latest.read_text().strip()
            saved = read_json(state / "state.json")
            if saved["stage_index"] == done:  # else: the finished stage's, not yet removed
                return cls(done, first, int(saved["epoch"]), state)
        return cls(done, first, first, None)

    def log(self, folder: Path) -> pd.DataFrame:
        """The epochs logged before this point (a torn or repeated last row is dropped).

        The file is rewritten only when rows go, beside it and renamed: a resume on a full
        disk leaves it as it was.
        """
        path = folder / HISTORY_FILE
        if not path.is_file():
            return pd.DataFrame(columns=["epoch", "stage"])
        read = pd.read_csv(path, on_bad_lines="skip")
        log = read.dropna(subset=["epoch"])
        log = log[log["epoch"] < self.epoch].astype({"epoch": int})
        if len(log) < len(read) or _torn(path):
            with replacing(path) as partial:
                log.to_csv(partial, index=False)
        return log


def _torn(path: Path) -> bool:
    """Whether a CSV file's last line was cut (a kill mid-append): it lacks its newline."""
    with path.open("rb") as file:
        file.seek(0, os.SEEK_END)
        if file.tell() == 0:
            return False
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def record_stage(folder: Path, stages_done: int, epoch: int) -> None:
    """Note that ``stages_done`` stages are finished at ``epoch``; drop the stage's backup.

    Example:
        >>> import tempfile
        >>> record_stage(folder := Path(tempfile.mkdtemp()), stages_done=1, epoch=7)
        >>> ResumePoint.read(folder)
        ResumePoint(stages_done=1, stage_first_epoch=7, epoch=7, backup=None)
    """
    write_json(folder / PROGRESS_FILE, {"stages_done": stages_done, "epoch": epoch})
    shutil.rmtree(folder / BACKUP_FOLDER, ignore_errors=True)


def restore(model: Any, backup: Path) -> None:
    """Load the weights and optimizer state of a backup into a compiled ``model``.

    A freshly compiled optimizer is built first, or its saved state would be skipped.

    Example:
        >>> import keras, tempfile
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile("adam", "mse"); model.optimizer.build(model.trainable_variables)
        >>> model.save_weights(Path(backup := tempfile.mkdtemp()) / "state.weights.h5")
        >>> model.compile("adam", "mse"); restore(model, Path(backup)); model.optimizer.built
        True
    """
    with model.distribute_strategy.scope():  # the optimizer's slots are the strategy's
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(backup / "state.weights.h5")


def epoch_callbacks(best_file: Path, folder: Path, stage: str, stage_index: int, monitor: str,
                    mode: str, best: float | None, only_epoch: int | None = None) -> list[Any]:
    """The per-epoch writers, in the order the module docstring gives.

    The fitted model's weights go to ``best_file`` when the monitor beats ``best`` (with
    ``only_epoch``, only that epoch is weighed: a stage kept at its last epoch). The backup
    holds the fitted model with its optimizer.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> log, best, backup = epoch_callbacks(folder / BEST_FILE, folder, "head", 0,
        ...                                     "val_loss", "min", None)
        >>> log.on_epoch_end(0, {"val_loss": 0.5})
        >>> pd.read_csv(folder / HISTORY_FILE).to_dict("records")
        [{'epoch': 0, 'stage': 'head', 'val_loss': 0.5}]
    """
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            row = {"epoch": epoch, "stage": stage,
                   **{key: float(value) for key, value in (logs or {}).items()}}
            path = folder / HISTORY_FILE
            pd.DataFrame([row]).to_csv(path, mode="a", header=not path.is_file(), index=False)

    class Checkpoints(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.best = best

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if only_epoch is not None and epoch != only_epoch:
                return
            value = float((logs or {})[monitor])
            if self.best is None or (value < self.best if mode == "min" else value > self.best):
                self.best = value
                save_weights(self.model, best_file)

    class EpochBackup(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            backups = folder / BACKUP_FOLDER
            state = backups / f"epoch-{epoch + 1}"
            shutil.rmtree(state, ignore_errors=True)
            state.mkdir(parents=True)
            try:
                check_room(self.model, state / "state.weights.h5")
                self.model.save_weights(state / "state.weights.h5")
                write_json(state / "state.json",
                           {"epoch": epoch + 1, "stage": stage, "stage_index": stage_index})
            except BaseException:
                shutil.rmtree(state, ignore_errors=True)  # latest still names the last one
                raise
            # Once renamed, latest names this state: a Ctrl-C or SIGTERM landing just after
            # the rename must not reach the clean-up above and remove what latest names.
            with signals_held():
                write_text(backups / LATEST_FILE, state.name)
            for old in backups.glob("epoch-*"):
                if old != state:
                    shutil.rmtree(old, ignore_errors=True)

    return [EpochLog(), Checkpoints(), EpochBackup()]
