"""Calibrated probabilities and prediction sets from numbers alone (NumPy and SciPy).

Temperature scaling (Guo et al. 2017): one temperature T divides a single-label model's
logits, one per class a multi-label (sigmoid) model's; T minimises the negative
log-likelihood on held-out data. Split conformal prediction (Angelopoulos & Bates 2021):
on calibration examples the model never trained or chose its checkpoint on, a score says how
badly the true class fits; the ``ceil((n + 1) * coverage)``-th smallest score is the
threshold, and an input's set holds every class scoring at most that, which contains the
true class with probability at least ``coverage`` on exchangeable data. ``lac`` scores
``1 - p(true class)``; ``aps`` the probability mass of the classes at least as probable as
the true one (sets adapt to how hard an input is). Sets and quantiles are MAPIE's
(``SplitConformalClassifier`` with ``random_state=0``: the same randomised APS calibration
scores, and its default ``include_last_label=True`` sets);
``tests/test_calibration.py`` checks them against MAPIE. A multi-label run gets a threshold
per label: each label is its own two-class problem (present or absent), scored by lac
(with two classes, unrandomised aps can only answer one side or both).

Example:
    >>> probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    >>> prediction_sets(probs, 0.65, "aps").astype(int).tolist()
    [[1, 0, 0], [1, 1, 0]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tlkit.choices import CONFORMAL_SCORES

REPORTED_COVERAGES = (0.8, 0.9, 0.95)
TEMPERATURE_BOUNDS = (0.05, 20.0)
_EPSILON = 1e-8  # MAPIE's tolerance when comparing a score with the threshold
APS_SEED = 0  # of the aps calibration scores' uniform shares (MAPIE's random_state=0)


def fit_temperature(logits: np.ndarray, targets: np.ndarray, multi_label: bool = False
                    ) -> np.ndarray:
    """The temperature minimising the NLL of ``logits`` (bounded, in log space): a scalar
    array for softmax outputs, one per class for sigmoid ones. Logits that put every
    example on its right side (every top class right; for a sigmoid, every label's sign)
    have no best temperature: their NLL only falls as T shrinks, so T would sharpen them
    without limit. Such a temperature stays 1, as does one whose minimum is at a bound.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 2000)
        >>> honest = np.stack([np.zeros(2000), np.where(y == 1, 1.0, -1.0)], axis=1)
        >>> z = honest + rng.logistic(size=(2000, 2))  # noisy: argmax is right 3 times in 4
        >>> bool(fit_temperature(3 * z, y) > 2.0)  # over-confident logits are cooled
        True
        >>> fit_temperature(np.array([[5.0, 0.0], [0.0, 5.0]]), np.array([0, 1])).tolist()
        1.0
    """
    from scipy.optimize import minimize_scalar

    logits, targets = np.asarray(logits, dtype="float64"), np.asarray(targets)
    bounds = tuple(math.log(t) for t in TEMPERATURE_BOUNDS)
    if not multi_label:
        if (logits.argmax(axis=1) == targets).all():
            return np.asarray(1.0)
        found = minimize_scalar(lambda log_t: nll(softmax(logits / math.exp(log_t)), targets),
                                bounds=bounds, method="bounded")
        return np.asarray(_inside(found.x, bounds))
    temperatures = []
    for j in range(logits.shape[1]):
        column, truth = logits[:, j], targets[:, j]
        if ((column > 0) == (truth > 0)).all():
            temperatures.append(1.0)
            continue
        found = minimize_scalar(
            lambda log_t, z=column, y=truth: nll(sigmoid(z / math.exp(log_t)), y, True),
            bounds=bounds, method="bounded")
        temperatures.append(_inside(found.x, bounds))
    return np.asarray(temperatures)


def _inside(log_t: float, bounds: tuple[float, ...]) -> float:
    """The temperature of a minimum ``log_t``; 1 when the minimum is at a bound."""
    at_bound = min(abs(log_t - bound) for bound in bounds) < 1e-2
    return 1.0 if at_bound else math.exp(log_t)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (SciPy's).

    Example:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    from scipy.special import softmax as scipy_softmax

    return scipy_softmax(logits, axis=-1)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic function (SciPy's ``expit``).

    Example:
        >>> sigmoid(np.array([0.0])).tolist()
        [0.5]
    """
    from scipy.special import expit

    return expit(logits)


def scaled(logits: np.ndarray, temperature: Any, multi_label: bool = False) -> np.ndarray:
    """Probabilities of ``logits`` divided by ``temperature`` (what the calibrated model
    outputs).

    Example:
        >>> scaled(np.array([[2.0, 0.0]]), 2.0).round(4).tolist()
        [[0.7311, 0.2689]]
    """
    z = np.asarray(logits, dtype="float64") / np.asarray(temperature, dtype="float64")
    return sigmoid(z) if multi_label else softmax(z)


def nll(probs: np.ndarray, targets: np.ndarray, multi_label: bool = False) -> float:
    """Mean negative log-likelihood: of the true class (single-label), or the binary
    cross-entropy averaged over examples and labels (multi-label); clipped as scikit-learn's
    ``log_loss`` clips.

    Example:
        >>> round(nll(np.array([[0.25, 0.75]]), np.array([1])), 4)
        0.2877
    """
    probs = np.asarray(probs, dtype="float64")
    eps = np.finfo("float32").eps
    if multi_label:
        p = np.clip(probs, eps, 1 - eps)
        y = np.asarray(targets, dtype="float64")
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    chosen = probs[np.arange(len(probs)), np.asarray(targets, dtype=int)]
    return float(np.mean(-np.log(np.clip(chosen, eps, 1.0))))


def reliability(probs: np.ndarray, targets: np.ndarray, multi_label: bool = False
                ) -> tuple[float, dict[str, Any]]:
    """ECE and the reliability diagram's data (``metrics.calibration``); for label sets, of
    every (example, label) decision as a two-class prediction.

    Example:
        >>> round(reliability(np.array([[0.9], [0.2]]), np.array([[1], [1]]), True)[0], 3)
        0.45
    """
    from tlkit.evaluation.metrics import calibration

    if multi_label:
        p = np.asarray(probs, dtype="float64").reshape(-1)
        return calibration(np.asarray(targets).reshape(-1).astype(int),
                           np.stack([1 - p, p], axis=1))
    return calibration(np.asarray(targets, dtype=int), np.asarray(probs, dtype="float64"))


def before_and_after(logits: np.ndarray, targets: np.ndarray, temperature: Any,
                     multi_label: bool = False) -> dict[str, Any]:
    """ECE and NLL of ``logits`` at temperature 1 and at ``temperature``, and the
    uncalibrated reliability diagram's data (the calibrated one is the split's own).

    Example:
        >>> numbers = before_and_after(np.array([[4.0, 0.0], [4.0, 0.0]]), np.array([0, 1]), 8.0)
        >>> numbers["nll_before"] > numbers["nll_after"]
        True
    """
    before = scaled(logits, 1.0, multi_label)
    after = scaled(logits, temperature, multi_label)
    ece_before, diagram = reliability(before, targets, multi_label)
    return {"n": len(logits), "ece_before": ece_before,
            "ece_after": reliability(after, targets, multi_label)[0],
            "nll_before": nll(before, targets, multi_label),
            "nll_after": nll(after, targets, multi_label), "reliability_before": diagram}


# ------------------------------------------------------------------ conformal prediction

def default_score(classes: int) -> str:
    """The score of a run's sets when none is asked for: aps, but lac for two classes (aps's
    sets of a two-class run hold both classes far more often than asked; MAPIE refuses aps
    there).

    Example:
        >>> default_score(2), default_score(6)
        ('lac', 'aps')
    """
    return "lac" if classes == 2 else CONFORMAL_SCORES[0]


def conformity_scores(probs: np.ndarray, targets: np.ndarray, score: str = "aps"
                      ) -> np.ndarray:
    """How badly each example's true class fits: ``1 - p(true)`` (lac), or the probability
    mass of the classes ranked above it plus a uniform share ``u`` of its own (aps,
    Romano et al.'s randomised score; ``u`` from NumPy's ``RandomState(APS_SEED)``, as MAPIE
    draws it, so a run's sets are reproducible). Without ``u`` a confident model's true
    class scores near 1 and every set grows to hold most classes.

    Example:
        >>> p = np.array([[0.6, 0.3, 0.1]])
        >>> conformity_scores(p, np.array([1]), "lac").round(2).tolist()
        [0.7]
        >>> conformity_scores(p, np.array([1]), "aps").round(4).tolist()  # 0.9 - u * 0.3
        [0.7354]
    """
    probs, targets = np.asarray(probs, dtype="float64"), np.asarray(targets, dtype=int)
    true = probs[np.arange(len(probs)), targets]
    if score == "lac":
        return 1.0 - true
    # classes ranked above the true one as MAPIE ranks them (stable sort, reversed)
    order = np.fliplr(np.argsort(probs, axis=1))
    rank = np.argmax(order == targets[:, None], axis=1)
    cumulative = np.cumsum(np.take_along_axis(probs, order, axis=1), axis=1)
    share = np.random.RandomState(APS_SEED).uniform(size=len(probs))
    return cumulative[np.arange(len(probs)), rank] - share * true


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1) * coverage)``-th smallest score
    (infinite when there are too few scores for that coverage: every class is kept).

    Example:
        >>> conformal_quantile(np.arange(1, 10) / 10, 0.8)
        0.8
        >>> conformal_quantile(np.array([0.1, 0.2]), 0.9)
        inf
    """
    scores = np.asarray(scores, dtype="float64")
    n = len(scores)
    level = np.ceil((n + 1) * coverage) / n  # MAPIE's expression, float for float
    if level > 1:
        return math.inf
    return float(np.quantile(scores, level, method="lower"))


def prediction_sets(probs: np.ndarray, threshold: float, score: str = "aps") -> np.ndarray:
    """Boolean (inputs x classes) conformal sets at ``threshold``: classes with
    ``1 - p <= threshold`` (lac, may be empty), or the most probable classes until their
    cumulative mass reaches it, the class that reaches it included (aps; MAPIE's
    ``include_last_label=True``: never empty, never below the asked coverage).

    Example:
        >>> prediction_sets(np.array([[0.6, 0.3, 0.1]]), 0.5, "lac").tolist()
        [[True, False, False]]
    """
    probs = np.asarray(probs, dtype="float64")
    if math.isinf(threshold):
        return np.ones(probs.shape, dtype=bool)
    if score == "lac":
        return (1.0 - probs) - threshold <= _EPSILON
    order = np.fliplr(np.argsort(probs, axis=1))
    ranked = np.take_along_axis(probs, order, axis=1)
    cumulative = np.cumsum(ranked, axis=1)
    reached = cumulative - threshold >= -_EPSILON
    # a threshold above every mass (scores never exceed 1): the whole ranking
    last = np.where(reached.any(axis=1), reached.argmax(axis=1), probs.shape[1] - 1)
    last_probability = ranked[np.arange(len(probs)), last]
    # A zero last probability would take in every class of probability zero: MAPIE takes the
    # row's smallest non-zero probability instead.
    smallest = np.where(probs > _EPSILON, probs, np.inf).min(axis=1)
    last_probability = np.where(last_probability <= _EPSILON, smallest, last_probability)
    return probs - last_probability[:, None] >= -_EPSILON


def label_sides(probs: np.ndarray) -> np.ndarray:
    """Each label of a multi-label output as a two-class problem: (inputs x labels x
    [absent, present]) probabilities.

    Example:
        >>> label_sides(np.array([[0.9, 0.2]])).tolist()
        [[[0.09999999999999998, 0.9], [0.8, 0.2]]]
    """
    p = np.asarray(probs, dtype="float64")
    return np.stack([1 - p, p], axis=-1)


def thresholds_for(probs: np.ndarray, targets: np.ndarray, coverage: float, score: str,
                   multi_label: bool = False) -> np.ndarray:
    """The conformal threshold of calibration ``probs``: one, or one per label (always
    scored by lac).

    Example:
        >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
        >>> round(float(thresholds_for(p, np.array([0, 0, 1]), 0.5, "lac")), 6)
        0.2
    """
    if not multi_label:
        return np.asarray(conformal_quantile(conformity_scores(probs, targets, score),
                                             coverage))
    sides, targets = label_sides(probs), np.asarray(targets, dtype=int)
    return np.array([conformal_quantile(conformity_scores(sides[:, j], targets[:, j], "lac"),
                                        coverage) for j in range(sides.shape[1])])


def sets_for(probs: np.ndarray, threshold: np.ndarray, score: str, multi_label: bool = False
             ) -> np.ndarray:
    """Conformal sets of ``probs``: (inputs x classes), or for label sets (inputs x labels x
    [absent, present]) with each label's own threshold.

    Example:
        >>> sets_for(np.array([[0.9, 0.5]]), np.array([0.3, 0.6]), "lac", True).tolist()
        [[[False, True], [True, True]]]
    """
    if not multi_label:
        return prediction_sets(probs, float(threshold), score)
    sides = label_sides(probs)
    return np.stack([prediction_sets(sides[:, j], float(threshold[j]), "lac")
                     for j in range(sides.shape[1])], axis=1)


def coverage_table(calibration: tuple[np.ndarray, np.ndarray],
                   tested: tuple[np.ndarray, np.ndarray], multi_label: bool = False,
                   coverages: tuple[float, ...] = REPORTED_COVERAGES) -> list[dict[str, Any]]:
    """Per score and asked coverage: the empirical coverage and mean set size of the sets
    made from ``calibration`` (probabilities, targets) on ``tested`` (for label sets: per
    label, averaged over labels).

    Example:
        >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
        >>> y = np.array([0, 0, 1, 1])
        >>> row = coverage_table((p, y), (p, y), coverages=(0.5,))[0]
        >>> row["score"], row["coverage"], row["mean_size"]
        ('aps', 0.75, 1.0)
    """
    rows = []
    for score in ("lac",) if multi_label else CONFORMAL_SCORES:
        for asked in coverages:
            threshold = thresholds_for(*calibration, asked, score, multi_label)
            probs, targets = tested
            sets = sets_for(probs, threshold, score, multi_label)
            if multi_label:
                held = np.take_along_axis(sets, np.asarray(targets, dtype=int)[..., None],
                                          axis=2)[..., 0]
            else:
                held = sets[np.arange(len(sets)), np.asarray(targets, dtype=int)]
            rows.append({"score": score, "asked": asked, "coverage": float(held.mean()),
                         "mean_size": float(sets.sum(axis=-1).mean()),
                         "threshold": threshold.tolist(), "n": len(probs),
                         "calibration_n": len(calibration[0])})
    return rows


def risk_coverage(probs: np.ndarray, targets: np.ndarray, steps: int = 21
                  ) -> list[dict[str, float]]:
    """Accuracy against coverage when answering only above a top-probability threshold
    (``abstain_below``), for thresholds 0, 1/(steps-1), ..., 1.

    Example:
        >>> p = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25]])
        >>> [row["accuracy"] for row in risk_coverage(p, np.array([0, 1]), steps=3)]
        [0.5, 1.0, None]
    """
    probs = np.asarray(probs, dtype="float64")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(targets, dtype=int)
    rows = []
    for threshold in np.linspace(0.0, 1.0, steps):
        answered = confidence >= threshold
        rows.append({"abstain_below": round(float(threshold), 4),
                     "coverage": float(answered.mean()),
                     "accuracy": float(correct[answered].mean()) if answered.any() else None})
    return rows


# ------------------------------------------------------------------ answers that abstain

UNSURE = "unsure"


def answers(probs: np.ndarray, class_names: list[str], sets: np.ndarray | None = None,
            below: float | None = None, multi_label: bool = False
            ) -> list[tuple[str, list[str]]]:
    """Each input's answer and its candidate classes: the top class (or, for label sets,
    the predicted set joined by ``|``) when sure, else ``unsure`` and the classes in doubt.

    Unsure: a conformal set (``sets``, from ``sets_for``) of any size but one, or a top
    probability below ``below``. The candidates are the set's classes, most probable
    first; without a set, the most probable classes until their probabilities add up to
    ``below`` (two at least). For label sets, a label is in doubt when its set holds both
    sides (or none) or its probability is within ``below`` of neither 0 nor 1.

    Example:
        >>> p = np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]])
        >>> answers(p, ["a", "b", "c"], below=0.8)
        [('a', []), ('unsure', ['a', 'b'])]
    """
    probs = np.asarray(probs, dtype="float64")
    if multi_label:
        return _label_answers(probs, class_names, sets, below)
    result = []
    for i, row in enumerate(probs):
        order = np.argsort(-row, kind="stable")
        sure = below is None or row[order[0]] >= below
        if sets is not None:
            members = [j for j in order if sets[i, j]]
            sure = sure and members == [order[0]]
        else:
            reach = int(np.searchsorted(np.cumsum(row[order]), below or 1.0)) + 1
            members = list(order[:max(2, reach)])
        names = [class_names[j] for j in members]
        result.append((class_names[order[0]], []) if sure else (UNSURE, names))
    return result


def _label_answers(probs: np.ndarray, class_names: list[str], sets: np.ndarray | None,
                   below: float | None) -> list[tuple[str, list[str]]]:
    doubt = np.zeros(probs.shape, dtype=bool)
    if sets is not None:
        doubt |= sets.sum(axis=-1) != 1
    if below is not None:
        doubt |= np.maximum(probs, 1 - probs) < below
    present = sets[..., 1] & ~sets[..., 0] if sets is not None else probs >= 0.5
    result = []
    for row_present, row_doubt, row in zip(present, doubt, probs, strict=True):
        if row_doubt.any():
            order = np.argsort(-row, kind="stable")
            result.append((UNSURE, [class_names[j] for j in order if row_doubt[j]]))
        else:
            result.append(("|".join(class_names[j] for j in np.flatnonzero(row_present)), []))
    return result
