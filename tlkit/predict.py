"""Use a finished run of either kind: predict labels for new inputs.

The saved model takes raw inputs (RGB 0-255 images, or strings), so prediction only reads
inputs and calls it. An input that cannot be read (an undecodable image) becomes a row with
an ``error`` and the rest goes on.

Example:
    >>> predict("runs/trec", ["How far is the moon ?"], top_k=2)  # doctest: +SKIP
                        input label_1  prob_1 label_2  prob_2
    0  How far is the moon ?     NUM  0.9712     LOC  0.0151
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from tlkit.errors import UserError
from tlkit.models.saved import load_keras_file
from tlkit.progress import phase
from tlkit.runs import MODEL_FILE, Run, read_run
from tlkit.tasks import PREDICT_BATCH, require_task, task_of
from tlkit.tasks.base import check_uncertainty

__all__ = ["PREDICT_BATCH", "gather_inputs", "open_run", "predict", "probabilities"]

# Inputs past this many get a progress bar (when a terminal shows it).
PROGRESS_FROM = 1000


def open_run(run: Run | str | Path, kind: str | None = None, model: bool = True) -> Run:
    """A finished run, its model loaded unless ``model=False``; ``kind`` (if given) must match.

    Example:
        >>> open_run("runs/shapes", kind="textcnn")  # doctest: +SKIP
        Traceback (most recent call last):
        tlkit.errors.UserError: 'runs/shapes' is an image run, not a textcnn run; ...
    """
    run = run if isinstance(run, Run) else read_run(run)
    require_task(run, kind)
    if model and run.model is None:
        run.model = load_keras_file(run.path / MODEL_FILE)
    return run


def gather_inputs(run: Run, inputs: Sequence[str], input_file: str | Path | None = None,
                  column: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The run's inputs: image files and folders, or sentences; plus those of ``input_file``.

    ``input_file`` is a CSV/TSV (``column``, default the recipe's path or text column) or,
    for text runs, a file with one sentence per line. CSV image paths are relative to the
    CSV's folder.

    Example:
        >>> import tempfile
        >>> lines = Path(tempfile.mkdtemp()) / "more.txt"
        >>> _ = lines.write_text("second one\\n\\nthird one\\n")
        >>> gather_inputs(Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {}),
        ...               ["a fine film"], lines)
        ['a fine film', 'second one', 'third one']
    """
    task = task_of(run)
    items = task.gather_inputs(run, inputs)
    if input_file is not None:
        items += task.file_inputs(run, Path(input_file), column, encoding)
    if not items:
        raise UserError("no inputs given: pass them as arguments or --input FILE")
    return items


def probabilities(run: Run, items: Sequence[str], tta: str | None = None
                  ) -> tuple[np.ndarray, list[str | None]]:
    """Class probabilities of each input, and an error (or None) for each, through the run's
    task (``Task.probabilities``, the one inference pipeline; ``tta``: test-time augmentation).

    Rows with an error hold NaN; many inputs are a progress phase on stderr (``predict``).

    Example:
        >>> import keras
        >>> hashed = keras.Sequential([keras.Input((), dtype="string"),  # a stand-in text model
        ...                            keras.layers.Hashing(2, output_mode="one_hot")])
        >>> run = Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {}, model=hashed)
        >>> probs, errors = probabilities(run, ["a fine film", " "])
        >>> np.isnan(probs).any(axis=1).tolist(), errors
        ([False, True], [None, 'empty text: nothing to classify'])
    """
    task = task_of(run)
    counting = (phase("predict", len(items), unit=task.noun) if len(items) >= PROGRESS_FROM
                else nullcontext())
    with counting:
        return task.probabilities(run.model, items, progress=True, tta=tta)


def predict(run: Run | str | Path, inputs: Sequence[str] = (), top_k: int = 1,
            input_file: str | Path | None = None, column: str | None = None,
            encoding: str = "utf-8", kind: str | None = None, tta: str | None = None,
            coverage: float | None = None, conformal_score: str | None = None,
            abstain_below: float | None = None) -> pd.DataFrame:
    """Top-k labels and probabilities of a run's model for each input (either kind); for a
    multi-label run, each input's label set and every label's probability.

    ``kind`` (``image`` or ``textcnn``), if given, is the kind of run expected; ``tta`` (image
    runs: ``flip`` or ``flip-crops``, see ``tlkit.choices.TTA_LEVELS``) averages each image's
    probabilities over those views. ``coverage`` (the run's split-conformal prediction set
    at that coverage, by ``conformal_score`` aps or lac) and ``abstain_below`` (a top
    probability under it) add ``answer`` (the label, or ``unsure``) and ``candidates`` (the
    classes in doubt, joined by ``|``) columns (docs/calibration.md).

    Example:
        >>> predict("runs/shapes", ["datasets/shapes/circle"], top_k=2)  # doctest: +SKIP
    """
    run = open_run(run, kind, model=False)  # every mistake is answered before TensorFlow
    task_of(run).check_tta(tta)
    uncertainty = task_of(run).uncertainty(
        run, check_uncertainty(coverage, abstain_below, conformal_score))
    if not 1 <= top_k <= len(run.class_names):
        raise UserError(f"--top-k {top_k}: choose between 1 and {len(run.class_names)} (the "
                        "run's number of classes)")
    items = gather_inputs(run, inputs, input_file, column, encoding)
    run = open_run(run)
    probs, errors = probabilities(run, items, tta)
    task = task_of(run)
    table = task.answer_table(items, probs, errors, run.class_names, top_k,
                              task.thresholds(run))
    if uncertainty is None:
        return table
    answers = task.answers(probs, errors, run.class_names, uncertainty)
    table.insert(table.columns.get_loc("error"), "answer", [answer for answer, _ in answers])
    table.insert(table.columns.get_loc("error"), "candidates",
                 ["|".join(names) for _, names in answers])
    return table
