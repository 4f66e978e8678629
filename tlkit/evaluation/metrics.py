"""Classification metrics from predicted probabilities, computed by scikit-learn, and the
predictions table (``predictions.csv``) that training and evaluation write and reports read.

Every value is JSON-safe (floats, ints, lists, dicts with string keys, None).

Example:
    >>> import numpy as np
    >>> m = classification_metrics(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    >>> m["accuracy"]
    1.0
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError

# 15 equal-width bins, as in Guo et al. 2017 ("On Calibration of Modern Neural Networks").
CALIBRATION_BINS = 15
MAX_TOP_K = 5
PREDICTION_COLUMNS = ("split", "input", "label", "predicted", "confidence", "loss")


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray,
                           class_names: list[str],
                           calibration_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Accuracy, top-k, log loss (``loss``), per-class and averaged precision/recall/F1,
    confusion matrix (counts and row-normalised), one-vs-rest ROC-AUC and average precision,
    expected calibration error (``ece``) and the reliability diagram's data.

    ``y_true`` holds class ids (indices into ``class_names``); ``probabilities`` is
    (examples, classes). Classes absent from ``y_true`` get zero recall and support and are
    listed under ``roc_auc["skipped"]`` instead of being scored.

    Example:
        >>> y = np.array([0, 1, 1])
        >>> p = np.array([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
        >>> m = classification_metrics(y, p, ["a", "b"])
        >>> round(m["accuracy"], 3), m["confusion_matrix"], m["roc_auc"]["macro"]
        (0.667, [[1, 0], [1, 1]], 1.0)
    """
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        log_loss,
    )

    y_true, probabilities = _checked(y_true, probabilities, class_names)
    labels = list(range(len(class_names)))
    predicted = probabilities.argmax(axis=1)
    report = classification_report(y_true, predicted, labels=labels, target_names=class_names,
                                   output_dict=True, zero_division=0)
    ece, reliability = calibration(y_true, probabilities, calibration_bins)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "loss": float(log_loss(y_true, probabilities, labels=labels)),
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "weighted_f1": float(report["weighted avg"]["f1-score"]),
        "top_k_accuracy": top_k_accuracies(y_true, probabilities),
        "per_class": {name: _scores(report[name]) for name in class_names},
        "macro_avg": _scores(report["macro avg"]),
        "weighted_avg": _scores(report["weighted avg"]),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=labels).tolist(),
        "confusion_matrix_normalized": confusion_matrix(
            y_true, predicted, labels=labels, normalize="true").tolist(),
        "roc_auc": one_vs_rest_scores(y_true, probabilities, class_names, "roc_auc"),
        "average_precision": one_vs_rest_scores(y_true, probabilities, class_names,
                                                "average_precision"),
        "ece": ece,
        "reliability": reliability,
    }


def _checked(y_true: Any, probabilities: Any, class_names: list[str]
             ) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=int).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=float)
    # float32 softmax rows read back as float64 (e.g. from predictions.csv) miss 1 by ~1e-7,
    # beyond scikit-learn's float64 tolerance: put such rows back on the simplex.
    sums = probabilities.sum(axis=1, keepdims=True) if probabilities.ndim == 2 else None
    if sums is not None and np.all(np.abs(sums - 1) < 1e-4):
        probabilities = probabilities / sums
    if len(y_true) == 0:
        raise UserError("no examples to evaluate; pass data with at least one labelled example")
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), len(class_names)):
        raise UserError(f"probabilities have shape {probabilities.shape}; expected "
                        f"({len(y_true)}, {len(class_names)}): one row per example, one "
                        "column per class")
    if y_true.min() < 0 or y_true.max() >= len(class_names):
        raise UserError(f"labels must be class ids 0..{len(class_names) - 1}; got "
                        f"{int(y_true.min())}..{int(y_true.max())}")
    return y_true, probabilities


def _scores(row: dict[str, float]) -> dict[str, Any]:
    return {"precision": float(row["precision"]), "recall": float(row["recall"]),
            "f1": float(row["f1-score"]), "support": int(row["support"])}


def top_k_accuracies(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Top-k accuracy for k = 1 .. min(5, classes - 1), keyed by ``str(k)``.

    Example:
        >>> top_k_accuracies(np.array([2, 0]), np.array([[.5, .3, .2], [.1, .6, .3]]))
        {'1': 0.0, '2': 0.0}
    """
    from sklearn.metrics import top_k_accuracy_score

    classes = probabilities.shape[1]
    # scikit-learn reads two-class scores as the probability of the second class.
    scores = probabilities[:, 1] if classes == 2 else probabilities
    return {str(k): float(top_k_accuracy_score(y_true, scores, k=k, labels=range(classes)))
            for k in range(1, min(MAX_TOP_K, classes - 1) + 1)}


def one_vs_rest_scores(y_true: np.ndarray, probabilities: np.ndarray, class_names: list[str],
                       score: str = "roc_auc") -> dict[str, Any]:
    """One-vs-rest ``roc_auc`` or ``average_precision`` per class, macro and micro averaged.

    A class is scored only when ``y_true`` has both examples of it and of other classes
    (otherwise the score is undefined); the others are listed under ``skipped``, and the
    macro average is over the scored classes.

    Example:
        >>> s = one_vs_rest_scores(np.array([0, 0, 1]), np.array([[.9, .1, 0], [.3, .6, .1],
        ...                        [.2, .7, .1]]), ["a", "b", "c"])
        >>> s["per_class"], s["skipped"]
        ({'a': 1.0, 'b': 1.0}, ['c'])
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scorer = {"roc_auc": roc_auc_score, "average_precision": average_precision_score}[score]
    indicator = np.eye(len(class_names), dtype=int)[y_true]
    positives = indicator.sum(axis=0)
    scored = (positives > 0) & (positives < len(y_true))
    names = [name for name, keep in zip(class_names, scored, strict=True) if keep]
    skipped = [name for name, keep in zip(class_names, scored, strict=True) if not keep]
    if not names:
        return {"per_class": {}, "macro": None, "micro": None, "skipped": skipped}
    per_class = scorer(indicator[:, scored], probabilities[:, scored], average=None)
    return {"per_class": {name: float(value) for name, value in zip(names, per_class,
                                                                     strict=True)},
            "macro": float(np.mean(per_class)),
            "micro": float(scorer(indicator, probabilities, average="micro")),
            "skipped": skipped}


def calibration(y_true: np.ndarray, probabilities: np.ndarray,
                bins: int = CALIBRATION_BINS) -> tuple[float, dict[str, Any]]:
    """Expected calibration error of the top-class confidence, and the reliability data.

    scikit-learn's ``calibration_curve`` (uniform strategy) gives each non-empty bin's
    accuracy and mean confidence; the ECE weighs each bin's gap by its share of examples.

    Example:
        >>> ece, r = calibration(np.array([0, 1]), np.array([[.9, .1], [.7, .3]]), bins=10)
        >>> round(ece, 3), r["count"][6], r["count"][8]
        (0.4, 1, 1)
    """
    from sklearn.calibration import calibration_curve

    confidence = np.clip(probabilities.max(axis=1), 0.0, 1.0)
    correct = (probabilities.argmax(axis=1) == y_true).astype(int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # The bin of each example exactly as calibration_curve assigns it (bins closed on the
    # right), so these counts line up with the non-empty bins it returns.
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=bins)
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=bins,
                                                  strategy="uniform")
    filled = counts > 0
    ece = float(np.sum(counts[filled] / len(y_true) * np.abs(accuracy - mean_confidence)))
    per_bin_accuracy: list[float | None] = [None] * bins
    per_bin_confidence: list[float | None] = [None] * bins
    for index, acc, conf in zip(np.flatnonzero(filled), accuracy, mean_confidence,
                                strict=True):
        per_bin_accuracy[index], per_bin_confidence[index] = float(acc), float(conf)
    return ece, {"bins": bins, "edges": edges.tolist(), "count": counts.tolist(),
                 "accuracy": per_bin_accuracy, "confidence": per_bin_confidence}


def most_confused(confusion: Any, class_names: list[str], n: int = 10) -> pd.DataFrame:
    """The ``n`` largest off-diagonal cells: columns true, predicted, count, share.

    ``share`` is the count over all examples of the true class.

    Example:
        >>> most_confused([[5, 3], [1, 4]], ["cat", "dog"], n=1)
          true predicted  count  share
        0  cat       dog      3  0.375
    """
    counts = np.asarray(confusion, dtype=int)
    rows = counts.sum(axis=1)
    true, predicted = np.nonzero(counts * (1 - np.eye(len(counts), dtype=int)))
    table = pd.DataFrame({
        "true": [class_names[i] for i in true],
        "predicted": [class_names[j] for j in predicted],
        "count": counts[true, predicted],
        "share": counts[true, predicted] / rows[true],
    }, columns=["true", "predicted", "count", "share"])
    table = table.sort_values(["count", "share"], ascending=False, kind="stable")
    return table.head(n).reset_index(drop=True)


def split_unknown(labels: Sequence[str], class_names: list[str]
                  ) -> tuple[np.ndarray, dict[str, int]]:
    """Which labels the model knows, and how many of each label it never saw.

    Example:
        >>> split_unknown(["cat", "zebra", "dog", "zebra"], ["cat", "dog"])
        (array([ True, False,  True, False]), {'zebra': 2})
    """
    labels = [str(label) for label in labels]
    known = set(class_names)
    mask = np.array([label in known for label in labels], dtype=bool)
    counts = Counter(label for label in labels if label not in known)
    return mask, dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def predictions_table(inputs: Sequence[Any], labels: Sequence[Any], probabilities: np.ndarray,
                      class_names: list[str], split: str | Sequence[str]) -> pd.DataFrame:
    """One row per example: split, input, label, predicted, confidence, loss, p0..p{C-1}.

    ``labels`` are class ids or names; a name the model does not know is kept, with an
    empty loss. ``loss`` is the example's cross-entropy, clipped as scikit-learn's
    ``log_loss`` clips, so its mean over known labels equals the run's log loss.
    ``p{i}`` is the probability of ``class_names[i]``.

    Example:
        >>> t = predictions_table(["a.png"], [1], np.array([[0.25, 0.75]]), ["x", "y"], "test")
        >>> t.iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'split': 'test', 'input': 'a.png', 'label': 'y', 'predicted': 'y',
         'confidence': 0.75, 'loss': 0.2876820724517809, 'p0': 0.25, 'p1': 0.75}
    """
    probabilities = np.asarray(probabilities)
    labels = list(labels)
    if len(inputs) != len(labels) or probabilities.shape != (len(labels), len(class_names)):
        raise UserError(f"{len(inputs)} inputs, {len(labels)} labels and probabilities of "
                        f"shape {probabilities.shape} do not match {len(class_names)} classes")
    names = [class_names[int(label)] if isinstance(label, int | np.integer) else str(label)
             for label in labels]
    index = {name: i for i, name in enumerate(class_names)}
    ids = np.array([index.get(name, -1) for name in names])
    eps = np.finfo(probabilities.dtype).eps
    true_probability = probabilities[np.arange(len(ids)), np.maximum(ids, 0)]
    loss = np.where(ids >= 0, -np.log(np.clip(true_probability, eps, 1.0)), np.nan)
    table = pd.DataFrame({
        "split": split, "input": [str(item) for item in inputs], "label": names,
        "predicted": [class_names[i] for i in probabilities.argmax(axis=1)],
        "confidence": probabilities.max(axis=1).astype(float), "loss": loss.astype(float)})
    columns = pd.DataFrame(probabilities.astype(float),
                           columns=[f"p{i}" for i in range(len(class_names))])
    return pd.concat([table, columns], axis=1)


def read_predictions(path: str | Path, columns: Sequence[str] = PREDICTION_COLUMNS
                     ) -> pd.DataFrame:
    """Read a ``predictions.csv`` written from ``predictions_table`` (or, with the
    ``columns`` it must have, ``multilabel_predictions_table``); text stays text.

    Example:
        >>> read_predictions("runs/demo/predictions.csv").columns[:6].tolist()  # doctest: +SKIP
        ['split', 'input', 'label', 'predicted', 'confidence', 'loss']
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"predictions file '{file}' does not exist")
    # Labels and inputs are names and sentences, never numbers or NaN ("NA" is a word).
    table = pd.read_csv(file, dtype={"split": str, "input": str, "label": str,
                                     "predicted": str},
                        keep_default_na=False, na_values={"loss": [""]})
    missing = [column for column in columns if column not in table.columns]
    if missing or "p0" not in table.columns:
        raise UserError(f"'{file}' is not a predictions file: missing columns "
                        f"{', '.join(missing) or 'p0..'}")
    return table


def probability_columns(table: pd.DataFrame) -> np.ndarray:
    """The (examples, classes) probabilities held in a predictions table's p0..p{C-1}.

    Example:
        >>> probability_columns(pd.DataFrame({"p0": [0.3], "p1": [0.7]})).tolist()
        [[0.3, 0.7]]
    """
    classes = sum(1 for column in table.columns if column.startswith("p") and column[1:].isdigit())
    return table[[f"p{i}" for i in range(classes)]].to_numpy(dtype=float)


def class_probabilities(table: pd.DataFrame, class_names: list[str]) -> np.ndarray:
    """``probability_columns``, refused when their count is not the run's number of classes.

    Example:
        >>> class_probabilities(pd.DataFrame({"p0": [0.3], "p1": [0.7]}), ["a", "b"]).shape
        (1, 2)
    """
    probabilities = probability_columns(table)
    if probabilities.shape[1] != len(class_names):
        raise UserError(f"predictions have {probabilities.shape[1]} probability columns but "
                        f"the run has {len(class_names)} classes; were they made by this run?")
    return probabilities


def prediction_arrays(table: pd.DataFrame, class_names: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Class ids and probabilities of a predictions table's known labels, and the counts of
    labels the model never saw (left out of the arrays).

    Example:
        >>> t = predictions_table(["a", "b"], ["x", "zebra"], np.array([[.8, .2], [.5, .5]]),
        ...                       ["x", "y"], "test")
        >>> y, p, unknown = prediction_arrays(t, ["x", "y"])
        >>> y.tolist(), p.tolist(), unknown
        ([0], [[0.8, 0.2]], {'zebra': 1})
    """
    known, unknown = split_unknown(table["label"], class_names)
    probabilities = class_probabilities(table, class_names)
    index = {name: i for i, name in enumerate(class_names)}
    y_true = np.array([index[label] for label in table["label"][known]], dtype=int)
    return y_true, probabilities[known], unknown
