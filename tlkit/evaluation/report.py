"""A run's evaluation report: ``report.html`` (self-contained: inline CSS, figures as base64
PNG data URIs, no external resource), ``report.md`` with the figures as PNG files beside it,
and ``report.json`` with the same numbers.

Sections, always in this order and always present: summary, per-class metrics, confusion
matrix, most-confused pairs, ROC and precision-recall, calibration, training curves, top
losses, and what is missing (anything that could not be drawn, with the reason). A
multi-label run's report (its task's ``report``) has ``MULTI_LABEL_SECTIONS``: summary
(mAP, F1s, subset accuracy, Hamming loss), per-class metrics with each class's threshold,
a 2x2 confusion per label, precision-recall curves, calibration (every label decision's
reliability before and after the per-class temperatures, the per-label conformal sets),
training curves, top losses by per-example binary cross-entropy, and what is missing.

Example:
    >>> build_run_report("runs/flowers-20250101-120000")  # doctest: +SKIP
    PosixPath('runs/flowers-20250101-120000/report.html')
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.errors import UserError
from tlkit.evaluation.metrics import (
    most_confused,
    prediction_arrays,
    probability_columns,
)
from tlkit.files import disk_full_error, is_disk_full, remove, sibling, signals_held
from tlkit.models.saved import load_run
from tlkit.progress import duration
from tlkit.runs import PREDICTIONS_FILE

SECTIONS = {
    "summary": "Summary",
    "per-class": "Per-class metrics",
    "confusion": "Confusion matrix",
    "most-confused": "Most-confused pairs",
    "roc-pr": "ROC and precision-recall",
    "reliability": "Calibration",
    "training": "Training curves",
    "top-losses": "Top losses",
    "missing": "Missing",
}
# A multi-label run's report: its own sections, in this order, always present.
MULTI_LABEL_SECTIONS = {
    "summary": "Summary",
    "per-class": "Per-class metrics",
    "label-confusion": "Per-label confusion",
    "pr": "Precision-recall",
    "reliability": "Calibration",
    "training": "Training curves",
    "top-losses": "Top losses",
    "missing": "Missing",
}
TITLES = {**SECTIONS, **MULTI_LABEL_SECTIONS}
TOP_LOSSES = 12
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1em 2em; color: #222; }
nav a { margin-right: 1em; }
section { border-top: 1px solid #ddd; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.zoom { overflow-x: auto; }
.zoom input { display: none; }
.zoom label { cursor: zoom-in; }
.zoom input:checked + label img { max-width: none; cursor: zoom-out; }
.note { color: #a33; }
"""


@dataclass
class Png:
    """A rendered figure: its file name beside report.md and its PNG bytes.

    Example:
        >>> Png("confusion.png", b"\\x89PNG")
        Png(name='confusion.png', data=b'\\x89PNG')
    """

    name: str
    data: bytes


@dataclass
class Section:
    """One report section: its anchor, and blocks (paragraphs, tables, figures) in order.

    Example:
        >>> section = Section("per-class", ["Precision and recall of each class."])
        >>> section.title, len(section.blocks)
        ('Per-class metrics', 1)
    """

    key: str
    blocks: list[str | pd.DataFrame | Png] = field(default_factory=list)

    @property
    def title(self) -> str:
        return TITLES[self.key]


@dataclass
class Given:
    """What a report is drawn from (the arguments of ``write_report``).

    Example:
        >>> Given({"n": 2}, ["a", "b"], "image").kind
        'image'
    """

    metrics: dict[str, Any]
    class_names: list[str]
    kind: str
    predictions: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    probe_accuracy: float | None = None
    unknown: dict[str, int] = field(default_factory=dict)
    root: str | Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)


def _single_label(given: Given, missing: list[str]) -> list[Section]:
    metrics, names = given.metrics, given.class_names
    return [_summary(metrics, given.extra, given.probe_accuracy, given.unknown),
            _per_class(metrics, missing),
            _confusion(metrics, names, missing),
            _most_confused(metrics, names, missing),
            _curves(metrics, given.predictions, names, missing),
            _reliability(metrics, given.predictions, names, missing),
            _training(given.history, given.stages, missing),
            _top_losses(given.predictions, names, given.kind, given.root, missing)]


def _multi_label(given: Given, missing: list[str]) -> list[Section]:
    metrics, names = given.metrics, given.class_names
    return [_multi_summary(metrics, given.extra, given.unknown),
            _multi_per_class(metrics, missing),
            _label_confusion(metrics, missing),
            _multi_curves(metrics, given.predictions, names, missing),
            _multi_reliability(metrics, given.predictions, names, missing),
            _training(given.history, given.stages, missing),
            _top_losses(given.predictions, names, given.kind, given.root, missing)]


# The sections a task's ``report`` names, in order.
REPORTS = {"single-label": _single_label, "multi-label": _multi_label}


def write_report(folder: str | Path, metrics: dict[str, Any], class_names: list[str], *,
                 kind: str = "image", predictions: pd.DataFrame | None = None,
                 history: pd.DataFrame | None = None, extra: dict[str, Any] | None = None,
                 probe_accuracy: float | None = None, unknown: dict[str, int] | None = None,
                 title: str = "Evaluation report", missing: list[str] | None = None,
                 root: str | Path | None = None, stages: list[dict[str, Any]] | None = None
                 ) -> Path:
    """Write report.html, report.md (+ PNG figures) and report.json into ``folder``.

    ``metrics`` comes from ``classification_metrics``; ``predictions`` (a predictions table
    of the same examples) gives the ROC/PR curves and top losses; ``history`` (Keras
    ``history.csv``) the training curves, and ``stages`` (``metrics.json: stages``) what
    each training stage gained on val; ``extra`` numbers join the summary, and
    ``probe_accuracy`` is set beside the accuracy with one line when the run is below it.
    ``unknown`` counts labels the model never saw (left out of ``metrics``). Image paths
    in ``predictions`` are tried as given, then under ``root``. Whatever cannot be drawn
    is listed in the Missing section, with ``missing`` notes from the caller. Returns the
    path of report.html.

    Example:
        >>> from tlkit.evaluation.metrics import classification_metrics
        >>> m = classification_metrics([0, 1], [[.9, .1], [.4, .6]], ["a", "b"])
        >>> write_report("report", m, ["a", "b"])  # doctest: +SKIP
        PosixPath('report/report.html')
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = list(missing or [])
    given = Given(metrics, class_names, kind, predictions, history, extra or {}, probe_accuracy,
                  unknown or {}, root, stages or [])
    from tlkit.tasks import get_task

    sections = REPORTS[get_task(kind).report](given, missing)
    sections.append(Section("missing", [f"Not drawn: {note}" for note in missing]
                            or ["Nothing is missing: every section was drawn."]))
    figures = [block for section in sections for block in section.blocks
               if isinstance(block, Png)]
    summary = {
        "title": title, "kind": kind, "metrics": metrics, "extra": extra or {},
        "probe_accuracy": probe_accuracy, "unknown_labels": unknown or {},
        "most_confused": (most_confused(metrics["confusion_matrix"], class_names)
                          .to_dict(orient="records") if "confusion_matrix" in metrics else []),
        "figures": [figure.name for figure in figures], "missing": missing}
    publish(folder, {**{figure.name: figure.data for figure in figures},
                     "report.md": _markdown(title, sections).encode("utf-8"),
                     "report.json": (json.dumps(summary, indent=2) + "\n").encode("utf-8"),
                     "report.html": _html(title, sections).encode("utf-8")})
    return folder / "report.html"


def publish(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (name -> bytes) into ``folder``: all beside their names, then renamed.

    A report's files sit in the run folder beside the model, so they cannot be swapped in
    as one folder; instead every file is written first (a full disk or Ctrl-C then leaves
    the previous report whole), and the renames, which need no space, run with Ctrl-C and
    SIGTERM held back so that the set is never half old and half new.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> publish(folder, {"report.md": b"# new", "report.html": b"<p>new</p>"})
        >>> sorted(p.name for p in folder.iterdir())
        ['report.html', 'report.md']
    """
    staged: dict[Path, Path] = {}
    try:
        for name, data in files.items():
            partial = sibling(folder / name)
            staged[partial] = folder / name
            partial.write_bytes(data)
    except BaseException as error:
        for partial in staged:
            remove(partial)
        if is_disk_full(error):
            previous = (folder / "report.html").exists()
            raise disk_full_error(list(staged.values())[-1], "the previous report is "
                                  "unchanged" if previous else "") from error
        raise
    with signals_held():
        for partial, final in staged.items():
            os.replace(partial, final)


def _summary(metrics: dict[str, Any], extra: dict[str, Any], probe: float | None,
             unknown: dict[str, int]) -> Section:
    rows: list[tuple[str, Any]] = [("examples", metrics.get("n")),
                                   ("accuracy", metrics.get("accuracy"))]
    if probe is not None:
        rows.append(("linear-probe accuracy", probe))
    rows += [(f"top-{k} accuracy", value)
             for k, value in metrics.get("top_k_accuracy", {}).items() if k != "1"]
    rows += [("macro F1", metrics.get("macro_f1")), ("weighted F1", metrics.get("weighted_f1")),
             ("log loss", metrics.get("loss")), ("expected calibration error", metrics.get("ece")),
             ("ROC-AUC (macro, one-vs-rest)", metrics.get("roc_auc", {}).get("macro")),
             ("average precision (macro)", metrics.get("average_precision", {}).get("macro"))]
    rows += list(extra.items())
    shown = [(name, _format(value)) for name, value in rows if value is not None]
    section = Section("summary", [pd.DataFrame(shown, columns=["metric", "value"])])
    accuracy = metrics.get("accuracy")
    if probe is not None and accuracy is not None:
        relation = "below" if accuracy < probe else "at or above"
        section.blocks.append(f"This run's accuracy {accuracy:.4f} is {relation} its linear "
                              f"probe's {probe:.4f} (logistic regression on the frozen "
                              "backbone's features).")
    if unknown:
        names = ", ".join(f"{name} ({count})" for name, count in unknown.items())
        section.blocks.append(f"{sum(unknown.values())} examples have labels the model never "
                              f"saw and are left out of every number here: {names}.")
    return section


def _format(value: Any) -> str:
    if isinstance(value, float):
        # Scores and losses to four decimals; large numbers (seconds) as they read best.
        return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 10 else f"{value:g}"
    return str(value)


def _per_class(metrics: dict[str, Any], missing: list[str]) -> Section:
    if "per_class" not in metrics:
        return _not_drawn("per-class", "per-class metrics: the metrics have none", missing)
    auc = metrics.get("roc_auc", {}).get("per_class", {})
    precision = metrics.get("average_precision", {}).get("per_class", {})
    table = pd.DataFrame([
        {"class": name, "precision": row["precision"], "recall": row["recall"],
         "f1": row.get("f1", row.get("f1-score")), "support": int(row["support"]),
         "ROC-AUC": auc.get(name), "AP": precision.get(name)}
        for name, row in metrics["per_class"].items()])
    rows: list[str | pd.DataFrame | Png] = [_formatted(table)]
    for label, key in (("macro average", "macro_avg"), ("weighted average", "weighted_avg")):
        if key in metrics:
            average = metrics[key]
            rows.append(f"{label}: precision {average['precision']:.4f}, recall "
                        f"{average['recall']:.4f}, F1 {average['f1']:.4f}")
    return Section("per-class", rows)


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Floats as 4-decimal text and None as an empty cell, the same in HTML and markdown."""
    return table.apply(lambda column: column.map(
        lambda value: "" if value is None or (isinstance(value, float) and math.isnan(value))
        else _format(value)))


def _not_drawn(key: str, note: str, missing: list[str]) -> Section:
    missing.append(note)
    return Section(key, [f"Not drawn: {note}."])


def _confusion(metrics: dict[str, Any], class_names: list[str], missing: list[str]) -> Section:
    from tlkit.evaluation.plots import confusion_matrix_figure

    if "confusion_matrix" not in metrics:
        return _not_drawn("confusion", "confusion matrix: the metrics have none", missing)
    figure = confusion_matrix_figure(metrics["confusion_matrix"], class_names)
    return Section("confusion", ["Rows are true classes and columns predictions; the colour "
                                 "is the share of the row, so the diagonal is per-class recall.",
                                 _png("confusion_matrix", figure)])


def _most_confused(metrics: dict[str, Any], class_names: list[str],
                   missing: list[str]) -> Section:
    if "confusion_matrix" not in metrics:
        return _not_drawn("most-confused", "most-confused pairs: no confusion matrix", missing)
    table = most_confused(metrics["confusion_matrix"], class_names)
    if table.empty:
        return Section("most-confused", ["No confusions: every example is on the diagonal."])
    return Section("most-confused", ["share = count / examples of the true class.",
                                     _formatted(table)])


def _curves(metrics: dict[str, Any], predictions: pd.DataFrame | None, class_names: list[str],
            missing: list[str]) -> Section:
    from tlkit.evaluation.plots import roc_pr_figure

    if predictions is None:
        return _not_drawn("roc-pr", "ROC and precision-recall curves: they need per-example "
                          "probabilities (predictions.csv), none were given", missing)
    y_true, probabilities, _ = prediction_arrays(predictions, class_names)
    section = Section("roc-pr", [_png("roc_pr", roc_pr_figure(y_true, probabilities,
                                                              class_names))])
    skipped = metrics.get("roc_auc", {}).get("skipped", [])
    if skipped:
        section.blocks.append("Not scored one-vs-rest (no example of the class, or only that "
                              f"class): {', '.join(skipped)}.")
    return section


def _reliability(metrics: dict[str, Any], predictions: pd.DataFrame | None,
                 class_names: list[str], missing: list[str]) -> Section:
    """Reliability diagrams (before and after temperature scaling when the run was scaled),
    the conformal sets' coverage and size, and the risk-coverage curve."""
    from tlkit.evaluation.plots import reliability_figure

    if "reliability" not in metrics:
        return _not_drawn("reliability", "reliability diagram: the metrics have no calibration "
                          "data (metrics.json from an older tlkit; re-evaluate the run)", missing)
    blocks: list[str | pd.DataFrame | Png] = [
        "Examples binned by their top-class probability; a calibrated model's bars reach the "
        "diagonal. ECE is the examples-weighted mean gap (docs/calibration.md)."]
    scaling = metrics.get("temperature_scaling")
    if scaling and "reliability_before" in scaling:
        blocks += [_scaling_table(scaling),
                   _png("reliability_before", reliability_figure(
                       scaling["reliability_before"], scaling["ece_before"],
                       "Before temperature scaling")),
                   _png("reliability", reliability_figure(
                       metrics["reliability"], metrics.get("ece"),
                       "After temperature scaling"))]
    else:
        blocks.append(_png("reliability", reliability_figure(metrics["reliability"],
                                                             metrics.get("ece"))))
    return Section("reliability", blocks + _sets_and_abstaining(metrics, predictions, class_names))


def _scaling_table(scaling: dict[str, Any]) -> pd.DataFrame:
    temperature = scaling["temperature"]
    shown = (f"{temperature:.3f}" if isinstance(temperature, int | float)
             else f"{min(temperature):.3f} to {max(temperature):.3f} (one per class)")
    return pd.DataFrame([["temperature (fitted on val by NLL)", shown, ""],
                         ["ECE", f"{scaling['ece_before']:.4f}", f"{scaling['ece_after']:.4f}"],
                         ["NLL", f"{scaling['nll_before']:.4f}", f"{scaling['nll_after']:.4f}"]],
                        columns=["", "before (T = 1)", "after"])


def _sets_and_abstaining(metrics: dict[str, Any], predictions: pd.DataFrame | None,
                         class_names: list[str]) -> list[str | pd.DataFrame | Png]:
    """The coverage-vs-set-size table and the risk-coverage curve (when there are
    probabilities)."""
    from tlkit.evaluation.calibration import risk_coverage
    from tlkit.evaluation.metrics import prediction_arrays
    from tlkit.evaluation.plots import risk_coverage_figure

    blocks = _conformal_blocks(metrics)
    if predictions is None or predictions.empty:  # the ROC section notes the missing table
        return blocks
    y_true, probabilities, _ = prediction_arrays(predictions, class_names)
    return blocks + [
        "Risk-coverage: answering only when the top probability reaches a threshold "
        "(`--abstain-below P`), the share answered and the accuracy of those answers.",
        _png("risk_coverage", risk_coverage_figure(risk_coverage(probabilities, y_true)))]


def _conformal_blocks(metrics: dict[str, Any]) -> list[str | pd.DataFrame | Png]:
    """The coverage-vs-set-size table of the run's conformal sets, or why there is none."""
    rows = metrics.get("conformal")
    if not rows:  # runs from before calibration splits: not a section that went missing
        return ["No prediction sets: the run has no calibration split."]
    return [f"Split-conformal prediction sets (calibrated on {rows[0]['calibration_n']} "
            "calibration examples): the share of these examples whose set holds the "
            "true class (for label sets: every true label), and the mean set size, per asked "
            "coverage (`tlkit predict --coverage P`).",
            pd.DataFrame([{"score": row["score"], "asked coverage": row["asked"],
                           "empirical coverage": round(row["coverage"], 4),
                           "mean set size": round(row["mean_size"], 3)} for row in rows])]


def _multi_reliability(metrics: dict[str, Any], predictions: pd.DataFrame | None,
                       class_names: list[str], missing: list[str]) -> Section:
    """Every (example, label) decision's reliability before and after the per-class
    temperatures, and the per-label conformal sets' coverage and size."""
    from tlkit.evaluation.calibration import reliability
    from tlkit.evaluation.multilabel import multilabel_prediction_arrays
    from tlkit.evaluation.plots import reliability_figure

    scaling = metrics.get("temperature_scaling")
    if not scaling or "reliability_before" not in scaling or predictions is None:
        return _not_drawn("reliability", "reliability diagrams: they need the run's temperature "
                          "scaling numbers and per-example probabilities (predictions.csv)",
                          missing)
    y_true, probabilities, _ = multilabel_prediction_arrays(predictions, class_names)
    ece, diagram = reliability(probabilities, y_true, multi_label=True)
    return Section("reliability", [
        "Every (example, label) decision binned by its probability, as a two-class "
        "prediction; a calibrated model's bars reach the diagonal (docs/calibration.md).",
        _scaling_table(scaling),
        _png("reliability_before", reliability_figure(
            scaling["reliability_before"], scaling["ece_before"], "Before temperature scaling")),
        _png("reliability", reliability_figure(diagram, ece, "After temperature scaling")),
        *_conformal_blocks(metrics)])


def _training(history: pd.DataFrame | None, stages: list[dict[str, Any]], missing: list[str]
              ) -> Section:
    """The stage table (two stages or more) and the training curves, each drawn if it can be."""
    from tlkit.evaluation.plots import training_curves_figure

    table = _stage_table(stages) if len(stages) > 1 else []
    try:
        if history is None:
            raise UserError("no training history (history.csv)")
        curves = [_png("training_curves", training_curves_figure(history))]
    except UserError as error:
        curves = _not_drawn("training", f"training curves: {error}", missing).blocks
    return Section("training", [*table, *curves])


def _stage_table(stages: list[dict[str, Any]]) -> list[str | pd.DataFrame | Png]:
    """What each stage offered on val, what that gained on the stages before, which was kept.

    Example:
        >>> _stage_table([{"stage": "head", "keep": "best", "epochs": 3, "epoch": 1,
        ...                "monitor": "val_loss", "value": 0.3, "gain": None, "kept": True}]
        ...              )[1].iloc[0].astype(str).tolist()
        ['head', '3', 'best (epoch 2)', '0.3', '', 'kept']
    """
    monitor = stages[0]["monitor"]
    table = pd.DataFrame({
        "stage": [s["stage"] for s in stages],
        "epochs run": [s["epochs"] for s in stages],
        "offers": [f"{s['keep']} (epoch {s['epoch'] + 1})" for s in stages],
        monitor: [s["value"] for s in stages],
        **({"val_accuracy": [s["val_accuracy"] for s in stages]}
           if all("val_accuracy" in s for s in stages) else {}),
        f"gain in {monitor}": ["" if s["gain"] is None else f"{s['gain']:+.4f}" for s in stages],
        "kept": ["kept" if s["kept"] else "" for s in stages]})
    return ["Each stage offers its best epoch or its last one (the stage's keep field); "
            "the run keeps the offer that beats every earlier stage's. A gain is the "
            f"improvement in {monitor} over the best offer before it.", table]


def _top_losses(predictions: pd.DataFrame | None, class_names: list[str], kind: str,
                root: str | Path | None, missing: list[str]) -> Section:
    from tlkit.tasks import get_task

    if predictions is None or predictions["loss"].notna().sum() == 0:
        return _not_drawn("top-losses", "top losses: they need per-example losses "
                          "(predictions.csv), none were given", missing)
    gallery = get_task(kind).gallery
    intro = (f"The {TOP_LOSSES} examples the model got most wrong (highest cross-entropy); "
             f"{GALLERY_NOTES.get(gallery, GALLERY_NOTES['thumbnails'])}")
    block = GALLERIES[gallery](predictions, class_names, kind, root)
    return Section("top-losses", [intro, block])


def _thumbnail_gallery(predictions: pd.DataFrame, class_names: list[str], kind: str,
                       root: str | Path | None) -> Png:
    from tlkit.evaluation.plots import top_losses_figure

    return _png("top_losses", top_losses_figure(predictions, class_names, TOP_LOSSES, kind,
                                                root))


def _sentence_gallery(predictions: pd.DataFrame, class_names: list[str], kind: str,
                      root: str | Path | None) -> pd.DataFrame:
    worst = predictions.dropna(subset=["loss"]).nlargest(TOP_LOSSES, "loss")
    index = {name: i for i, name in enumerate(class_names)}
    probabilities = probability_columns(worst)
    true_p = [probabilities[k, index[label]] for k, label in enumerate(worst["label"])]
    table = pd.DataFrame({"loss": worst["loss"], "true": worst["label"], "p(true)": true_p,
                          "predicted": worst["predicted"], "p(predicted)": worst["confidence"],
                          "text": worst["input"]})
    return _formatted(table)


def _label_sets_gallery(predictions: pd.DataFrame, class_names: list[str], kind: str,
                        root: str | Path | None) -> pd.DataFrame:
    worst = predictions.dropna(subset=["loss"]).nlargest(TOP_LOSSES, "loss")
    return _formatted(pd.DataFrame({"loss": worst["loss"], "true": worst["label"],
                                    "predicted": worst["predicted"], "input": worst["input"]}))


# The top-loss gallery a task's ``gallery`` names: thumbnails (a figure), sentences or label
# sets (tables, whose text stays selectable).
GALLERIES = {"thumbnails": _thumbnail_gallery, "sentences": _sentence_gallery,
             "label-sets": _label_sets_gallery}
GALLERY_NOTES = {"thumbnails": "p is the probability the model gave that label.",
                 "label-sets": "the loss is the binary cross-entropy averaged over the classes, "
                               "and the sets are the true and the predicted labels (at the "
                               "thresholds)."}


def _multi_summary(metrics: dict[str, Any], extra: dict[str, Any], unknown: dict[str, int]
                   ) -> Section:
    precision = metrics.get("average_precision", {})
    cardinality = metrics.get("label_cardinality", {})
    rows = [("examples", metrics.get("n")), ("mAP (macro average precision)",
                                             precision.get("macro")),
            ("micro average precision", precision.get("micro")),
            ("micro F1", metrics.get("micro_f1")), ("macro F1", metrics.get("macro_f1")),
            ("samples F1", metrics.get("samples_f1")),
            ("subset accuracy (exact label set)", metrics.get("subset_accuracy")),
            ("Hamming loss", metrics.get("hamming_loss")),
            ("binary cross-entropy", metrics.get("loss")),
            ("labels per example, true", cardinality.get("true")),
            ("labels per example, predicted", cardinality.get("predicted")),
            *extra.items()]
    shown = [(name, _format(value)) for name, value in rows if value is not None]
    section = Section("summary", ["F1, subset accuracy and Hamming loss are at each class's "
                                  "threshold (see the per-class table).",
                                  pd.DataFrame(shown, columns=["metric", "value"])])
    if unknown:
        names = ", ".join(f"{name} ({count})" for name, count in unknown.items())
        section.blocks.append(f"{sum(unknown.values())} labels the model never saw are left "
                              f"out of the label sets scored here: {names}.")
    return section


def _multi_per_class(metrics: dict[str, Any], missing: list[str]) -> Section:
    if "per_class" not in metrics:
        return _not_drawn("per-class", "per-class metrics: the metrics have none", missing)
    precision = metrics.get("average_precision", {}).get("per_class", {})
    table = pd.DataFrame([
        {"class": name, "threshold": row.get("threshold"), "precision": row["precision"],
         "recall": row["recall"], "f1": row["f1"], "support": int(row["support"]),
         "AP": precision.get(name)}
        for name, row in metrics["per_class"].items()])
    return Section("per-class", ["Each class's decision threshold, and its scores there.",
                                 _formatted(table)])


def _label_confusion(metrics: dict[str, Any], missing: list[str]) -> Section:
    from tlkit.evaluation.plots import label_confusion_figure

    if "label_confusion" not in metrics:
        return _not_drawn("label-confusion", "per-label confusion: the metrics have none",
                          missing)
    return Section("label-confusion", [
        "One 2x2 matrix per label: rows true no / yes, columns predicted no / yes.",
        _png("label_confusion", label_confusion_figure(metrics["label_confusion"]))])


def _multi_curves(metrics: dict[str, Any], predictions: pd.DataFrame | None,
                  class_names: list[str], missing: list[str]) -> Section:
    from tlkit.evaluation.multilabel import multilabel_prediction_arrays
    from tlkit.evaluation.plots import multilabel_pr_figure

    if predictions is None:
        return _not_drawn("pr", "precision-recall curves: they need per-example "
                          "probabilities (predictions.csv), none were given", missing)
    y_true, probabilities, _ = multilabel_prediction_arrays(predictions, class_names)
    figure = multilabel_pr_figure(y_true, probabilities, class_names,
                                  metrics.get("thresholds"))
    return Section("pr", [_png("precision_recall", figure)])


def _png(name: str, figure: Any) -> Png:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return Png(f"{name}.png", buffer.getvalue())


def _html(title: str, sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = []
    for section in sections:
        body.append(f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>')
        for block in section.blocks:
            if isinstance(block, Png):
                body.append(_html_image(block))
            elif isinstance(block, pd.DataFrame):
                body.append(block.to_html(index=False, border=0, escape=True))
            else:
                warning = block.startswith("Not drawn") or " is below its linear" in block
                css = ' class="note"' if warning else ""
                body.append(f"<p{css}>{html.escape(block)}</p>")
        body.append("</section>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>"
            f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _html_image(png: Png) -> str:
    """The figure fitted to the page; a click shows it at full size (CSS only, no script),
    which is what makes the labels of a 100-class confusion matrix readable."""
    data = base64.b64encode(png.data).decode("ascii")
    key = png.name.removesuffix(".png")
    width = int.from_bytes(png.data[16:20], "big")  # the PNG header's IHDR width
    hint = (f"<p>Shrunk to fit: click the figure for full size ({width} pixels wide).</p>"
            if width > 1200 else "")
    return (f'{hint}<div class="zoom"><input type="checkbox" id="zoom-{key}">'
            f'<label for="zoom-{key}"><img alt="{html.escape(png.name)}" '
            f'src="data:image/png;base64,{data}"></label></div>')


def _markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Png):
                lines.append(f"![{section.title}]({block.name})")
            elif isinstance(block, pd.DataFrame):
                lines += _markdown_table(block)
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def _markdown_table(table: pd.DataFrame) -> list[str]:
    def cell(value: Any) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")

    header = "| " + " | ".join(cell(column) for column in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    return [header, rule] + ["| " + " | ".join(cell(value) for value in row) + " |"
                             for row in table.itertuples(index=False)]


def build_run_report(run_folder: str | Path, out: str | Path | None = None, *,
                     predictions: str | Path | None = None, split: str | None = None) -> Path:
    """Build the report of a finished run from its folder; returns report.html's path.

    Reads the run with ``load_run`` (classes, metrics.json, the recipe's kind, history.csv)
    and predictions.csv (or the ``predictions`` file given) when present. With predictions,
    every number is recomputed from the rows of ``split`` (default: test, else val, else
    the first); without, the numbers of metrics.json's ``split`` are shown. Writes into
    ``out`` (default: the run folder), e.g. ``runs/<run>/reports/<name>/``.

    Example:
        >>> build_run_report("runs/demo", "runs/demo/reports/new-data")  # doctest: +SKIP
        PosixPath('runs/demo/reports/new-data/report.html')
    """
    from tlkit.tasks import task_of

    run = load_run(run_folder, model=False)
    task = task_of(run)
    table_path = Path(predictions) if predictions else run.path / PREDICTIONS_FILE
    rows, unknown = None, None
    if table_path.is_file():
        table = task.read_predictions(table_path)
        split = split or _default_split(table["split"].unique().tolist())
        rows = table[table["split"] == split]
        if rows.empty:
            raise UserError(f"'{table_path}' has no rows of split '{split}'; it has: "
                            f"{', '.join(table['split'].unique())}")
        y_true, probabilities, unknown = task.prediction_arrays(rows, run.class_names)
        metrics = task.metrics(y_true, probabilities, run.class_names, task.thresholds(run))
        metrics.update(_calibration_numbers(run, task, rows, split))
    else:
        split = split or _default_split([key for key, value in run.metrics.items()
                                         if isinstance(value, dict) and "per_class" in value])
        metrics = run.metrics.get(split, {}) if split else {}
    return write_report(
        Path(out) if out else run.path, metrics, run.class_names, kind=task.name,
        predictions=rows, history=run.history, extra=_extra_numbers(run.metrics, split),
        probe_accuracy=_probe_accuracy(run.metrics, split), unknown=unknown,
        title=f"{run.path.resolve().name}: {split or 'no split'}", root=run.path,
        stages=run.metrics.get("stages"))


def _calibration_numbers(run: Any, task: Any, rows: pd.DataFrame, split: str
                         ) -> dict[str, Any]:
    """The run's temperature scaling as measured on ``split``, and the coverage on ``rows``
    of the prediction sets calibrated on the run's calibration split (when it has them)."""
    from tlkit.data.labels import CALIBRATION_SPLIT

    numbers: dict[str, Any] = {}
    scaling = (run.metrics or {}).get("temperature_scaling", {})
    if split in scaling:
        numbers["temperature_scaling"] = {"temperature": scaling["temperature"],
                                          **scaling[split]}
    calibration = task.calibration_rows(run)
    if calibration is not None and split != CALIBRATION_SPLIT:
        numbers["conformal"] = task.coverage(calibration, rows, run.class_names)
    return numbers


def _default_split(splits: list[str]) -> str | None:
    return next((name for name in ("test", "val") if name in splits), splits[0] if splits
                else None)


def _extra_numbers(saved: dict[str, Any], split: str | None) -> dict[str, Any]:
    """metrics.json's other numbers for the summary: top-level ones (e.g. train_seconds),
    each phase's wall time, the other splits' accuracy and macro F1, and one level of other
    groups (e.g. cv)."""
    extra: dict[str, Any] = {}
    for key, value in saved.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            extra[key] = value
        elif key == "phases":  # where the run's time went (tlkit.progress)
            extra.update({f"time: {name}": duration(seconds) for name, seconds in value.items()})
        elif isinstance(value, dict) and key not in (split, "probe"):
            wanted = ("accuracy", "macro_f1") if "per_class" in value else value
            extra.update({f"{key} {name}": value[name] for name in wanted
                          if isinstance(value.get(name), int | float)})
    return extra


def _probe_accuracy(saved: dict[str, Any], split: str | None) -> float | None:
    """The linear probe's accuracy on ``split``: ``probe[split]`` as a number or as a dict
    with ``accuracy``."""
    value = saved.get("probe", {}).get(split) if isinstance(saved.get("probe"), dict) else None
    if isinstance(value, dict):
        value = value.get("accuracy")
    return float(value) if isinstance(value, int | float) else None
