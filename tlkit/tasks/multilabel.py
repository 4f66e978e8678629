"""Multi-label classification: a set of labels per image or sentence (recipe ``labels: multi``).

The head is a sigmoid per class trained with binary cross-entropy; labels are an indicator
matrix (examples x classes). A class is predicted when its probability reaches its
threshold, chosen on the validation split for the best F1 of that class
(``tlkit.evaluation.multilabel.choose_thresholds``) and stored in the run's
``metrics.json`` (``val.thresholds``). Inputs, decoding and export signatures are the
single-label kind's: a multi-label task is that task with another head and other answers.

Example:
    >>> from tlkit.tasks import get_task
    >>> task = get_task("image-multilabel")
    >>> task.activation, task.loss, task.targets(["a|c", ""], ["a", "b", "c"]).tolist()
    ('sigmoid', 'binary_crossentropy', [[1, 0, 1], [0, 0, 0]])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.tasks.base import Task, _refuse_unknown
from tlkit.tasks.image import ImageTask
from tlkit.tasks.text import TextTask

if TYPE_CHECKING:
    import pandas as pd

SUFFIX = "-multilabel"  # registry name: the recipe's kind and this


class MultiLabel(Task):
    """What a multi-label task changes in the single-label task it is mixed into.

    Example:
        >>> from tlkit.tasks import get_task
        >>> get_task("textcnn-multilabel").multi_label
        True
    """

    multi_label = True
    activation = "sigmoid"
    loss = "binary_crossentropy"
    gallery = "label-sets"  # a table of the true and predicted sets, by per-example BCE
    report = "multi-label"

    def targets(self, labels: Sequence[Any], class_names: list[str]) -> np.ndarray:
        """The 0/1 indicator matrix of label sets joined by ``|`` (as tlkit's tables hold
        them)."""
        from tlkit.data.labels import TABLE_SEP, label_matrix, parse_label_sets

        return label_matrix(parse_label_sets(list(labels), TABLE_SEP), class_names).astype(int)

    def known_rows(self, table: pd.DataFrame, class_names: list[str], ignore_unknown: bool
                   ) -> tuple[pd.DataFrame, dict[str, int]]:
        """Every row, its unknown labels left out of its set (and counted); an example
        keeps its known labels.

        Example:
            >>> import pandas as pd
            >>> from tlkit.tasks import get_task
            >>> t = pd.DataFrame({"input": ["a", "b"], "label": ["x|new", ""]})
            >>> rows, unknown = get_task("image-multilabel").known_rows(t, ["x", "y"], True)
            >>> rows["label"].tolist(), unknown
            (['x', ''], {'new': 1})
        """
        from tlkit.data.labels import TABLE_SEP, parse_label_sets

        known, unknown = set(class_names), Counter()
        kept = []
        for labels in parse_label_sets(table["label"].tolist(), TABLE_SEP):
            unknown.update(label for label in labels if label not in known)
            kept.append(TABLE_SEP.join(label for label in labels if label in known))
        counts = dict(sorted(unknown.items(), key=lambda item: (-item[1], item[0])))
        _refuse_unknown(counts, class_names, ignore_unknown)
        return table.assign(label=kept).reset_index(drop=True), counts

    def headline(self, metrics: dict[str, Any]) -> tuple[str, float]:
        """mAP (macro average precision; NaN when no class has a positive example).

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("image-multilabel").headline({"average_precision": {"macro": 0.5}})
            ('mAP', 0.5)
        """
        value = metrics.get("average_precision", {}).get("macro")
        return "mAP", float("nan") if value is None else float(value)

    def read_predictions(self, path: Path) -> pd.DataFrame:
        """A multi-label ``predictions.csv`` (label sets, no confidence column)."""
        from tlkit.evaluation.metrics import read_predictions
        from tlkit.evaluation.multilabel import MULTILABEL_PREDICTION_COLUMNS

        return read_predictions(path, columns=MULTILABEL_PREDICTION_COLUMNS)

    def prediction_arrays(self, rows: pd.DataFrame, class_names: list[str]
                          ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """The indicator matrix and probabilities of the rows, and unknown labels."""
        from tlkit.evaluation.multilabel import multilabel_prediction_arrays

        return multilabel_prediction_arrays(rows, class_names)

    def thresholds(self, run: Any) -> np.ndarray:
        """The thresholds chosen on val when the run trained; 0.5 per class without them."""
        from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD

        stored = (run.metrics or {}).get("val", {}).get("thresholds")
        if stored is not None and len(stored) == len(run.class_names):
            return np.asarray(stored, dtype=float)
        return np.full(len(run.class_names), DEFAULT_THRESHOLD)

    def fit_thresholds(self, model: Any, val: tuple[list[str], Any] | None) -> Any:
        """Each class's threshold of best F1 on the val split (0.5 each without one); the
        val metrics carry them into ``metrics.json``, where ``thresholds`` reads them.

        Example:
            >>> import keras
            >>> from tlkit.tasks import get_task
            >>> ones = keras.Sequential([keras.Input((), dtype="string"),
            ...                          keras.layers.Hashing(2, output_mode="multi_hot")])
            >>> get_task("textcnn-multilabel").fit_thresholds(ones, None).tolist()
            [0.5, 0.5]
        """
        from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD, choose_thresholds

        if val is None:
            return np.full(model.output_shape[-1], DEFAULT_THRESHOLD)
        inputs, targets = val
        probs, errors = self.probabilities(model, inputs)
        kept = np.array([error is None for error in errors], dtype=bool)
        return choose_thresholds(np.asarray(targets)[kept], probs[kept])

    def metrics(self, targets: np.ndarray, probs: np.ndarray, class_names: list[str],
                thresholds: Any = None) -> dict[str, Any]:
        """mAP, F1s at the thresholds, subset accuracy, Hamming loss, per class, ..."""
        from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD, multilabel_metrics

        limits = _limits(thresholds, len(class_names), DEFAULT_THRESHOLD)
        return multilabel_metrics(targets, probs, class_names, limits)

    def predictions_table(self, inputs: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                          class_names: list[str], split: str, thresholds: Any = None
                          ) -> pd.DataFrame:
        """One row per input: its true and predicted sets, its BCE loss, every p{i}."""
        from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD, multilabel_predictions_table

        return multilabel_predictions_table(
            inputs, targets, probs, class_names,
            _limits(thresholds, len(class_names), DEFAULT_THRESHOLD), split)

    def answer_table(self, items: Sequence[str], probs: np.ndarray,
                     errors: Sequence[str | None], class_names: Sequence[str], top_k: int,
                     thresholds: Any = None) -> pd.DataFrame:
        """``input``, ``labels`` (the predicted set, joined by ``|``), ``prob_<class>`` for
        every class, and ``error``; ``top_k`` plays no part.

        Example:
            >>> from tlkit.tasks import get_task
            >>> task = get_task("image-multilabel")
            >>> task.answer_table(["x"], np.array([[0.7, 0.2]]), [None], ["a", "b"], 1,
            ...                   [0.5, 0.5]).to_dict("records")
            [{'input': 'x', 'labels': 'a', 'prob_a': 0.7, 'prob_b': 0.2, 'error': ''}]
        """
        import pandas as pd

        from tlkit.data.labels import TABLE_SEP

        table = pd.DataFrame({"input": list(items), "labels": [
            "" if error else TABLE_SEP.join(names)
            for names, error in zip(_sets(probs, class_names, thresholds), errors,
                                    strict=True)]})
        for i, name in enumerate(class_names):
            table[f"prob_{name}"] = np.round(probs[:, i], 4)
        table["error"] = [e or "" for e in errors]
        return table

    def answer_rows(self, probs: np.ndarray, errors: Sequence[str | None],
                    class_names: Sequence[str], top_k: int, thresholds: Any = None
                    ) -> list[dict[str, Any]]:
        """Per input: the predicted label set (most probable first) and those labels'
        probabilities, or its error; ``top_k`` plays no part.

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("textcnn-multilabel").answer_rows(np.array([[0.6, 0.9, 0.1]]), [None],
            ...                                           ["a", "b", "c"], 1, [0.5] * 3)
            [{'labels': ['b', 'a'], 'probabilities': [0.9, 0.6]}]
        """
        index = {name: i for i, name in enumerate(class_names)}
        rows: list[dict[str, Any]] = []
        for row, names, error in zip(probs, _sets(probs, class_names, thresholds), errors,
                                     strict=True):
            if error is not None:
                rows.append({"error": error})
                continue
            names = sorted(names, key=lambda name: -row[index[name]])
            rows.append({"labels": names,
                         "probabilities": [round(float(row[index[n]]), 6) for n in names]})
        return rows

    def agreement(self, labels: list[str], expected: np.ndarray, got: np.ndarray,
                  class_names: list[str], thresholds: Any = None) -> dict[str, Any]:
        """Subset accuracy (exact label set) of both models, and how often their sets agree.

        Example:
            >>> from tlkit.tasks import get_task
            >>> p = np.array([[0.9, 0.1], [0.4, 0.6]])
            >>> task = get_task("image-multilabel")
            >>> task.agreement(["a", "b"], p, p, ["a", "b"], [0.5, 0.5])["accuracy_keras"]
            1.0
        """
        from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD, apply_thresholds

        limits = _limits(thresholds, len(class_names), DEFAULT_THRESHOLD)
        truth = self.targets(labels, class_names)
        before, after = apply_thresholds(expected, limits), apply_thresholds(got, limits)
        keras, exported = (float((sets == truth).all(axis=1).mean()) for sets in (before, after))
        return {"accuracy_examples": len(truth), "accuracy_keras": keras,
                "accuracy_exported": exported, "accuracy_change": exported - keras,
                "label_agreement": float((before == after).all(axis=1).mean())}

    def export_files(self, run: Any, takes: str, folder: Path) -> dict[str, Any]:
        """The single-label kind's files, and the thresholds that decide each class."""
        return {**super().export_files(run, takes, folder), "labels": "multi",
                "thresholds": self.thresholds(run).tolist()}


def _limits(thresholds: Any, classes: int, default: float) -> np.ndarray:
    """The thresholds as floats (``apply_thresholds`` refuses a wrong count), or ``default``."""
    if thresholds is None:
        return np.full(classes, default)
    return np.asarray(thresholds, dtype=float).reshape(-1)


def _sets(probs: np.ndarray, class_names: Sequence[str], thresholds: Any) -> list[list[str]]:
    """Each row's predicted label set, in class order (a NaN row: the empty set)."""
    from tlkit.evaluation.multilabel import DEFAULT_THRESHOLD, apply_thresholds

    chosen = apply_thresholds(np.nan_to_num(probs, nan=-1.0),
                              _limits(thresholds, len(class_names), DEFAULT_THRESHOLD))
    return [[class_names[i] for i in np.flatnonzero(row)] for row in chosen]


class ImageMultiLabelTask(MultiLabel, ImageTask):
    """Images with a set of labels each (recipe kind ``image``, ``labels: multi``).

    Example:
        >>> ImageMultiLabelTask().name, ImageMultiLabelTask().noun
        ('image-multilabel', 'image')
    """

    name = "image" + SUFFIX


class TextMultiLabelTask(MultiLabel, TextTask):
    """Sentences with a set of labels each (recipe kind ``textcnn``, ``labels: multi``).

    Example:
        >>> TextMultiLabelTask().name, TextMultiLabelTask().explain_methods[0]
        ('textcnn-multilabel', 'ngrams')
    """

    name = "textcnn" + SUFFIX
