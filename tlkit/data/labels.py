"""Label sets, for multi-label data: parsing, the indicator matrix, and stratified splits.

A multi-label example has a *set* of labels, possibly empty (an image with none of them).
The tables the readers return (and the ``split.csv`` and ``predictions.csv`` written from
them) keep the set as one string, its labels in class order joined by ``TABLE_SEP``
(``"beach|sunset"``, ``""`` for none), whatever separator the user's file had; training
reads the indicator matrix (``label_matrix``: row i, column j is 1 when example i has
class j).

- **Sources.** A label column whose cells hold several labels joined by ``sep`` (``|`` by
  default, ``--label-sep``), or several 0/1 columns, one per label (``sets_from_columns``).
- **Classes.** The labels that occur, in the natural order of ``tables.class_order``.
- **Splits.** Iterative stratification (Sechidis, Tsoumakas and Vlahavas 2011, the
  algorithm of scikit-multilearn's ``IterativeStratification`` with ``order=1``), seeded:
  the rarest label is dealt out first, each of its examples to the fold that still wants
  the most of that label. A fold that is full takes no more, so a hold-out of ``fraction``
  keeps back exactly ``ceil(fraction * n)`` examples, as the single-label one does.
- **One entry point for both kinds.** ``holdout`` and ``check_split`` take ``sep``: None
  means single labels (``tables.stratified_holdout``, unchanged), a separator means
  label-set strings (iterative stratification); ``iterative_kfold`` is the k-fold.
  ``LabelFormat.table_sep`` is the ``sep`` to pass for a reader's table.

Example:
    >>> sets = parse_label_sets(["sunset|beach", "", "beach"])
    >>> sets
    [('beach', 'sunset'), (), ('beach',)]
    >>> names = multi_label_classes(sets)
    >>> names, label_matrix(sets, names).tolist()
    (['beach', 'sunset'], [[1, 1], [0, 0], [1, 0]])
    >>> join_label_sets(sets)
    ['beach|sunset', '', 'beach']
"""

from __future__ import annotations

import functools
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.tables import (
    check_holdout,
    class_order,
    require_columns,
    shown,
    stratified_holdout,
)
from tlkit.errors import UserError

DEFAULT_SEP = "|"
TABLE_SEP = "|"  # joins a label set in the tables tlkit reads into and writes
# The split held out of training for conformal prediction sets (docs/calibration.md)
CALIBRATION_SPLIT = "calibration"
CALIBRATION_FIX = "add training examples, or set calibration_fraction=0 (no prediction sets)"
LabelSet = tuple[str, ...]


@dataclass(frozen=True)
class LabelFormat:
    """How a table gives its labels: one per row, or a set per row (``multi``).

    ``sep`` joins the labels of a set in one cell of the user's file; ``columns`` names
    0/1 columns, one per label, that replace the label column. ``LabelFormat.of(recipe)``
    reads a recipe's ``labels``, ``label_sep`` and ``label_columns``.

    Example:
        >>> LabelFormat.of(None), LabelFormat(multi=True, sep=";").table_sep
        (LabelFormat(multi=False, sep='|', columns=None), '|')
    """

    multi: bool = False
    sep: str = DEFAULT_SEP
    columns: tuple[str, ...] | None = None

    @classmethod
    def of(cls, recipe: Any) -> LabelFormat:
        """The label format a recipe (image or text) asks for; single-label without one."""
        if recipe is None:
            return cls()
        columns = getattr(recipe, "label_columns", None)
        return cls(multi=getattr(recipe, "labels", "single") == "multi",
                   sep=getattr(recipe, "label_sep", DEFAULT_SEP),
                   columns=tuple(columns) if columns else None)

    @property
    def table_sep(self) -> str | None:
        """What joins a label set in a reader's table (``TABLE_SEP``), None when single-label:
        the ``sep`` of ``holdout``, ``check_split`` and ``iterative_kfold``."""
        return TABLE_SEP if self.multi else None

    @property
    def written(self) -> LabelFormat:
        """The format of the tables tlkit writes (``split.csv``, ``predictions.csv``): the
        label column joined by ``TABLE_SEP``; read a run's ``split.csv`` back with it.

        Example:
            >>> LabelFormat(True, ";", ("a", "b")).written
            LabelFormat(multi=True, sep='|', columns=None)
        """
        return LabelFormat(multi=self.multi)


def parse_label_sets(values: Sequence[object] | pd.Series, sep: str = DEFAULT_SEP
                     ) -> list[LabelSet]:
    """Each cell's label set: split at ``sep``, stripped, blanks and repeats dropped, in
    class order. An empty (or blank) cell is the empty set.

    Example:
        >>> parse_label_sets([" b | a |a", "", None, "c||"])
        [('a', 'b'), (), (), ('c',)]
    """
    return [tuple(class_order([part.strip() for part in str(value).split(sep) if part.strip()]))
            if _given(value) else () for value in values]


def _given(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def join_label_sets(sets: Sequence[LabelSet], sep: str = DEFAULT_SEP) -> list[str]:
    """Label sets as the strings a table holds (``parse_label_sets`` reads them back).

    Example:
        >>> join_label_sets([("a", "b"), ()], sep=",")
        ['a,b', '']
    """
    return [sep.join(labels) for labels in sets]


def multi_label_classes(sets: Sequence[LabelSet]) -> list[str]:
    """The labels that occur in ``sets``, in natural class order: index = output unit.

    Example:
        >>> multi_label_classes([("img10",), ("img2", "img10"), ()])
        ['img2', 'img10']
    """
    return class_order([label for labels in sets for label in labels])


def label_matrix(sets: Sequence[LabelSet], class_names: Sequence[str]) -> np.ndarray:
    """The ``(n, len(class_names))`` uint8 indicator matrix; a label outside ``class_names``
    is a UserError, as ``tables.label_ids`` says it.

    Example:
        >>> label_matrix([("a",), ("a", "c"), ()], ["a", "b", "c"]).tolist()
        [[1, 0, 0], [1, 0, 1], [0, 0, 0]]
        >>> label_matrix([("x",)], ["a"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: label(s) the model does not know: 'x' (1 example(s)); ...
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = Counter(label for labels in sets for label in labels if label not in index)
    if unknown:
        listed = ", ".join(f"'{shown(name)}' ({count} example(s))"
                           for name, count in unknown.most_common(5))
        raise UserError(f"label(s) the model does not know: {listed}; its classes are "
                        f"{', '.join(map(shown, class_names))}")
    matrix = np.zeros((len(sets), len(class_names)), dtype="uint8")
    for row, labels in enumerate(sets):
        matrix[row, [index[label] for label in labels]] = 1
    return matrix


def sets_from_columns(frame: pd.DataFrame, columns: Sequence[str], source: str
                      ) -> list[LabelSet]:
    """Label sets from 0/1 columns, one per label (the column name is the label).

    Any other value (blank included) is a UserError naming the column and the data row.

    Example:
        >>> frame = pd.DataFrame({"cat": ["1", "0", "1"], "dog": ["0", "0", "1"]})
        >>> sets_from_columns(frame, ["cat", "dog"], "'a.csv'")
        [('cat',), (), ('cat', 'dog')]
        >>> sets_from_columns(frame.assign(dog=["0", "yes", "1"]), ["cat", "dog"], "'a.csv'")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: 'a.csv' has 'yes' in label column 'dog', data row 2; ...
    """
    require_columns(frame, {column: "--label-columns" for column in columns}, source)
    ones = []
    for column in columns:
        values = frame[column].map(lambda v: str(v).strip() if _given(v) else "")
        bad = ~values.isin(("0", "1"))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserError(f"{source} has '{shown(values.iloc[row])}' in label column "
                            f"'{shown(column)}', data row {row + 1}; label columns hold 1 "
                            "(the row has the label) or 0 (it has not)")
        ones.append((values == "1").to_numpy())
    order = class_order(columns)
    by_name = dict(zip(columns, ones, strict=True))
    return [tuple(name for name in order if by_name[name][row]) for row in range(len(frame))]


def label_strings(frame: pd.DataFrame, label_column: str, labels: LabelFormat, source: str,
                  what: str = "examples") -> np.ndarray:
    """The ``label`` column a reader keeps for ``frame``: label-set strings when multi-label
    (from ``label_column`` split at ``labels.sep``, or from ``labels.columns``), joined by
    ``TABLE_SEP`` in class order. Says on stderr how many rows have an empty set.

    Example:
        >>> frame = pd.DataFrame({"label": ["b;a", "a", ""]})
        >>> label_strings(frame, "label", LabelFormat(True, ";"), "'t.csv'", "images").tolist()
        ['a|b', 'a', '']
    """
    if labels.columns:
        sets = sets_from_columns(frame, labels.columns, source)
    else:
        require_columns(frame, {label_column: "--label-column"}, source)
        sets = parse_label_sets(frame[label_column], labels.sep)
    joined = [label for labels_ in sets for label in labels_ if TABLE_SEP in label]
    if joined:
        raise UserError(f"label '{shown(joined[0])}' in {source} contains '{TABLE_SEP}', which "
                        "joins label sets in tlkit's tables (split.csv, predictions.csv); "
                        f"rename the label, or pass --label-sep '{TABLE_SEP}' if it joins "
                        "labels")
    empty = sum(not labels_ for labels_ in sets)
    if empty:
        # Allowed (an image of none of the labels), but said: a wrong --label-sep or
        # --label-column would also give empty sets.
        print(f"note: {empty} of {len(sets)} {what} in {source} have an empty label set "
              "(none of the labels)", file=sys.stderr, flush=True)
    return np.array(join_label_sets(sets, TABLE_SEP), dtype=object)


def balanced_label_weights(matrix: np.ndarray) -> np.ndarray:
    """Per-label class weights, ``(labels, 2)`` float32: column 0 weighs an example without
    the label, column 1 one with it; scikit-learn's 'balanced' rule applied to each label as
    its own yes/no problem (``n / (2 * count)``). Keras's ``class_weight`` takes one id per
    example, so a multi-label loss applies these itself; a side with no examples gets 1.

    Example:
        >>> weights = balanced_label_weights(np.array([[1, 1], [0, 1], [0, 1], [0, 1]]))
        >>> weights.astype(float).round(3).tolist()
        [[0.667, 2.0], [1.0, 0.5]]
    """
    present = np.asarray(matrix).astype(bool)
    counts = np.stack([(~present).sum(axis=0), present.sum(axis=0)], axis=1)
    weights = np.where(counts > 0, len(present) / (2 * np.maximum(counts, 1)), 1.0)
    return weights.astype("float32")


# ------------------------------------------------------------------------------- splitting


def held_out_size(n: int, fraction: float) -> int:
    """How many of ``n`` examples a hold-out of ``fraction`` keeps back: ``ceil(fraction * n)``.

    Example:
        >>> held_out_size(20, 0.15), held_out_size(6, 0.25 / 0.75)
        (3, 2)
    """
    # The small tolerance keeps 0.25 / 0.75 * 6 (1.9999999999999998) at 2, not 3.
    return math.ceil(fraction * n - 1e-9)


def iterative_folds(matrix: np.ndarray, sizes: Sequence[int], seed: int) -> np.ndarray:
    """The fold of each row under seeded iterative stratification of the 0/1 ``matrix``
    into folds of ``sizes`` rows (they sum to the rows of ``matrix``).

    Sechidis et al. 2011: labels are dealt out rarest first (by examples not yet placed);
    each example of the label goes to the open fold that wants the most of it, ties to the
    fold that wants the most examples, then to a seeded random one. A fold wants each label
    in proportion to its size; placing an example lowers what its fold wants of each of its
    labels. Rows with no label fill the folds that want the most examples. A full fold is
    closed, so each fold ends with exactly its size.

    Example:
        >>> matrix = np.array([[1, 0]] * 6 + [[0, 1]] * 3 + [[0, 0]] * 3)
        >>> folds = iterative_folds(matrix, [8, 4], seed=0)
        >>> [matrix[folds == k].sum(axis=0).tolist() for k in (0, 1)]
        [[4, 2], [2, 1]]
    """
    present = np.asarray(matrix).astype(bool)
    n = len(present)
    room = np.asarray(sizes, dtype=float)  # examples each fold still takes
    if room.sum() != n or (room < 0).any():
        raise ValueError(f"fold sizes {list(sizes)} do not share out {n} rows")
    wants = present.sum(axis=0)[:, None] * (room / max(n, 1))[None, :]  # (labels, folds)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # the seeded order examples of a label are dealt in
    fold = np.full(n, -1)
    left = present.sum(axis=0)
    while left.any():
        live = np.flatnonzero(left)
        label = live[np.argmin(left[live])]  # ties: the first in class order
        rows = order[present[order, label] & (fold[order] < 0)]
        for row in rows:
            k = _pick(wants[label], room, rng)
            fold[row], room[k] = k, room[k] - 1
            wants[present[row], k] -= 1
        left -= present[rows].sum(axis=0)
    for row in order[fold[order] < 0]:
        k = _pick(room, room, rng)
        fold[row], room[k] = k, room[k] - 1
    return fold


def _pick(wanted: np.ndarray, room: np.ndarray, rng: np.random.Generator) -> int:
    """The open fold (room left) that wants the most; ties by room, then seeded chance."""
    open_ = np.flatnonzero(room > 0)
    best = open_[np.isclose(wanted[open_], wanted[open_].max())]
    best = best[np.isclose(room[best], room[best].max())]
    return int(best[0] if len(best) == 1 else rng.choice(best))


def check_multi_holdout(sets: Sequence[LabelSet], fraction: float, what: str = "examples",
                        fix: str = "add examples") -> int:
    """How many of ``sets`` a hold-out of ``fraction`` keeps back, or a UserError saying why
    it cannot; needs no scikit-learn (``tables.check_holdout`` for label sets).

    Example:
        >>> check_multi_holdout([("a",), ("b",)], 0.1)
        1
        >>> check_multi_holdout([("a",)], 0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: cannot hold out 50% of 1 examples: too few would be left ...
    """
    if not 0 < fraction < 1:
        raise UserError(f"a hold-out fraction must be between 0 and 1, got {fraction}")
    if not sets:
        raise UserError(f"cannot hold out {fraction:.0%} of no {what}; {fix}")
    n_held = held_out_size(len(sets), fraction)
    if n_held >= len(sets):
        raise UserError(f"cannot hold out {fraction:.0%} of {len(sets)} {what}: too few would "
                        f"be left to train on; {fix}")
    return n_held


def holdout(labels: Sequence[str], fraction: float, seed: int, sep: str | None = None,
            what: str = "examples", fix: str = "add examples"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions ``(kept, held_out)`` of a stratified, seeded hold-out of ``fraction``.

    ``sep`` None: ``labels`` are single labels (``tables.stratified_holdout``, unchanged);
    else label-set strings joined by ``sep``, split by ``iterative_folds``, and exactly
    ``ceil(fraction * n)`` rows are held out.

    Example:
        >>> kept, held = holdout(["a", "a|b", "b", "", "a", "b"], 0.5, seed=0, sep="|")
        >>> len(kept), len(held)
        (3, 3)
    """
    if sep is None:
        return stratified_holdout(labels, fraction, seed, what, fix)
    sets = parse_label_sets(labels, sep)
    n_held = check_multi_holdout(sets, fraction, what, fix)
    folds = iterative_folds(label_matrix(sets, multi_label_classes(sets)),
                            [len(sets) - n_held, n_held], seed)
    return np.flatnonzero(folds == 0), np.flatnonzero(folds == 1)


def calibration_holdout(labels: Sequence[str], fraction: float, seed: int,
                        sep: str | None = None, what: str = "examples"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(kept, held_out)`` of the calibration split: a stratified ``fraction`` of
    the training examples, drawn with its own seed (``seed + 1``) so that it is not the
    val draw again. Both kinds of run hold it out here. Data too small to hold one out
    trains on every example, with one warning: the run then has no prediction sets, which
    need not stop it.

    Example:
        >>> kept, held = calibration_holdout(["a"] * 10 + ["b"] * 10, 0.1, seed=0)
        >>> len(kept), len(held)
        (18, 2)
    """
    try:
        return holdout(labels, fraction, seed + 1, sep, what=what, fix=CALIBRATION_FIX)
    except UserError as error:
        _warn_once(f"no calibration split, so no prediction sets (--coverage) for this run: "
                   f"{error}")
        return np.arange(len(labels)), np.arange(0)


@functools.cache
def _warn_once(message: str) -> None:
    """One line on stderr, once per process (a split is made before and after the scan)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def check_split(labels: Sequence[str], fraction: float, sep: str | None = None,
                what: str = "examples", fix: str = "add examples") -> int:
    """How many rows ``holdout`` would keep back, or its UserError, without splitting.

    Example:
        >>> check_split(["a|b", "b", "a"], 0.3, sep="|"), check_split(["a", "b"] * 5, 0.2)
        (1, 2)
    """
    if sep is None:
        return check_holdout(list(labels), fraction, what, fix)
    return check_multi_holdout(parse_label_sets(labels, sep), fraction, what, fix)


def iterative_kfold(labels: Sequence[str], folds: int, seed: int, sep: str = DEFAULT_SEP
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row positions (train, test) of each fold of a seeded, iteratively stratified k-fold
    of label-set strings; fold sizes differ by at most one. Every label needs at least
    ``folds`` examples, so that it can be in each fold's test part and training.

    Example:
        >>> [len(test) for _, test in iterative_kfold(["a|b", "a", "b", "b|a", "a", "b"], 3, 0)]
        [2, 2, 2]
    """
    if folds < 2:
        raise UserError(f"--cv {folds}: cross-validation needs at least 2 folds (the paper "
                        "uses 10)")
    sets = parse_label_sets(labels, sep)
    counts = Counter(label for labels_ in sets for label in labels_)
    if not counts:
        raise UserError(f"--cv {folds}: there are no labelled texts to split into folds; check "
                        "the data")
    rarest, fewest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if fewest < folds:
        raise UserError(f"--cv {folds}: label '{shown(rarest)}' has only {fewest} "
                        f"example(s), fewer than the folds; use --cv {max(fewest, 2)} or "
                        "fewer, or add examples")
    n = len(sets)
    sizes = [n // folds + (k < n % folds) for k in range(folds)]
    assigned = iterative_folds(label_matrix(sets, multi_label_classes(sets)), sizes, seed)
    positions = np.arange(n)
    return [(positions[assigned != k], positions[assigned == k]) for k in range(folds)]
