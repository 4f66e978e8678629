"""Multi-label metrics from independent sigmoid probabilities, computed by scikit-learn: the
per-class decision thresholds chosen on validation, the metrics at those thresholds, the
per-example loss and the predictions table (``predictions.csv``) of a multi-label run.

Labels are an indicator matrix (examples x classes, 0/1); probabilities are (examples x
classes) in [0, 1]. An example has class ``c`` when its probability reaches the class's
threshold: ``probabilities[:, c] >= thresholds[c]`` (``apply_thresholds``). Every value
returned for JSON is JSON-safe (floats, ints, lists, dicts with string keys, None).

Example:
    >>> y = np.array([[1, 0], [0, 1], [1, 1]])
    >>> p = np.array([[0.9, 0.2], [0.3, 0.7], [0.8, 0.6]])
    >>> m = multilabel_metrics(y, p, ["cat", "dog"], choose_thresholds(y, p))
    >>> m["subset_accuracy"], m["average_precision"]["macro"]
    (1.0, 1.0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError
from tlkit.evaluation.metrics import _scores, class_probabilities

# A class whose validation labels are all 0 (or all 1) shows no precision/recall trade-off
# to choose from; it keeps the threshold a calibrated sigmoid would use.
DEFAULT_THRESHOLD = 0.5
# Joins a label set in predictions.csv ("beach|sunset"); the empty string is the empty set.
LABEL_SEP = "|"
MULTILABEL_PREDICTION_COLUMNS = ("split", "input", "label", "predicted", "loss")


def checked(y_true: Any, probabilities: Any, classes: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` as an int 0/1 matrix and ``probabilities`` as floats, both (examples,
    classes) and non-empty, or a UserError that says which is wrong.

    Probabilities keep a float dtype as given (float32 sigmoid outputs stay float32), so
    losses clip as scikit-learn's ``log_loss`` clips them.

    Example:
        >>> y, p = checked([[1, 0]], [[0.75, 0.25]], classes=2)
        >>> y.tolist(), p.dtype.name
        ([[1, 0]], 'float64')
    """
    labels, scores = np.asarray(y_true), np.asarray(probabilities)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(float)
    columns = classes if classes is not None else (labels.shape[1] if labels.ndim == 2 else 0)
    if labels.ndim != 2 or scores.shape != labels.shape or labels.shape[1] != columns:
        raise UserError(f"multi-label labels have shape {labels.shape} and probabilities "
                        f"{scores.shape}; expected both (examples, {columns}): one row per "
                        "example, one 0/1 column per class")
    if len(labels) == 0:
        raise UserError("no examples to evaluate; pass data with at least one labelled example")
    if not np.isin(labels, (0, 1)).all():
        odd = labels[~np.isin(labels, (0, 1))].flat[0]
        raise UserError(f"multi-label labels must be 0 or 1 per class; got {odd}")
    inside = (scores >= 0) & (scores <= 1)  # False for NaN too
    if not inside.all():
        raise UserError("multi-label probabilities must be numbers in [0, 1] (independent "
                        f"sigmoid outputs); got {scores[~inside].flat[0]}")
    return labels.astype(int), scores


def choose_thresholds(y_true: Any, probabilities: Any) -> np.ndarray:
    """Per-class decision thresholds that maximise each class's F1 on these (validation)
    examples, from scikit-learn's ``precision_recall_curve``.

    Rules: among thresholds of equal best F1 the lowest wins (more recall for the same F1).
    The threshold returned is the midpoint between the lowest score called positive and the
    highest score below it (0 when none is), so the validation predictions are the ones of
    the best F1 and new examples get the widest margin on each side. A class with no
    positive or no negative example here keeps ``DEFAULT_THRESHOLD`` (0.5).

    Example:
        >>> y = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
        >>> choose_thresholds(y, np.array([[.1, .4], [.2, .3], [.6, .2], [.7, .1]])).tolist()
        [0.4, 0.5]
    """
    labels, scores = checked(y_true, probabilities)
    return np.array([_best_threshold(labels[:, c], scores[:, c])
                     for c in range(labels.shape[1])], dtype=float)


def _best_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    positives = int(truth.sum())
    if positives in (0, len(truth)):
        return DEFAULT_THRESHOLD
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    # The curve's last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    # thresholds rise, so the first index of the best F1 is the lowest threshold; the
    # tolerance keeps one F1 reached through two float paths a tie.
    chosen = float(thresholds[np.flatnonzero(f1 >= f1.max() - 1e-12)[0]])
    below = scores[scores < chosen]
    lower = float(below.max()) if below.size else 0.0
    middle = (lower + chosen) / 2
    return middle if middle > lower else chosen  # adjacent floats: stay on the safe side


def apply_thresholds(probabilities: Any, thresholds: Any) -> np.ndarray:
    """The predicted label sets as a 0/1 int matrix: ``probabilities >= thresholds``.

    Example:
        >>> apply_thresholds(np.array([[0.4, 0.4]]), [0.4, 0.5]).tolist()
        [[1, 0]]
    """
    scores = np.asarray(probabilities, dtype=float)
    limits = np.asarray(thresholds, dtype=float).reshape(-1)
    if scores.ndim != 2 or limits.shape != (scores.shape[1],):
        raise UserError(f"{limits.size} thresholds for probabilities of shape {scores.shape}; "
                        "give one threshold per class")
    return (scores >= limits).astype(int)


def multilabel_metrics(y_true: Any, probabilities: Any, class_names: list[str],
                       thresholds: Any) -> dict[str, Any]:
    """Metrics of a multi-label run, JSON-safe, shaped like ``classification_metrics``'s.

    Keys: ``n``; ``loss`` (mean binary cross-entropy over every example and class, as
    Keras reports it); ``subset_accuracy`` (exact label set); ``hamming_loss``;
    ``micro_f1``, ``macro_f1``, ``weighted_f1``, ``samples_f1`` at ``thresholds`` (0/0
    counts 0 as in ``classification_metrics``, except that an example with no true and no
    predicted label scores 1 in the samples average: it is right);
    ``per_class`` {name: precision, recall, f1, support, threshold}; ``micro_avg``,
    ``macro_avg``, ``weighted_avg``, ``samples_avg`` (precision, recall, f1, support);
    ``average_precision`` {per_class, macro, micro, skipped} (macro and micro mAP; classes
    with no positive example are skipped, as in ``one_vs_rest_scores``);
    ``label_confusion`` {name: [[tn, fp], [fn, tp]]}; ``label_cardinality`` {true,
    predicted} (mean labels per example); ``thresholds`` (one per class, class order).

    Example:
        >>> y = np.array([[1, 0], [0, 1]])
        >>> m = multilabel_metrics(y, np.array([[.9, .6], [.2, .8]]), ["a", "b"], [.5, .5])
        >>> m["subset_accuracy"], m["hamming_loss"], m["label_cardinality"]
        (0.5, 0.25, {'true': 1.0, 'predicted': 1.5})
    """
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        hamming_loss,
        log_loss,
        multilabel_confusion_matrix,
    )

    labels, scores = checked(y_true, probabilities, len(class_names))
    limits = np.asarray(thresholds, dtype=float).reshape(-1)
    predicted = apply_thresholds(scores, limits)
    report = classification_report(labels, predicted, labels=list(range(len(class_names))),
                                   target_names=class_names, output_dict=True,
                                   zero_division=0)
    confusion = multilabel_confusion_matrix(labels, predicted)
    averages = {key: _scores(report[f"{key} avg"]) for key in ("micro", "macro", "weighted")}
    averages["samples"] = _samples_average(labels, predicted)
    return {
        "n": int(len(labels)),
        "loss": float(log_loss(labels.ravel(), scores.ravel(), labels=[0, 1])),
        "subset_accuracy": float(accuracy_score(labels, predicted)),
        "hamming_loss": float(hamming_loss(labels, predicted)),
        **{f"{key}_f1": averages[key]["f1"] for key in averages},
        "per_class": {name: {**_scores(report[name]), "threshold": float(limit)}
                      for name, limit in zip(class_names, limits, strict=True)},
        **{f"{key}_avg": value for key, value in averages.items()},
        "average_precision": average_precisions(labels, scores, class_names),
        "label_confusion": {name: matrix.tolist()
                            for name, matrix in zip(class_names, confusion, strict=True)},
        "label_cardinality": {"true": float(labels.sum(axis=1).mean()),
                              "predicted": float(predicted.sum(axis=1).mean())},
        "thresholds": [float(limit) for limit in limits],
    }


def _samples_average(labels: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 per example, averaged; an example with no true and no
    predicted label is right, so it scores 1 (``zero_division=1``), not 0."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="samples", zero_division=1)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "support": int(labels.sum())}


def average_precisions(y_true: Any, probabilities: Any, class_names: list[str]
                       ) -> dict[str, Any]:
    """Average precision per class, macro (mAP over the scored classes) and micro.

    A class with no positive example has no defined AP: it is listed under ``skipped``
    and left out of the macro average; the micro average pools every class.

    Example:
        >>> s = average_precisions(np.array([[1, 0], [0, 0]]), np.array([[.8, .3], [.4, .1]]),
        ...                        ["a", "b"])
        >>> s["per_class"], s["macro"], s["skipped"]
        ({'a': 1.0}, 1.0, ['b'])
    """
    from sklearn.metrics import average_precision_score

    labels, scores = checked(y_true, probabilities, len(class_names))
    scored = labels.sum(axis=0) > 0
    skipped = [name for name, keep in zip(class_names, scored, strict=True) if not keep]
    if not scored.any():
        return {"per_class": {}, "macro": None, "micro": None, "skipped": skipped}
    per_class = average_precision_score(labels[:, scored], scores[:, scored], average=None)
    names = [name for name, keep in zip(class_names, scored, strict=True) if keep]
    return {"per_class": {name: float(value)
                          for name, value in zip(names, np.atleast_1d(per_class), strict=True)},
            "macro": float(np.mean(per_class)),
            "micro": float(average_precision_score(labels, scores, average="micro")),
            "skipped": skipped}


def example_losses(y_true: Any, probabilities: Any) -> np.ndarray:
    """Each example's binary cross-entropy, averaged over its classes (Keras's
    ``binary_crossentropy`` per example), clipped as scikit-learn's ``log_loss`` clips, so
    the mean over examples equals ``log_loss(y_true.ravel(), probabilities.ravel())``.

    Example:
        >>> example_losses(np.array([[1, 0]]), np.array([[0.5, 0.5]])).round(4).tolist()
        [0.6931]
    """
    labels, scores = checked(y_true, probabilities)
    eps = np.finfo(scores.dtype).eps
    clipped = np.clip(scores, eps, 1 - eps).astype(float)
    return -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped), axis=1)


def multilabel_predictions_table(inputs: Sequence[Any], y_true: Any, probabilities: Any,
                                 class_names: list[str], thresholds: Any,
                                 split: str | Sequence[str]) -> pd.DataFrame:
    """One row per example: split, input, label (true set), predicted (set at
    ``thresholds``), loss (``example_losses``), p0..p{C-1} (``p{i}`` is the probability of
    ``class_names[i]``). Sets are names in class order joined with ``|``; empty is "".

    Read it back with ``read_predictions(path, columns=MULTILABEL_PREDICTION_COLUMNS)``
    and ``multilabel_prediction_arrays``.

    Example:
        >>> t = multilabel_predictions_table(["a.png"], [[1, 1]], [[0.9, 0.25]], ["x", "y"],
        ...                                  [0.5, 0.5], "test")
        >>> t.iloc[0][["label", "predicted"]].tolist(), t.columns.tolist()[4:]
        (['x|y', 'x'], ['loss', 'p0', 'p1'])
    """
    separated = [name for name in class_names if LABEL_SEP in name]
    if separated:
        raise UserError(f"class name '{separated[0]}' contains '{LABEL_SEP}', which joins "
                        "label sets in predictions.csv; rename the class")
    labels, scores = checked(y_true, probabilities, len(class_names))
    if len(inputs) != len(labels):
        raise UserError(f"{len(inputs)} inputs but {len(labels)} rows of labels and "
                        "probabilities; give one input per example")
    table = pd.DataFrame({
        "split": split, "input": [str(item) for item in inputs],
        "label": _joined(labels, class_names),
        "predicted": _joined(apply_thresholds(scores, thresholds), class_names),
        "loss": example_losses(labels, scores)})
    columns = pd.DataFrame(scores.astype(float),
                           columns=[f"p{i}" for i in range(len(class_names))])
    return pd.concat([table, columns], axis=1)


def _joined(indicator: np.ndarray, class_names: list[str]) -> list[str]:
    return [LABEL_SEP.join(class_names[c] for c in np.flatnonzero(row)) for row in indicator]


def multilabel_prediction_arrays(table: pd.DataFrame, class_names: list[str]
                                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The indicator matrix and probabilities of a multi-label predictions table, and the
    counts of labels the model never saw.

    Unknown labels are dropped from their sets and counted; their examples stay, scored on
    the classes the model knows.

    Example:
        >>> t = pd.DataFrame({"label": ["x|zebra", ""], "p0": [.8, .1], "p1": [.3, .6]})
        >>> y, p, unknown = multilabel_prediction_arrays(t, ["x", "y"])
        >>> y.tolist(), unknown
        ([[1, 0], [0, 0]], {'zebra': 1})
    """
    probabilities = class_probabilities(table, class_names)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros(probabilities.shape, dtype=int)
    unknown: Counter[str] = Counter()
    for row, joined in enumerate(table["label"].astype(str)):
        for name in filter(None, joined.split(LABEL_SEP)):
            if name in index:
                labels[row, index[name]] = 1
            else:
                unknown[name] += 1
    return labels, probabilities, dict(sorted(unknown.items(), key=lambda i: (-i[1], i[0])))
