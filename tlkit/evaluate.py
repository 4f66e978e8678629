"""Evaluate a finished run of either kind on new labelled data, and write its report.

``evaluate`` reads the data the way the run's job reads training data (same columns, same
tables), predicts with the saved model, computes every metric with scikit-learn and writes
``RUN/reports/<name>/`` (metrics.json, predictions.csv, report.html/.md/.json).

Example:
    >>> metrics = evaluate("runs/trec", "trec/test.csv")  # doctest: +SKIP
    >>> round(metrics["accuracy"], 3)  # doctest: +SKIP
    0.912
"""

from __future__ import annotations

import re
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.files import replacing
from tlkit.predict import PROGRESS_FROM, open_run
from tlkit.progress import phase
from tlkit.runs import METRICS_FILE, PREDICTIONS_FILE, Run, check_run_name, write_json
from tlkit.tasks import task_of

REPORTS_FOLDER = "reports"


def read_labelled(run: Run, data: str | Path | list[str], columns: dict[str, str | None]
                  ) -> pd.DataFrame:
    """``input, label`` rows of labelled data, read as the run's job reads its data.

    ``columns`` may override the recipe's ``path_column``, ``text_column``,
    ``label_column`` and ``encoding``. Data that names its splits (an image folder's
    ``train/ val/ test/``, an image CSV's ``split`` column, a folder of text split tables) is
    evaluated on its test split: the others were trained or tuned on.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> run = Run(Path("r"), "image", ImageRecipe(), ["circle", "square", "triangle"], {})
        >>> read_labelled(run, "datasets/shapes", {}).iloc[0].to_dict()
        {'input': 'datasets/shapes/circle/circle_000.jpg', 'label': 'circle'}
    """
    return task_of(run).read_labelled(run, data, columns)


def evaluate(run: Run | str | Path, data: str | Path | list[str], name: str | None = None,
             ignore_unknown: bool = False, kind: str | None = None, tta: str | None = None,
             **columns: str | None) -> dict[str, Any]:
    """Metrics of a run on labelled ``data``; writes ``RUN/reports/<name>/`` with the report.

    ``kind`` (``image`` or ``textcnn``), if given, is the kind of run expected; ``tta`` (image
    runs: ``flip`` or ``flip-crops``, see ``tlkit.choices.TTA_LEVELS``) averages each image's
    probabilities over those views, and metrics.json and the report's summary say so;
    ``columns`` override the recipe's ``path_column``, ``text_column``, ``label_column``,
    ``encoding``.

    Example:
        >>> evaluate("runs/shapes", "more_shapes/", name="more")["n"]  # doctest: +SKIP
        42
    """
    from tlkit.choices import TTA_LEVELS
    from tlkit.evaluation.report import write_report

    if name is not None:  # the report folder stays inside RUN/reports
        check_run_name(name, "report")
    run = open_run(run, kind, model=False)  # data mistakes are answered before TensorFlow
    task = task_of(run)
    task.check_tta(tta)
    table, unknown = task.known_rows(read_labelled(run, data, columns), run.class_names,
                                     ignore_unknown)
    run = open_run(run)
    inputs = table["input"].tolist()
    # a few inputs are scored in a moment: only many get a phase (bar or lines on stderr)
    counting = (phase("evaluate", len(inputs), unit=task.noun) if len(inputs) >= PROGRESS_FROM
                else nullcontext())
    with counting:
        scored = task.score(run.model, inputs, task.targets(table["label"], run.class_names),
                            run.class_names, "eval", progress=True,
                            thresholds=task.thresholds(run), tta=tta)
    metrics, predictions = scored.metrics, scored.predictions
    calibration = task.calibration_rows(run)
    if calibration is not None:  # the run's prediction sets, on this data
        metrics["conformal"] = task.coverage(calibration, predictions, run.class_names)
    metrics.update(data=str(data), unknown_labels=unknown, skipped_inputs=scored.skipped,
                   tta=tta)
    shown = {"test-time augmentation": f"{tta}: {TTA_LEVELS[tta]}"} if tta else None
    folder = run.path / REPORTS_FOLDER / (name or report_name(data))
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The report is written whole beside its name, then renamed into place: Ctrl-C or a full
    # disk keeps the previous report of that name, and a rerun never mixes with it.
    with replacing(folder) as partial, phase("report", detail=f"into {folder}"):
        partial.mkdir()
        write_json(partial / METRICS_FILE, metrics)
        predictions.to_csv(partial / PREDICTIONS_FILE, index=False)
        write_report(partial, metrics, run.class_names, kind=task.name, predictions=predictions,
                     history=run.history, unknown=unknown, title=f"{run.path.name} on {data}",
                     extra=shown, stages=run.metrics.get("stages"))
    metrics["report"] = str(folder / "report.html")
    return metrics


def report_after_training(run_path: Path) -> Path | None:
    """Write a finished run's report; a failure costs the report, never the trained run.

    The run folder is already complete when this runs, so any problem drawing the report
    becomes one warning line naming the command that retries it.

    Example:
        >>> print(report_after_training(Path("no/such/run")))  # the warning goes to stderr
        None
    """
    from tlkit.evaluation.report import build_run_report

    try:
        return build_run_report(run_path)
    except Exception as error:  # noqa: BLE001 - the model and metrics are already saved
        print(f"warning: the report was not written ({type(error).__name__}: {error}); "
              f"retry with `tlkit report {run_path}`", file=sys.stderr, flush=True)
        return None


def report_name(data: str | Path | list[str]) -> str:
    """A folder name for an evaluation of ``data``: its file or folder name.

    Example:
        >>> report_name("trec/test.csv"), report_name(["a.pos", "a.neg"])
        ('test', 'a')
    """
    first = Path(data[0] if isinstance(data, list) else data)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", first.stem or first.name) or "data"


def metrics_summary(metrics: dict[str, Any]) -> str:
    """One line: accuracy, macro F1 and count; for multi-label metrics (no accuracy), mAP,
    micro F1 and subset accuracy.

    Example:
        >>> metrics_summary({"accuracy": 0.9125, "macro_f1": 0.9, "n": 500})
        'accuracy 0.9125, macro F1 0.9000 on 500 examples'
        >>> metrics_summary({"average_precision": {"macro": 0.8}, "micro_f1": 0.75,
        ...                  "subset_accuracy": 0.5, "n": 40})
        'mAP 0.8000, micro F1 0.7500, subset accuracy 0.5000 on 40 examples'
    """
    if "accuracy" not in metrics:
        average_precision = metrics["average_precision"]["macro"]
        shown = "n/a" if average_precision is None else f"{average_precision:.4f}"
        return (f"mAP {shown}, micro F1 {metrics['micro_f1']:.4f}, subset accuracy "
                f"{metrics['subset_accuracy']:.4f} on {metrics['n']} examples")
    return (f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} "
            f"on {metrics['n']} examples")
