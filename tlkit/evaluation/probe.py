"""The linear-probe baseline: logistic regression on frozen features, C chosen on validation
(by accuracy for one label per input; one-vs-rest by macro mAP for label sets).

A run that fine-tunes a backbone should end at or above what a linear classifier on the same
backbone's features reaches; this gives that floor, with scikit-learn and no training loop.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(60, 5)), np.repeat([0, 1, 2], 20)
    >>> x[:, 0] += 3 * y
    >>> probe = linear_probe(x[::2], y[::2], x[1::2], y[1::2], Cs=(0.1, 1.0))
    >>> sorted(probe)
    ['C', 'Cs', 'fit_seconds', 'n_features', 'n_train', 'test_accuracy', 'val_accuracy', 'val_by_C']
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Decades up to C=10: on flowers12's EfficientNet-Lite0 features val accuracy rose up to C=10
# and stayed flat up to 1000, while each fit above 10 took several times longer.
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
# The bias of a class that is constant in train: sigmoid(16.1) = 1 - 1e-7, Keras's epsilon.
CONSTANT_LOGIT = 16.1


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                 val_y: np.ndarray, test_x: np.ndarray | None = None,
                 test_y: np.ndarray | None = None, Cs: tuple[float, ...] = DEFAULT_CS,
                 max_iter: int = 5000) -> dict[str, Any]:
    """Fit standardised logistic regression for each C; keep the best on val; score test.

    Features may have any shape after the first axis (they are flattened per row). Ties in
    validation accuracy go to the smaller C, the stronger regularisation. The returned dict
    is JSON-safe: ``C``, ``val_accuracy``, ``test_accuracy`` (None without a test split),
    ``fit_seconds`` (the whole grid), ``val_by_C``, ``Cs``, ``n_train``, ``n_features``.
    ``fit_linear_probe`` gives the same summary with the probe's weights.

    Example:
        >>> x, y = np.array([[0.0], [1.0], [0.1], [0.9]]), np.array([0, 1, 0, 1])
        >>> linear_probe(x, y, x, y, Cs=(1.0,))["val_accuracy"]
        1.0
    """
    return fit_linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, Cs=Cs,
                            max_iter=max_iter).summary


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: ``summary`` (JSON-safe, as ``linear_probe`` returns it) and per class
    the weights ``coef`` (classes x features) and ``intercept`` (classes,) on the raw,
    unstandardised features, so a Dense head starts from the probe with ``kernel = coef.T``,
    ``bias = intercept``: softmax of ``x @ coef.T + intercept`` is the probe's probability
    of each class (sigmoid of it per label for a one-vs-rest probe)."""

    summary: dict[str, Any]
    coef: np.ndarray
    intercept: np.ndarray


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                     val_y: np.ndarray, test_x: np.ndarray | None = None,
                     test_y: np.ndarray | None = None, Cs: tuple[float, ...] = DEFAULT_CS,
                     max_iter: int = 5000, n_classes: int | None = None) -> LinearProbe:
    """``linear_probe`` and the weights of a softmax head over ``n_classes`` (default: one
    more than the largest class id seen) that computes the probe's probabilities.

    A class missing from train gets zero weights and a bias of ``-CONSTANT_LOGIT``.

    Example:
        >>> x, y = np.array([[0.0], [1.0], [0.1], [0.9]]), np.array([0, 1, 0, 1])
        >>> probe = fit_linear_probe(x, y, x, y, Cs=(1.0,), n_classes=3)
        >>> probe.coef.shape, float(probe.intercept[2])
        ((3, 1), -16.1)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, val_x = _rows(train_x), _rows(val_x)
    grid = _grid(lambda c: make_pipeline(StandardScaler(),
                                         LogisticRegression(C=c, max_iter=max_iter)),
                 lambda model, x, y: float(model.score(x, y)),
                 (train_x, train_y), (val_x, val_y), Cs)
    test_accuracy = None
    if test_x is not None and test_y is not None:
        test_accuracy = float(grid.model.score(_rows(test_x), test_y))
    summary = {"C": grid.C, "val_accuracy": grid.score, "test_accuracy": test_accuracy,
               "fit_seconds": grid.seconds, "val_by_C": grid.val_by_C,
               "Cs": [float(c) for c in sorted(Cs)], "n_train": int(len(train_x)),
               "n_features": int(train_x.shape[1])}
    classes = n_classes or int(np.max(train_y)) + 1
    return LinearProbe(summary, *_softmax_weights(grid.model, classes))


def _softmax_weights(pipeline: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax-head weights of a fitted scaler + logistic regression, the scaler folded in.

    A binary regression has one row w for class 1; logits (0, w.x + b) give the same
    softmax, since softmax depends only on the difference of the two logits.
    """
    scaler, regression = pipeline[0], pipeline[-1]
    fitted_coef = regression.coef_ / scaler.scale_
    fitted_intercept = regression.intercept_ - fitted_coef @ scaler.mean_
    if len(regression.classes_) == 2:
        fitted_coef = np.vstack([np.zeros_like(fitted_coef), fitted_coef])
        fitted_intercept = np.concatenate([[0.0], fitted_intercept])
    coef = np.zeros((n_classes, len(scaler.mean_)))
    intercept = np.full(n_classes, -CONSTANT_LOGIT)
    rows = np.asarray(regression.classes_, dtype=int)
    coef[rows], intercept[rows] = fitted_coef, fitted_intercept
    return coef, intercept


@dataclass(frozen=True)
class _Grid:
    model: Any
    C: float
    score: float | None
    val_by_C: dict[str, float | None]
    seconds: float


def _grid(make: Callable[[float], Any], score: Callable[[Any, Any, Any], float | None],
          train: tuple[Any, Any], val: tuple[Any, Any], Cs: tuple[float, ...]) -> _Grid:
    """Fit ``make(C)`` for each C from the smallest; keep the first best val ``score``."""
    if not Cs:
        raise ValueError("Cs is empty; give at least one inverse regularisation strength")
    start = time.perf_counter()
    best: tuple[Any, float, float | None] | None = None
    val_by_c: dict[str, float | None] = {}
    for c in sorted(Cs):
        model = make(c).fit(*train)
        value = score(model, *val)
        val_by_c[f"{c:g}"] = value
        # A score of None (undefined on val) never beats a number.
        if best is None or (value is not None and (best[2] is None or value > best[2])):
            best = (model, c, value)
    model, c, value = best  # type: ignore[misc] - Cs is not empty
    return _Grid(model, float(c), value, val_by_c, round(time.perf_counter() - start, 3))


def one_vs_rest_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                      val_y: np.ndarray, test_x: np.ndarray | None = None,
                      test_y: np.ndarray | None = None, Cs: tuple[float, ...] = DEFAULT_CS,
                      max_iter: int = 5000) -> LinearProbe:
    """The multi-label probe: standardised one-vs-rest logistic regression for each C, the
    best macro mAP on val kept (ties to the smaller C), test scored with it.

    ``*_y`` are 0/1 indicator matrices (examples, classes). ``summary`` holds ``C``,
    ``val_map`` and ``test_map`` (macro average precision over the classes with a positive
    example; None without a test split or without any positive), ``fit_seconds``,
    ``val_by_C``, ``Cs``, ``n_train``, ``n_features``, ``n_classes``. A class that is
    always (never) present in train gets zero weights and a large positive (negative) bias.

    Example:
        >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]] * 3)
        >>> probe = one_vs_rest_probe(x, x.astype(int), x, x.astype(int), Cs=(10.0,))
        >>> probe.summary["val_map"], probe.coef.shape
        (1.0, (2, 2))
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_x, val_x = _rows(train_x), _rows(val_x)
    train_y = np.asarray(train_y, dtype=int)
    grid = _grid(lambda c: make_pipeline(StandardScaler(), OneVsRestClassifier(
                     LogisticRegression(C=c, max_iter=max_iter))),
                 _map, (train_x, train_y), (val_x, val_y), Cs)
    test_map = (_map(grid.model, _rows(test_x), test_y)
                if test_x is not None and test_y is not None else None)
    coef, intercept = _raw_weights(grid.model, train_y)
    summary = {"C": grid.C, "val_map": grid.score, "test_map": test_map,
               "fit_seconds": grid.seconds, "val_by_C": grid.val_by_C,
               "Cs": [float(c) for c in sorted(Cs)], "n_train": int(len(train_x)),
               "n_features": int(train_x.shape[1]), "n_classes": int(train_y.shape[1])}
    return LinearProbe(summary, coef, intercept)


def _map(model: Any, x: np.ndarray, y: Any) -> float | None:
    from tlkit.evaluation.multilabel import average_precisions

    labels = np.asarray(y, dtype=int)
    names = [str(c) for c in range(labels.shape[1])]
    return average_precisions(labels, model.predict_proba(x), names)["macro"]


def _raw_weights(pipeline: Any, train_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each class's weights with the StandardScaler folded in: w/scale, b - w.mean/scale."""
    scaler, ovr = pipeline[0], pipeline[-1]
    features = len(scaler.mean_)
    coef = np.zeros((train_y.shape[1], features))
    intercept = np.zeros(train_y.shape[1])
    for c, estimator in enumerate(ovr.estimators_):
        if hasattr(estimator, "coef_"):
            coef[c] = estimator.coef_[0] / scaler.scale_
            intercept[c] = estimator.intercept_[0] - coef[c] @ scaler.mean_
        else:  # scikit-learn's constant predictor for a label always (never) present
            intercept[c] = CONSTANT_LOGIT if train_y[:, c].all() else -CONSTANT_LOGIT
    return coef, intercept


def _rows(features: np.ndarray) -> np.ndarray:
    """One float32 row per sample (reads a memory map into memory: scikit-learn needs it)."""
    features = np.asarray(features, dtype="float32")
    return features.reshape(len(features), -1)
