"""Figures of a run's evaluation, drawn from numbers and tables; returned, never shown.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot), so no GUI
backend is ever touched; ``figure.savefig(path)`` renders it with Agg.

Example:
    >>> figure = confusion_matrix_figure([[5, 1], [2, 4]], ["cat", "dog"])
    >>> figure.savefig("confusion.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from tlkit.errors import UserError
from tlkit.evaluation.metrics import one_vs_rest_scores, probability_columns

# Up to this many classes every cell is annotated and every class gets its own curve.
ANNOTATE_MAX = 20
CURVES_MAX = 10
# Above this many classes only the averages and the worst few classes are drawn.
WORST_SHOWN = 3


def confusion_matrix_figure(confusion: Any, class_names: list[str]) -> Figure:
    """Confusion matrix coloured by row share (recall per true class), counts written in
    cells up to 20 classes; tick labels shrink, rotate and thin out as classes grow.

    Example:
        >>> confusion_matrix_figure([[5, 1], [2, 4]], ["cat", "dog"]).axes[0].get_title()
        'Confusion matrix (colour: share of the true class)'
    """
    counts = np.asarray(confusion, dtype=int)
    classes = len(class_names)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = min(max(3.5 + 0.15 * classes, 5.0), 18.0)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.7, label="share of the true class")
    # Points of axis length per class decide the font; below 5 pt every other label goes.
    points_per_class = side * 0.75 * 72 / classes
    font = min(10.0, max(5.0, points_per_class * 0.8))
    step = max(1, math.ceil(5.0 / points_per_class))
    ticks = np.arange(0, classes, step)
    labels = [_short(class_names[i]) for i in ticks]
    axes.set_xticks(ticks, labels, fontsize=font, rotation=90 if classes > 6 else 0)
    axes.set_yticks(ticks, labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (colour: share of the true class)")
    if classes <= ANNOTATE_MAX:
        for (i, j), count in np.ndenumerate(counts):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=font,
                      color="white" if shares[i, j] > 0.5 else "black")
    return figure


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def roc_pr_figure(y_true: np.ndarray, probabilities: np.ndarray,
                  class_names: list[str]) -> Figure:
    """One-vs-rest ROC (left) and precision-recall (right) curves.

    Two classes: the second class's curves. Up to 10: one curve per class. More: the
    micro average, the macro-average ROC, and the three classes with the lowest scores.

    Example:
        >>> y = np.array([0, 1, 1, 0])
        >>> p = np.array([[.8, .2], [.3, .7], [.6, .4], [.4, .6]])
        >>> [a.get_title() for a in roc_pr_figure(y, p, ["a", "b"]).axes]
        ['ROC (one-vs-rest)', 'Precision-recall (one-vs-rest)']
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true, probabilities = np.asarray(y_true, dtype=int), np.asarray(probabilities)
    indicator = np.eye(len(class_names), dtype=int)[y_true]
    auc = one_vs_rest_scores(y_true, probabilities, class_names, "roc_auc")
    precision = one_vs_rest_scores(y_true, probabilities, class_names, "average_precision")
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    roc_axes, pr_axes = figure.subplots(1, 2)
    index = {name: i for i, name in enumerate(class_names)}
    prefix = "lowest: " if len(class_names) > CURVES_MAX else ""
    for name in _curve_classes(auc, class_names):
        column = index[name]
        fpr, tpr, _ = roc_curve(indicator[:, column], probabilities[:, column])
        roc_axes.plot(fpr, tpr, label=f"{prefix}{_short(name)} "
                                      f"(AUC {auc['per_class'][name]:.3f})")
    for name in _curve_classes(precision, class_names):
        column = index[name]
        p, r, _ = precision_recall_curve(indicator[:, column], probabilities[:, column])
        pr_axes.plot(r, p, label=f"{prefix}{_short(name)} "
                                 f"(AP {precision['per_class'][name]:.3f})")
    if len(class_names) > CURVES_MAX:
        _average_curves(roc_axes, pr_axes, indicator, probabilities, auc, precision)
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    _style(roc_axes, "ROC (one-vs-rest)", "false positive rate", "true positive rate")
    _style(pr_axes, "Precision-recall (one-vs-rest)", "recall", "precision")
    return figure


def _curve_classes(scores: dict[str, Any], class_names: list[str]) -> list[str]:
    """The classes drawn one by one: see ``roc_pr_figure``."""
    scored = scores["per_class"]
    if len(class_names) == 2:
        return [name for name in class_names[1:] if name in scored]
    if len(class_names) <= CURVES_MAX:
        return list(scored)
    return sorted(scored, key=scored.get)[:WORST_SHOWN]


def _average_curves(roc_axes: Any, pr_axes: Any, indicator: np.ndarray,
                    probabilities: np.ndarray, auc: dict[str, Any],
                    precision: dict[str, Any]) -> None:
    from sklearn.metrics import precision_recall_curve, roc_curve

    if auc["micro"] is None:
        return
    fpr, tpr, _ = roc_curve(indicator.ravel(), probabilities.ravel())
    roc_axes.plot(fpr, tpr, color="black", linewidth=2, label=f"micro (AUC {auc['micro']:.3f})")
    # Macro-average ROC: each scored class's TPR on one FPR grid, then the mean (as in
    # scikit-learn's multiclass ROC example).
    grid = np.linspace(0, 1, 201)
    scored = (indicator.sum(axis=0) > 0) & (indicator.sum(axis=0) < len(indicator))
    curves = [roc_curve(indicator[:, c], probabilities[:, c])[:2] for c in np.flatnonzero(scored)]
    mean_tpr = np.mean([np.interp(grid, f, t) for f, t in curves], axis=0)
    roc_axes.plot(grid, mean_tpr, color="darkorange", linestyle="--", linewidth=2,
                  label=f"macro (AUC {auc['macro']:.3f})")
    p, r, _ = precision_recall_curve(indicator.ravel(), probabilities.ravel())
    pr_axes.plot(r, p, color="black", linewidth=2,
                 label=f"micro (AP {precision['micro']:.3f}; macro {precision['macro']:.3f})")


def _style(axes: Any, title: str, xlabel: str, ylabel: str) -> None:
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # no curves when one class is all there is
        axes.legend(loc="lower right" if "ROC" in title else "lower left", fontsize=8)


def reliability_figure(reliability: dict[str, Any], ece: float | None = None,
                       title: str = "Reliability diagram") -> Figure:
    """Reliability diagram from ``classification_metrics(...)["reliability"]``: accuracy
    against confidence per bin (the diagonal is perfect calibration), counts below;
    ``title`` names it (e.g. before or after temperature scaling).

    Example:
        >>> r = {"edges": [0, .5, 1], "count": [0, 2], "accuracy": [None, .5],
        ...      "confidence": [None, .8]}
        >>> reliability_figure(r).axes[0].get_title()
        'Reliability diagram'
    """
    edges = np.asarray(reliability["edges"], dtype=float)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.array([np.nan if a is None else a for a in reliability["accuracy"]])
    confidence = np.array([np.nan if c is None else c for c in reliability["confidence"]])
    figure = Figure(figsize=(5, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, np.nan_to_num(accuracy), width=width, edgecolor="black",
            color="#4c72b0", label="accuracy")
    gap_bottom = np.fmin(accuracy, confidence)
    # Hatched outline only: the gap stays readable where it overlaps an accuracy bar.
    top.bar(centres, np.abs(confidence - accuracy), bottom=np.nan_to_num(gap_bottom),
            width=width, facecolor="none", edgecolor="#c44e52", hatch="//",
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    title = title + (f" (ECE {ece:.3f})" if ece is not None else "")
    top.set(ylim=(0, 1), ylabel="accuracy", title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, reliability["count"], width=width, color="grey", edgecolor="black")
    bottom.set(xlim=(0, 1), xlabel="confidence (top-class probability)", ylabel="examples")
    return figure


def risk_coverage_figure(rows: list[dict[str, Any]]) -> Figure:
    """Accuracy of the answered inputs against the share answered, one point per
    ``--abstain-below`` threshold (``evaluation.calibration.risk_coverage`` rows).

    Example:
        >>> rows = [{"abstain_below": 0.0, "coverage": 1.0, "accuracy": 0.8},
        ...         {"abstain_below": 0.5, "coverage": 0.6, "accuracy": 0.95}]
        >>> risk_coverage_figure(rows).axes[0].get_xlabel()
        'coverage (share of inputs answered)'
    """
    shown = [row for row in rows if row["accuracy"] is not None]
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.subplots()
    axes.plot([row["coverage"] for row in shown], [row["accuracy"] for row in shown],
              marker="o", color="#4c72b0")
    for row in shown[::4]:  # every fourth threshold named: the figure stays readable
        axes.annotate(f"{row['abstain_below']:g}", (row["coverage"], row["accuracy"]),
                      textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set(xlim=(0, 1.02), xlabel="coverage (share of inputs answered)",
             ylabel="accuracy of the answered", title="Risk-coverage (labels: --abstain-below)")
    axes.grid(alpha=0.3)
    return figure


def training_curves_figure(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train and validation, from a Keras ``history.csv``;
    with a ``stage`` column of several stages, a line where each starts and its name on top.

    Example:
        >>> h = pd.DataFrame({"epoch": [0, 1, 2], "stage": ["head", "head", "full"],
        ...                   "loss": [1, .6, .4], "val_loss": [.9, .7, .5]})
        >>> [a.get_title() for a in training_curves_figure(h).axes]
        ['Loss']
    """
    epochs = (history["epoch"] + 1 if "epoch" in history.columns
              else pd.Series(range(1, len(history) + 1))).to_numpy()
    metrics = list(dict.fromkeys(str(column).removeprefix("val_") for column in history.columns))
    accuracy = "accuracy" if "accuracy" in metrics else next(
        (name for name in metrics if name.endswith(("accuracy", "acc"))), None)
    panels = [(title, column) for title, column in
              (("Loss", "loss" if "loss" in metrics else None), ("Accuracy", accuracy)) if column]
    if not panels:
        raise UserError("history has no loss or accuracy column; expected a Keras CSVLogger "
                        f"file, got columns: {', '.join(map(str, history.columns))}")
    # One stage has no boundary to mark.
    stages = history["stage"].unique() if "stage" in history.columns else []
    figure = Figure(figsize=(5.6 * len(panels), 4.5), layout="constrained")
    for axes, (title, column) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels,
                                     strict=True):
        for name, style in ((column, "-"), (f"val_{column}", "--")):
            if name in history.columns:
                axes.plot(epochs, history[name], style, marker="o", markersize=3,
                          label="validation" if name.startswith("val_") else "train")
        axes.set(xlabel="epoch", ylabel=column)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        # Stage names sit between the title and the plot, clear of the curves and legend.
        axes.set_title(title, pad=18 if len(stages) > 1 else 6)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        if len(stages) > 1:
            _mark_stages(axes, epochs, history["stage"].astype(str).to_numpy())
    return figure


def _mark_stages(axes: Any, epochs: np.ndarray, stages: np.ndarray) -> None:
    starts = [0] + [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    ends = starts[1:] + [len(stages)]
    on_top = blended_transform_factory(axes.transData, axes.transAxes)
    for start, end in zip(starts, ends, strict=True):
        if start > 0:
            axes.axvline((epochs[start - 1] + epochs[start]) / 2, color="grey", linestyle=":")
        middle = (epochs[start] + epochs[end - 1]) / 2
        axes.text(middle, 1.01, stages[start], transform=on_top, ha="center", va="bottom",
                  fontsize=9, color="dimgrey")


def top_losses_figure(predictions: pd.DataFrame, class_names: list[str], n: int = 12,
                      kind: str = "image", root: str | Path | None = None) -> Figure:
    """The ``n`` examples with the highest loss: image thumbnails (the ``input`` column's
    files; relative paths are tried as given, then under ``root``) titled with the true
    and predicted labels and their probabilities, or a table of the sentences: the gallery
    the task of ``kind`` names (``Task.gallery``).

    Example:
        >>> t = pd.DataFrame({"input": ["a dull film"], "label": ["pos"], "predicted": ["neg"],
        ...                   "confidence": [.9], "loss": [2.3], "p0": [.9], "p1": [.1]})
        >>> top_losses_figure(t, ["neg", "pos"], kind="textcnn").axes[0].get_title()
        'Top 1 losses'
    """
    from tlkit.tasks import get_task

    gallery = LOSS_GALLERIES[get_task(kind).gallery]
    worst = predictions.dropna(subset=["loss"]).nlargest(n, "loss")
    probabilities = probability_columns(worst)
    index = {name: i for i, name in enumerate(class_names)}
    rows = [(str(row.input), str(row.label), float(probabilities[k, index[row.label]]),
             str(row.predicted), float(row.confidence), float(row.loss))
            for k, row in enumerate(worst.itertuples(index=False))]
    return gallery(rows, root)


def _thumbnails(rows: list[tuple[Any, ...]], root: str | Path | None) -> Figure:
    columns = min(6, max(1, len(rows)))
    lines = max(1, math.ceil(len(rows) / columns))
    figure = Figure(figsize=(1.9 * columns, 2.5 * lines), layout="constrained")
    grid = np.atleast_1d(figure.subplots(lines, columns)).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, (path, label, p_true, predicted, confidence, loss) in zip(grid, rows,
                                                                        strict=False):
        image = _thumbnail(path, root)
        if image is None:
            axes.text(0.5, 0.5, f"cannot open\n{_short(Path(path).name, 28)}", ha="center",
                      va="center", transform=axes.transAxes)
        else:
            axes.imshow(image)
        axes.set_title(f"true {_short(label)} ({p_true:.2f})\npred {_short(predicted)} "
                       f"({confidence:.2f})\nloss {loss:.2f}", fontsize=8,
                       color="black" if predicted == label else "#b22222")
    figure.suptitle(f"Top {len(rows)} losses")
    return figure


def _thumbnail(path: str, root: str | Path | None) -> np.ndarray | None:
    from PIL import Image, UnidentifiedImageError

    file = Path(path)
    if not file.is_file() and root is not None and not file.is_absolute():
        file = Path(root) / file
    try:
        with Image.open(file) as image:
            image = image.convert("RGB")
            image.thumbnail((224, 224))
            return np.asarray(image)
    except (OSError, UnidentifiedImageError):
        return None


def _sentence_table(rows: list[tuple[Any, ...]]) -> Figure:
    cells = [[f"{loss:.2f}", f"{_short(label)} ({p_true:.2f})",
              f"{_short(predicted)} ({confidence:.2f})",
              "\n".join(textwrap.wrap(text, 70, max_lines=3, placeholder=" …"))]
             for text, label, p_true, predicted, confidence, loss in rows]
    figure = Figure(figsize=(12, 1.0 + 0.55 * max(1, len(rows))), layout="constrained")
    axes = figure.add_subplot()
    axes.axis("off")
    axes.set_title(f"Top {len(rows)} losses")
    if cells:
        table = axes.table(cellText=cells, colLabels=["loss", "true (p)", "predicted (p)", "text"],
                           colWidths=[0.06, 0.14, 0.14, 0.66], cellLoc="left", loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        for (row, _), cell in table.get_celld().items():
            cell.set_height(0.9 / (len(cells) + 1))
            cell.PAD = 0.02
            if row == 0:
                cell.set_text_props(weight="bold")
    return figure


def _sentence_gallery(rows: list[tuple[Any, ...]], root: str | Path | None) -> Figure:
    return _sentence_table(rows)


# The top-loss gallery a task's ``gallery`` names (``tlkit.tasks``).
LOSS_GALLERIES = {"thumbnails": _thumbnails, "sentences": _sentence_gallery}


# Up to this many labels get a 2x2 confusion cell each; above, those with the most errors.
GRID_MAX = 24


def multilabel_pr_figure(y_true: Any, probabilities: Any, class_names: list[str],
                         thresholds: Any = None) -> Figure:
    """Precision-recall curve of each label and their micro average, from a 0/1 indicator
    matrix and independent (sigmoid) probabilities; with ``thresholds``, a dot where each
    label's chosen threshold puts it.

    Up to 10 labels: every label with a positive example. More: the three with the lowest
    average precision, beside the micro average (legend: micro and macro mAP).

    Example:
        >>> y, p = np.array([[1, 0], [0, 1], [1, 1]]), np.array([[.9, .2], [.3, .7], [.6, .4]])
        >>> figure = multilabel_pr_figure(y, p, ["sun", "sea"], thresholds=[.5, .3])
        >>> figure.axes[0].get_title(), len(figure.axes)
        ('Precision-recall per label', 1)
    """
    from sklearn.metrics import precision_recall_curve, precision_score, recall_score

    from tlkit.evaluation.multilabel import apply_thresholds, average_precisions, checked

    labels, scores = checked(y_true, probabilities, len(class_names))
    precision = average_precisions(labels, scores, class_names)
    scored = precision["per_class"]
    many = len(class_names) > CURVES_MAX
    drawn = sorted(scored, key=scored.get)[:WORST_SHOWN] if many else list(scored)
    called = apply_thresholds(scores, thresholds) if thresholds is not None else None
    index = {name: i for i, name in enumerate(class_names)}
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    axes = figure.add_subplot()
    for name in drawn:
        c = index[name]
        p, r, _ = precision_recall_curve(labels[:, c], scores[:, c])
        (line,) = axes.plot(r, p, label=f"{'lowest: ' if many else ''}{_short(name)} "
                                        f"(AP {scored[name]:.3f})")
        if called is not None:
            # No example called positive: precision 1 at recall 0, the curve's own end.
            axes.plot(recall_score(labels[:, c], called[:, c], zero_division=0),
                      precision_score(labels[:, c], called[:, c], zero_division=1), "o",
                      color=line.get_color())
    if precision["micro"] is not None:
        p, r, _ = precision_recall_curve(labels.ravel(), scores.ravel())
        axes.plot(r, p, color="black", linewidth=2, label=f"micro (AP {precision['micro']:.3f}; "
                                                          f"macro {precision['macro']:.3f})")
    if called is not None and drawn:
        axes.plot([], [], "o", color="grey", label="at the chosen threshold")
    _style(axes, "Precision-recall per label", "recall", "precision")
    return figure


def label_confusion_figure(confusions: dict[str, Any]) -> Figure:
    """A 2x2 confusion matrix per label, from ``multilabel_metrics(...)["label_confusion"]``
    ({label: [[tn, fp], [fn, tp]]}): rows true no/yes, columns predicted no/yes, coloured by
    the share of the true row, counts written. Above 24 labels, the 24 with the most errors
    (false positives plus false negatives).

    Example:
        >>> figure = label_confusion_figure({"sun": [[5, 1], [0, 4]], "sea": [[3, 0], [2, 5]]})
        >>> [axes.get_title() for axes in figure.axes]
        ['sun', 'sea']
    """
    counts = {name: np.asarray(matrix, dtype=int).reshape(2, 2)
              for name, matrix in confusions.items()}
    names = list(counts)
    if len(names) > GRID_MAX:
        names = sorted(names, key=lambda name: -(counts[name][0, 1] + counts[name][1, 0]))
        names = names[:GRID_MAX]
    columns = min(6, max(1, len(names)))
    lines = max(1, math.ceil(len(names) / columns))
    figure = Figure(figsize=(2.1 * columns, 2.2 * lines + 0.6), layout="constrained")
    for k, name in enumerate(names):
        axes = figure.add_subplot(lines, columns, k + 1)
        rows = counts[name].sum(axis=1, keepdims=True)
        shares = np.divide(counts[name], rows, out=np.zeros((2, 2)), where=rows > 0)
        axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        for (i, j), count in np.ndenumerate(counts[name]):
            axes.text(j, i, str(count), ha="center", va="center", fontsize=9,
                      color="white" if shares[i, j] > 0.5 else "black")
        axes.set_xticks([0, 1], ["no", "yes"], fontsize=8)
        axes.set_yticks([0, 1], ["no", "yes"], fontsize=8)
        axes.set_title(_short(name), fontsize=9)
        if k % columns == 0:
            axes.set_ylabel("true", fontsize=8)
        if k >= len(names) - columns:
            axes.set_xlabel("predicted", fontsize=8)
    shown = (f": the {len(names)} of {len(counts)} with the most errors"
             if len(names) < len(counts) else "")
    figure.suptitle(f"Confusion per label{shown} (colour: share of the true row)", fontsize=10)
    return figure
