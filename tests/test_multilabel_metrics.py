"""Multi-label building blocks: thresholds chosen on val, metrics equal to scikit-learn's
direct calls and known by hand on small arrays, the predictions table read back, the
one-vs-rest probe, and the figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    log_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
)

from tlkit.evaluation.metrics import read_predictions
from tlkit.evaluation.multilabel import (
    MULTILABEL_PREDICTION_COLUMNS,
    apply_thresholds,
    choose_thresholds,
    example_losses,
    multilabel_metrics,
    multilabel_prediction_arrays,
    multilabel_predictions_table,
)
from tlkit.evaluation.plots import CURVES_MAX, GRID_MAX, WORST_SHOWN, label_confusion_figure
from tlkit.evaluation.plots import multilabel_pr_figure as pr_figure
from tlkit.evaluation.probe import linear_probe, one_vs_rest_probe

NAMES = ["beach", "sunset", "people"]


def _random(n: int = 40, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label sets and noisy probabilities that lean towards them; every class present."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, classes)) < 0.4).astype(int)
    y[:classes, :] = np.eye(classes, dtype=int)
    p = np.clip(0.35 * y + rng.random((n, classes)) * 0.65, 0, 1)
    return y, p


def test_perfect_predictions_score_perfectly() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    p = np.where(y == 1, 0.9, 0.1)
    m = multilabel_metrics(y, p, NAMES, choose_thresholds(y, p))
    assert m["n"] == 4
    assert m["average_precision"]["macro"] == m["average_precision"]["micro"] == 1.0
    assert m["subset_accuracy"] == 1.0 and m["hamming_loss"] == 0.0
    assert m["micro_f1"] == m["macro_f1"] == m["weighted_f1"] == m["samples_f1"] == 1.0
    assert m["label_cardinality"] == {"true": 1.5, "predicted": 1.5}
    assert m["per_class"]["beach"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                       "support": 2, "threshold": 0.5}
    assert m["label_confusion"]["people"] == [[2, 0], [0, 2]]
    assert m["loss"] == pytest.approx(-np.log(0.9))
    assert json.loads(json.dumps(m)) == m


def test_an_example_rightly_given_no_label_counts_as_right_in_the_samples_average() -> None:
    y = np.array([[0, 0], [1, 0], [0, 1], [0, 0]])
    p = np.array([[.1, .2], [.9, .1], [.2, .3], [.3, .6]])
    m = multilabel_metrics(y, p, ["toxic", "insult"], [.5, .5])
    # Per example F1: 1 (nothing, rightly), 1, 0 (missed), 0 (a label where none is).
    assert m["samples_f1"] == 0.5 and m["samples_avg"]["support"] == 2
    assert m["subset_accuracy"] == 0.5 and m["label_cardinality"]["true"] == 0.5


def test_a_class_never_positive_keeps_half_and_is_left_out_of_map() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    p = np.array([[.8, .3, .6], [.2, .7, .1], [.9, .6, .2], [.4, .1, .3]])
    thresholds = choose_thresholds(y, p)
    assert thresholds[2] == 0.5
    m = multilabel_metrics(y, p, NAMES, thresholds)
    ap = m["average_precision"]
    assert ap["skipped"] == ["people"] and set(ap["per_class"]) == {"beach", "sunset"}
    assert ap["macro"] == pytest.approx(average_precision_score(y[:, :2], p[:, :2]))
    assert ap["micro"] == pytest.approx(average_precision_score(y, p, average="micro"))
    # 0.6 >= 0.5 calls "people" once where it never is: one false positive.
    assert m["per_class"]["people"]["support"] == 0
    assert m["label_confusion"]["people"] == [[3, 1], [0, 0]]


def test_thresholds_fall_midway_between_the_classes_of_a_separable_label() -> None:
    y = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 1]])
    p = np.array([[.1, .05], [.2, .95], [.6, .1], [.7, .8], [.15, .85]])
    # Class 0: negatives up to 0.2, positives from 0.6. Class 1: 0.1 | 0.8.
    assert choose_thresholds(y, p) == pytest.approx([0.4, 0.45])


def test_equal_f1_goes_to_the_lowest_threshold_and_a_label_always_present_keeps_half() -> None:
    # Scores .1 .2 .3 .9 for labels 1 0 0 1: calling all positive (F1 2/3) ties calling
    # only .9 positive (F1 2/3); the lowest wins, and nothing is below it: (0 + .1) / 2.
    y = np.array([[1, 1], [0, 1], [0, 1], [1, 1]])
    p = np.array([[.1, .3], [.2, .2], [.3, .9], [.9, .1]])
    assert choose_thresholds(y, p) == pytest.approx([0.05, 0.5])


def test_chosen_thresholds_reach_the_best_f1_of_any_threshold() -> None:
    y, p = _random(60, 4, seed=3)
    chosen = apply_thresholds(p, choose_thresholds(y, p))
    for c in range(4):
        best = max(f1_score(y[:, c], p[:, c] >= t) for t in np.unique(p[:, c]))
        assert f1_score(y[:, c], chosen[:, c]) == pytest.approx(best)


def test_metrics_equal_scikit_learns_direct_calls() -> None:
    y, p = _random(50, 3, seed=1)
    thresholds = np.array([0.5, 0.4, 0.6])
    predicted = (p >= thresholds).astype(int)
    m = multilabel_metrics(y, p, NAMES, thresholds)
    assert m["average_precision"]["macro"] == pytest.approx(average_precision_score(y, p))
    assert m["average_precision"]["micro"] == pytest.approx(
        average_precision_score(y, p, average="micro"))
    for average in ("micro", "macro", "weighted"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, predicted, average=average,
                                                            zero_division=0))
    assert m["samples_f1"] == pytest.approx(f1_score(y, predicted, average="samples",
                                                     zero_division=1))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, predicted))
    assert m["loss"] == pytest.approx(log_loss(y.ravel(), p.ravel()))
    assert [m["label_confusion"][n] for n in NAMES] == \
        multilabel_confusion_matrix(y, predicted).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted)
    for c, name in enumerate(NAMES):
        row = m["per_class"][name]
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx(
            [precision[c], recall[c], f1[c]])
        assert row["support"] == support[c] and row["threshold"] == thresholds[c]
    assert m["label_cardinality"]["predicted"] == pytest.approx(predicted.sum(1).mean())
    assert m["thresholds"] == thresholds.tolist()


def test_example_losses_by_hand_and_their_mean_is_log_loss() -> None:
    y = np.array([[1, 0], [0, 0]])
    p = np.array([[0.8, 0.4], [0.5, 0.0]])
    losses = example_losses(y, p)
    assert losses[0] == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    y, p = _random(30, 3, seed=2)
    p32 = p.astype("float32")
    assert example_losses(y, p32).mean() == pytest.approx(log_loss(y.ravel(), p32.ravel()),
                                                          rel=1e-5)


def test_the_predictions_table_reads_back(tmp_path: Path) -> None:
    y = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    p = np.array([[.9, .2, .4], [.1, .3, .2], [.6, .7, .1]])
    table = multilabel_predictions_table(["a.png", "b.png", "NA"], y, p, NAMES,
                                         [0.5, 0.5, 0.3], "test")
    assert table.columns.tolist() == [*MULTILABEL_PREDICTION_COLUMNS, "p0", "p1", "p2"]
    assert table["label"].tolist() == ["beach|people", "", "sunset"]
    assert table["predicted"].tolist() == ["beach|people", "", "beach|sunset"]
    assert table["loss"].to_numpy() == pytest.approx(example_losses(y, p))
    table.to_csv(tmp_path / "predictions.csv", index=False)
    back = read_predictions(tmp_path / "predictions.csv", columns=MULTILABEL_PREDICTION_COLUMNS)
    assert back["input"].tolist() == ["a.png", "b.png", "NA"]
    labels, probabilities, unknown = multilabel_prediction_arrays(back, NAMES)
    assert labels.tolist() == y.tolist() and probabilities == pytest.approx(p)
    assert unknown == {}
    back.loc[1, "label"] = "zebra|sunset"
    labels, _, unknown = multilabel_prediction_arrays(back, NAMES)
    assert labels[1].tolist() == [0, 1, 0] and unknown == {"zebra": 1}


def test_a_multilabel_table_is_not_a_single_label_predictions_file(tmp_path: Path) -> None:
    y, p = _random(4, 3)
    multilabel_predictions_table(list("abcd"), y, p, NAMES, [.5] * 3, "val").to_csv(
        tmp_path / "p.csv", index=False)
    assert_user_error(lambda: read_predictions(tmp_path / "p.csv"), "confidence")


@pytest.mark.parametrize("call, words", [
    (lambda: multilabel_metrics([[1, 0]], [[.5, .5, .5]], ["a", "b"], [.5, .5]),
     ("shape (1, 2)", "(1, 3)", "(examples, 2)")),
    (lambda: multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"], [.5, .5]),
     ("no examples",)),
    (lambda: choose_thresholds([[2, 0]], [[.5, .5]]), ("0 or 1", "got 2")),
    (lambda: choose_thresholds([[1, 0]], [[1.5, np.nan]]), ("[0, 1]", "got 1.5")),
    (lambda: multilabel_metrics([[1, 0]], [[.5, .5]], ["a", "b"], [.5]),
     ("1 thresholds", "one threshold per class")),
    (lambda: multilabel_predictions_table(["x"], [[1, 0]], [[.5, .5]], ["a|b", "c"], [.5, .5],
                                          "test"), ("'a|b'", "rename the class")),
    (lambda: multilabel_predictions_table(["x", "y"], [[1, 0]], [[.5, .5]], ["a", "b"],
                                          [.5, .5], "test"), ("2 inputs", "1 rows")),
], ids=["shapes", "empty", "labels not 0 or 1", "probability outside 0 to 1",
        "thresholds per class", "class name with the separator", "inputs and rows"])
def test_bad_inputs_are_user_errors(call: object, words: tuple[str, ...]) -> None:
    assert_user_error(call, *words)


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of 3 labels switches one feature on (+8), among 5 noise features."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.5).astype(int)
    x = rng.normal(size=(n, 8)).astype("float32")
    x[:, :3] += 8 * y
    return x, y


def test_the_one_vs_rest_probe_separates_labels_and_its_weights_are_a_sigmoid_head() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (_separable(n, s) for n, s in
                                                            ((80, 0), (60, 1), (60, 2)))
    probe = one_vs_rest_probe(train_x, train_y, val_x, val_y, test_x, test_y)
    summary = probe.summary
    assert summary["val_map"] > 0.98 and summary["test_map"] > 0.98
    best = max(summary["val_by_C"].values())
    assert summary["C"] == min(c for c in summary["Cs"] if summary["val_by_C"][f"{c:g}"] == best)
    assert summary["n_classes"] == 3 and summary["n_features"] == 8
    assert json.loads(json.dumps(summary)) == summary
    reference = make_pipeline(StandardScaler(), OneVsRestClassifier(
        LogisticRegression(C=summary["C"], max_iter=5000))).fit(train_x, train_y)
    head = 1 / (1 + np.exp(-(test_x @ probe.coef.T + probe.intercept)))
    assert probe.coef.shape == (3, 8)
    assert head == pytest.approx(reference.predict_proba(test_x), abs=1e-5)


def test_a_label_constant_in_train_gets_a_constant_head() -> None:
    x, y = _separable(40, 0)
    y[:, 2] = 0
    with pytest.warns(UserWarning, match="Label not 2 is present"):
        probe = one_vs_rest_probe(x, y, x, y, Cs=(1.0,))
    assert not probe.coef[2].any() and probe.intercept[2] < -16


def test_the_single_label_probe_still_picks_c_by_accuracy() -> None:
    x, y = _separable(60, 0)
    probe = linear_probe(x, y[:, 0], x, y[:, 0], Cs=(0.01, 1.0))
    assert probe["val_accuracy"] == max(probe["val_by_C"].values()) > 0.9


def _drawn(figure: Figure) -> None:
    figure.savefig(io.BytesIO(), format="png")  # Figure renders with Agg, never a window


def test_the_pr_figure_draws_each_label_its_threshold_and_the_micro_average() -> None:
    y, p = _random(30, 3)
    figure = pr_figure(y, p, NAMES, thresholds=[.5, .5, .5])
    _drawn(figure)
    (axes,) = figure.axes
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert len(legend) == 3 + 2 and legend[3].startswith("micro (AP")
    assert len(axes.lines) == 3 * 2 + 2  # a curve and a dot per label, micro, the dot's key


def test_the_pr_figure_of_many_labels_draws_the_lowest_few() -> None:
    y, p = _random(80, CURVES_MAX + 2, seed=4)
    figure = pr_figure(y, p, [f"tag{i}" for i in range(CURVES_MAX + 2)])
    _drawn(figure)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert len(legend) == WORST_SHOWN + 1 and legend[0].startswith("lowest: ")


def test_the_confusion_grid_has_a_cell_per_label_and_caps_at_the_most_errors() -> None:
    y, p = _random(30, 3)
    m = multilabel_metrics(y, p, NAMES, [.5, .5, .5])
    figure = label_confusion_figure(m["label_confusion"])
    _drawn(figure)
    assert [axes.get_title() for axes in figure.axes] == NAMES
    many = {f"tag{i}": [[10, i], [0, 5]] for i in range(GRID_MAX + 6)}
    figure = label_confusion_figure(many)
    _drawn(figure)
    assert len(figure.axes) == GRID_MAX
    assert figure.axes[0].get_title() == f"tag{GRID_MAX + 5}"
