"""What every kind of run shares after training: the one inference pipeline and scoring.

A ``Task`` owns what differs between kinds of run (reading labelled data and raw inputs,
decoding or tokenising them for the model, the head's activation and loss, the metrics, the
report's gallery, the export signature, explain's and serve's input handling); the
modules after training (predict, evaluate, export, serve, explain, report) ask the run's
task instead of testing its kind. Nothing here imports TensorFlow: tasks are looked up
before it loads.

Example:
    >>> from tlkit.tasks import get_task
    >>> task = get_task("textcnn")
    >>> task.activation, task.loss, task.multi_label
    ('softmax', 'sparse_categorical_crossentropy', False)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

# Keras's default batch. For VGG16 at 224 on this 2-core CPU, 64 ran at about 80% of 32's
# rate (activations of 64 images overflow the caches); 16 and 32 were alike.
PREDICT_BATCH = 32


@dataclass
class Scored:
    """A model scored on labelled inputs: metrics, one prediction row per input, skips.

    ``skipped`` holds ``{"input", "reason"}`` for inputs that could not be read (left out
    of the metrics and the table).

    Example:
        >>> Scored({"accuracy": 1.0}, None).skipped
        []
    """

    metrics: dict[str, Any]
    predictions: pd.DataFrame | None
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Uncertainty:
    """When predict and serve answer ``unsure``: a conformal set at ``coverage`` (``score``:
    aps or lac; ``threshold`` from the run's calibration examples) of size other than one,
    or a top probability below ``below`` (``--abstain-below``).

    Example:
        >>> Uncertainty(below=0.8).coverage is None
        True
    """

    coverage: float | None = None
    score: str | None = None  # None: the run's default (``evaluation.calibration.default_score``)
    below: float | None = None
    threshold: Any = None


FLAGS = {"coverage": "--coverage", "below": "--abstain-below", "score": "--conformal-score"}


def check_uncertainty(coverage: float | None, below: float | None, score: str | None,
                      names: dict[str, str] = FLAGS) -> Uncertainty | None:
    """The options as an ``Uncertainty`` (None when neither is asked for), or a UserError
    naming the option (``names``: the CLI's flags, or a request's keys) and its range.

    Example:
        >>> check_uncertainty(1.5, None, "aps")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: --coverage 1.5: a coverage must be strictly between 0 and 1, ...
    """
    from tlkit.choices import CONFORMAL_SCORES

    if score is not None and score not in CONFORMAL_SCORES:
        raise UserError(f"{names['score']} {score}: unknown score; choose one of: "
                        f"{', '.join(CONFORMAL_SCORES)}")
    if coverage is not None and not (_number(coverage) and 0 < coverage < 1):
        raise UserError(f"{names['coverage']} {coverage}: a coverage must be strictly between "
                        "0 and 1, e.g. 0.9")
    if below is not None and not (_number(below) and 0 <= below <= 1):
        raise UserError(f"{names['below']} {below}: the top probability to answer at must be "
                        "in [0, 1], e.g. 0.8")
    if coverage is None and below is None:
        return None
    return Uncertainty(coverage, score, below)


def _number(value: Any) -> bool:
    """A JSON or CLI number (a request may send text or true)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class Task(ABC):
    """One kind of run: single-label image or text classification today.

    Class attributes say what a kind is (``name`` is the recipe's ``kind`` and the registry
    key); methods do what differs. ``multi_label`` tasks take an indicator matrix of labels
    instead of ids; their head is sigmoid + binary cross-entropy.

    Example:
        >>> from tlkit.tasks import get_task
        >>> get_task("image").noun, get_task("image").explain_methods[0]
        ('image', 'gradcam')
    """

    name: str
    noun: str  # what one input is called in messages and progress bars
    inputs_hint: str  # what to give on the command line, for messages
    multi_label = False
    activation = "softmax"
    loss = "sparse_categorical_crossentropy"
    explain_methods: tuple[str, ...]  # the default first
    explainer: str  # the key of tlkit.explain.run.EXPLAINERS that explains this kind
    gallery: str  # the key of the report's and plots' top-loss galleries
    reference_file: str  # the run file whose held-out rows check an export
    reference_column: str  # that file's column of inputs
    plans_memory = False  # inspect --memory can plan batches for this kind's model
    report = "single-label"  # the key of tlkit.evaluation.report.REPORTS that writes its report
    tta_levels: tuple[str, ...] = ()  # the --tta levels this kind's views() makes

    # ------------------------------------------------------------------ data and inputs

    @abstractmethod
    def read_labelled(self, run: Any, data: Any, columns: dict[str, str | None]
                      ) -> pd.DataFrame:
        """``input, label`` rows of labelled data, read as the run's job reads its data."""

    @abstractmethod
    def gather_inputs(self, run: Any, inputs: Sequence[str]) -> list[str]:
        """The raw inputs given on the command line (files, folders or sentences)."""

    @abstractmethod
    def file_inputs(self, run: Any, path: Path, column: str | None, encoding: str
                    ) -> list[str]:
        """The raw inputs listed in a file (``--input FILE``)."""

    def targets(self, labels: Sequence[Any], class_names: list[str]) -> np.ndarray:
        """What the loss and metrics compare with: class ids of label names.

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("image").targets(["b", "a"], ["a", "b"]).tolist()
            [1, 0]
        """
        from tlkit.data.tables import label_ids

        return np.asarray(label_ids(labels, class_names))

    # ------------------------------------------------------------- the inference pipeline

    @abstractmethod
    def batches(self, model: Any, items: Sequence[str]) -> Iterator[tuple[np.ndarray, Any]]:
        """(row numbers in ``items``, model input) batches of the items the model can take."""

    @abstractmethod
    def failure(self, item: str) -> str:
        """Why an item never came out of ``batches`` (one line)."""

    def check_tta(self, tta: str | None) -> None:
        """Refuse a test-time augmentation level this kind has no views for (before any model
        loads).

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("textcnn").check_tta("flip")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tlkit.errors.UserError: --tta flip: test-time augmentation is for image runs; ...
        """
        if tta is None:
            return
        if not self.tta_levels:
            raise UserError(f"--tta {tta}: test-time augmentation is for image runs; this is "
                            f"{_a(self.name)} run, so leave --tta out")
        if tta not in self.tta_levels:
            raise UserError(f"--tta {tta}: unknown level; choose one of: "
                            f"{', '.join(self.tta_levels)}")

    def views(self, batch: Any, tta: str) -> Iterator[Any]:
        """The model inputs whose probabilities are averaged for ``batch`` under test-time
        augmentation ``tta`` (a kind without ``tta_levels`` has one: the batch itself)."""
        yield batch

    def probabilities(self, model: Any, items: Sequence[str], progress: bool = False,
                      tta: str | None = None) -> tuple[np.ndarray, list[str | None]]:
        """Each item's class probabilities (NaN where it failed) and its error or None.

        The one path from raw inputs to probabilities: training-time scoring, evaluate,
        predict, serve, explain and the export check all come here. ``progress`` counts the
        inputs done into the open ``tlkit.progress`` phase (its caller names it: a bar or
        lines on stderr, as stdout may carry predictions). ``tta`` (one of
        ``tta_levels``) averages the probabilities of each batch's ``views``, made from the
        batch as decoded once; the model sees one view at a time, so memory stays one batch's.

        Example:
            >>> import keras
            >>> from tlkit.tasks import get_task
            >>> hashed = keras.Sequential([keras.Input((), dtype="string"),
            ...                            keras.layers.Hashing(2, output_mode="one_hot")])
            >>> probs, errors = get_task("textcnn").probabilities(hashed, ["a fine film", " "])
            >>> np.isnan(probs).any(axis=1).tolist(), errors
            ([False, True], [None, 'empty text: nothing to classify'])
        """
        from tlkit.progress import advance

        self.check_tta(tta)
        items = list(items)
        result = np.full((len(items), model.output_shape[-1]), np.nan, dtype="float32")
        done = np.zeros(len(items), dtype=bool)
        for rows, batch in self.batches(model, items):
            # A plain call, not predict_on_batch: a model trained under a multi-worker
            # strategy would gather every worker's copy of the batch.
            views = self.views(batch, tta) if tta else [batch]
            outputs = [np.asarray(model(view, training=False)) for view in views]
            result[rows] = np.mean(outputs, axis=0)
            done[rows] = True
            if progress:
                advance(len(rows))
        # Only the items that failed are looked at again, to say why in one line.
        return result, [None if ok else self.failure(item)
                        for item, ok in zip(items, done, strict=True)]

    def score(self, model: Any, inputs: Sequence[str], targets: Sequence[Any],
              class_names: list[str], split: str, progress: bool = False,
              thresholds: Any = None, tta: str | None = None) -> Scored:
        """Metrics and prediction rows of ``model`` on labelled ``inputs``, through
        ``probabilities`` (with test-time augmentation ``tta``); inputs that fail are skipped
        (all failing is a UserError). ``thresholds`` (multi-label tasks) decide each class.

        Example:
            >>> import keras
            >>> from tlkit.tasks import get_task
            >>> hashed = keras.Sequential([keras.Input((), dtype="string"),
            ...                            keras.layers.Hashing(2, output_mode="one_hot")])
            >>> scored = get_task("textcnn").score(hashed, ["a", "b", " "], [0, 1, 0],
            ...                                    ["neg", "pos"], "test")
            >>> scored.metrics["n"], len(scored.predictions), scored.skipped[0]["input"]
            (2, 2, ' ')
        """
        probs, errors = self.probabilities(model, inputs, progress, tta)
        failed = np.array([error is not None for error in errors], dtype=bool)
        if failed.all():
            raise UserError(f"none of the {len(errors)} inputs could be read; check the data")
        skipped = [{"input": str(item), "reason": error}
                   for item, error in zip(inputs, errors, strict=True) if error is not None]
        kept = np.flatnonzero(~failed)
        inputs = [inputs[i] for i in kept]
        targets = np.asarray(targets)[kept]
        return Scored(self.metrics(targets, probs[kept], class_names, thresholds),
                      self.predictions_table(inputs, targets, probs[kept], class_names, split,
                                             thresholds),
                      skipped)

    def calibrate(self, model: Any, held_out: dict[str, tuple[Sequence[str], Any]]
                  ) -> dict[str, Any]:
        """Fit the model's temperature on ``held_out["val"]`` (least NLL of its logits) and set
        it inside the model (``tlkit.models.calibration``), so everything saved from it gives
        calibrated probabilities. Returns metrics.json's ``calibration``: the temperature and
        each split's ECE and NLL before and after; ``{}`` (the model unchanged) without val
        or for a model saved without a temperature layer.

        Example:
            >>> import keras
            >>> from tlkit.tasks import get_task
            >>> hashed = keras.Sequential([keras.Input((), dtype="string"),
            ...                           keras.layers.Hashing(2, output_mode="one_hot")])
            >>> get_task("textcnn").calibrate(hashed, {"val": (["a"], [0])})
            {}
        """
        from tlkit.evaluation.calibration import before_and_after, fit_temperature
        from tlkit.models.calibration import logits_out, set_temperature

        logits = {}
        with logits_out(model) as cut:
            if not cut or "val" not in held_out:
                return {}
            for split, (inputs, targets) in held_out.items():
                raw, errors = self.probabilities(model, inputs)
                kept = np.array([error is None for error in errors], dtype=bool)
                logits[split] = (raw[kept], np.asarray(targets)[kept])
        temperature = fit_temperature(*logits["val"], self.multi_label)
        set_temperature(model, temperature)
        return {"temperature": temperature.tolist(), "fitted_on": "val",
                **{split: before_and_after(z, y, temperature, self.multi_label)
                   for split, (z, y) in logits.items()}}

    def coverage(self, calibration: pd.DataFrame, tested: pd.DataFrame,
                 class_names: list[str]) -> list[dict[str, Any]]:
        """Empirical coverage and mean set size on ``tested`` prediction rows of the conformal
        sets calibrated on ``calibration`` rows (``evaluation.calibration.coverage_table``)."""
        from tlkit.evaluation.calibration import coverage_table

        y_cal, p_cal, _ = self.prediction_arrays(calibration, class_names)
        y, p, _ = self.prediction_arrays(tested, class_names)
        return coverage_table((p_cal, y_cal), (p, y), self.multi_label)

    def calibration_rows(self, run: Any) -> pd.DataFrame | None:
        """The prediction rows of the run's calibration split (None: it has none)."""
        from tlkit.data.labels import CALIBRATION_SPLIT
        from tlkit.runs import PREDICTIONS_FILE

        path = run.path / PREDICTIONS_FILE
        if not path.is_file():
            return None
        table = self.read_predictions(path)
        rows = table[table["split"] == CALIBRATION_SPLIT]
        return None if rows.empty else rows

    def uncertainty(self, run: Any, asked: Uncertainty | None) -> Uncertainty | None:
        """``asked`` with its conformal threshold from the run's calibration examples; a run
        without them is a UserError (read without TensorFlow)."""
        from tlkit.evaluation.calibration import default_score, thresholds_for

        if asked is None or asked.coverage is None:
            return asked
        rows = self.calibration_rows(run)
        if rows is None:
            raise UserError(f"--coverage: run '{run.path.name}' has no calibration examples (it "
                            "was trained before tlkit held them out, or with "
                            "calibration_fraction=0); train it again for prediction sets, or "
                            "use --abstain-below")
        y, p, _ = self.prediction_arrays(rows, run.class_names)
        score = asked.score or default_score(len(run.class_names))
        return replace(asked, score=score,
                       threshold=thresholds_for(p, y, asked.coverage, score, self.multi_label))

    def answers(self, probs: np.ndarray, errors: Sequence[str | None],
                class_names: list[str], uncertainty: Uncertainty
                ) -> list[tuple[str, list[str]]]:
        """Each input's answer (``unsure`` when in doubt) and candidate classes; a failed
        input gets ``("", [])`` (``evaluation.calibration.answers``)."""
        from tlkit.evaluation.calibration import answers, sets_for

        filled = np.nan_to_num(probs, nan=0.0)
        sets = (sets_for(filled, uncertainty.threshold, uncertainty.score, self.multi_label)
                if uncertainty.coverage is not None else None)
        rows = answers(filled, class_names, sets, uncertainty.below, self.multi_label)
        return [("", []) if error else row for row, error in zip(rows, errors, strict=True)]

    def fit_thresholds(self, model: Any, val: tuple[list[str], Any] | None) -> Any:
        """Decision thresholds learnt on the val split (None: single-label needs none)."""
        return None

    def metrics(self, targets: np.ndarray, probs: np.ndarray, class_names: list[str],
                thresholds: Any = None) -> dict[str, Any]:
        """Every metric of ``probs`` against ``targets`` (scikit-learn)."""
        from tlkit.evaluation.metrics import classification_metrics

        return classification_metrics(targets, probs, class_names)

    def predictions_table(self, inputs: Sequence[str], targets: np.ndarray, probs: np.ndarray,
                          class_names: list[str], split: str, thresholds: Any = None
                          ) -> pd.DataFrame:
        """One ``predictions.csv`` row per input."""
        from tlkit.evaluation.metrics import predictions_table

        return predictions_table(inputs, targets, probs, class_names, split)

    def headline(self, metrics: dict[str, Any]) -> tuple[str, float]:
        """The one number a line about a split shows: its name and value.

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("image").headline({"accuracy": 0.75})
            ('accuracy', 0.75)
        """
        return "accuracy", float(metrics["accuracy"])

    def read_predictions(self, path: Path) -> pd.DataFrame:
        """A ``predictions.csv`` this task wrote, checked for its columns."""
        from tlkit.evaluation.metrics import read_predictions

        return read_predictions(path)

    def prediction_arrays(self, rows: pd.DataFrame, class_names: list[str]
                          ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """Targets and probabilities of a predictions table's rows, and unknown labels."""
        from tlkit.evaluation.metrics import prediction_arrays

        return prediction_arrays(rows, class_names)

    def thresholds(self, run: Any) -> np.ndarray | None:
        """The per-class decision thresholds the run stored (None: the most probable class
        is the answer)."""
        return None

    def known_rows(self, table: pd.DataFrame, class_names: list[str], ignore_unknown: bool
                   ) -> tuple[pd.DataFrame, dict[str, int]]:
        """Rows whose label the model knows, and the count of each label it never saw.

        Example:
            >>> import pandas as pd
            >>> from tlkit.tasks import get_task
            >>> t = pd.DataFrame({"input": ["a", "b"], "label": ["x", "new"]})
            >>> get_task("image").known_rows(t, ["x", "y"], ignore_unknown=True)[1]
            {'new': 1}
        """
        from tlkit.evaluation.metrics import split_unknown

        mask, unknown = split_unknown(table["label"].tolist(), class_names)
        _refuse_unknown(unknown, class_names, ignore_unknown)
        if not mask.any():
            raise UserError("no example of the data has a label the model knows; check "
                            "--label-column")
        return table[mask].reset_index(drop=True), unknown

    # ------------------------------------------------------------------- answers

    def answer_table(self, items: Sequence[str], probs: np.ndarray,
                     errors: Sequence[str | None], class_names: Sequence[str], top_k: int,
                     thresholds: Any = None) -> pd.DataFrame:
        """``input``, then ``label_1, prob_1, ..., label_k, prob_k`` and ``error`` per input.

        Example:
            >>> from tlkit.tasks import get_task
            >>> print(get_task("image").answer_table(["x"], np.array([[0.2, 0.8]]), [None],
            ...                                      ["a", "b"], 1).to_csv())
            ,input,label_1,prob_1,error
            0,x,b,0.8,
            <BLANKLINE>
        """
        import pandas as pd

        _check_top_k(top_k, len(class_names))
        table = pd.DataFrame({"input": list(items)})
        filled = np.nan_to_num(probs, nan=-1.0)
        order = np.argsort(-filled, axis=1, kind="stable")[:, :top_k]
        failed = np.array([e is not None for e in errors])
        for k in range(top_k):
            picked = order[:, k]
            table[f"label_{k + 1}"] = np.where(failed, "", np.array(class_names)[picked])
            table[f"prob_{k + 1}"] = np.round(probs[np.arange(len(items)), picked], 4)
        table["error"] = [e or "" for e in errors]
        return table

    def answer_rows(self, probs: np.ndarray, errors: Sequence[str | None],
                    class_names: Sequence[str], top_k: int, thresholds: Any = None
                    ) -> list[dict[str, Any]]:
        """One served answer per input: its top-k labels and probabilities, or its error.

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("textcnn").answer_rows(np.array([[0.25, 0.75]]), [None], ["neg", "pos"], 2)
            [{'labels': ['pos', 'neg'], 'probabilities': [0.75, 0.25]}]
        """
        rows: list[dict[str, Any]] = []
        for row, error in zip(probs, errors, strict=True):
            if error is not None:
                rows.append({"error": error})
                continue
            order = np.argsort(-row, kind="stable")[:top_k]
            rows.append({"labels": [class_names[i] for i in order],
                         "probabilities": [round(float(row[i]), 6) for i in order]})
        return rows

    def agreement(self, labels: list[str], expected: np.ndarray, got: np.ndarray,
                  class_names: list[str], thresholds: Any = None) -> dict[str, Any]:
        """Accuracy of two models' probabilities on labelled inputs, and how often they agree
        (a quantised export against the run).

        Example:
            >>> from tlkit.tasks import get_task
            >>> p = np.array([[0.9, 0.1], [0.4, 0.6]])
            >>> task = get_task("image")
            >>> task.agreement(["a", "a"], p, p[:, ::-1], ["a", "b"])["label_agreement"]
            0.0
        """
        index = {name: i for i, name in enumerate(class_names)}
        ids = np.array([index.get(label, -1) for label in labels])
        before = float((expected.argmax(1) == ids).mean())
        after = float((got.argmax(1) == ids).mean())
        return {"accuracy_examples": len(ids), "accuracy_keras": before,
                "accuracy_exported": after, "accuracy_change": after - before,
                "label_agreement": float((expected.argmax(1) == got.argmax(1)).mean())}

    # ------------------------------------------------------------------------- export

    def reference_items(self, run: Any, items: list[str], split: str) -> list[str]:
        """The export check's held-out inputs, refused if they cannot be read any more."""
        return items

    @abstractmethod
    def exported_model(self, run: Any, fmt: str) -> tuple[Any, Any, str]:
        """The Keras model to export, its input signature, and what it takes."""

    def export_files(self, run: Any, takes: str, folder: Path) -> dict[str, Any]:
        """Files an export needs beside the model (written into ``folder``), described."""
        return {}

    @abstractmethod
    def export_batches(self, run: Any, items: Sequence[str], takes: str
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row numbers, exported model's input) batches of ``items``."""

    # ------------------------------------------------------------------ explain, serve

    def check_method(self, method: str | None) -> str:
        """``method``, or the default; one of ``explain_methods`` else a UserError.

        Example:
            >>> from tlkit.tasks import get_task
            >>> get_task("textcnn").check_method("gradcam")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tlkit.errors.UserError: method 'gradcam' does not fit a textcnn run (an image ...
        """
        from tlkit.tasks import TASKS

        if method is None:
            return self.explain_methods[0]
        if method not in self.explain_methods:
            others = [task.name for task in TASKS.values() if method in task.explain_methods]
            where = f" ({_a(others[0])} method)" if others else ""
            raise UserError(f"method '{method}' does not fit {_a(self.name)} run{where}; choose "
                            f"one of: {', '.join(self.explain_methods)}")
        return method

    @abstractmethod
    def check_explain_inputs(self, inputs: Sequence[str], data: str | Path | None,
                             method: str) -> None:
        """Refuse inputs this kind cannot explain, before any model loads."""

    @abstractmethod
    def request_inputs(self, request: Any, folder: Path, allow: Path | None
                       ) -> tuple[list[str], list[str | None]]:
        """A served request's items for ``probabilities`` and an error (or None) for each."""

    def request_error(self, request: Any, i: int, item: str, error: str) -> str:
        """What a served request is told about item ``i`` that the pipeline could not read."""
        return error


def _refuse_unknown(unknown: dict[str, int], class_names: list[str], ignore: bool) -> None:
    if unknown and not ignore:
        listed = ", ".join(f"'{name}' ({count})" for name, count in list(unknown.items())[:5])
        raise UserError(f"the data has label(s) the model never saw: {listed}; the run knows "
                        f"{', '.join(class_names)}. Pass --ignore-unknown to evaluate on the "
                        "known classes only")


def _check_top_k(top_k: int, classes: int) -> None:
    if not 1 <= top_k <= classes:
        raise UserError(f"--top-k {top_k}: choose between 1 and {classes} (the run's "
                        "number of classes)")


def _a(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"
