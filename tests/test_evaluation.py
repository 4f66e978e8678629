"""Metrics on hand-checkable arrays (checked against scikit-learn where not obvious), the
predictions file, and every figure from 2 to 100 classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, write_image
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    log_loss,
    roc_auc_score,
    top_k_accuracy_score,
)

from tlkit.evaluation.metrics import (
    classification_metrics,
    most_confused,
    prediction_arrays,
    predictions_table,
    read_predictions,
    split_unknown,
)
from tlkit.evaluation.plots import (
    confusion_matrix_figure,
    reliability_figure,
    roc_pr_figure,
    top_losses_figure,
    training_curves_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Binary: predictions [0, 1, 0, 1] against [0, 0, 1, 1].
Y_BINARY = np.array([0, 0, 1, 1])
P_BINARY = np.array([[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])


def test_binary_metrics_by_hand() -> None:
    m = classification_metrics(Y_BINARY, P_BINARY, ["neg", "pos"])
    assert m["n"] == 4 and m["accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["confusion_matrix_normalized"] == [[0.5, 0.5], [0.5, 0.5]]
    assert m["per_class"]["pos"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["macro_f1"] == m["weighted_f1"] == 0.5
    assert m["top_k_accuracy"] == {"1": 0.5}
    # Positives score 0.4 and 0.9, negatives 0.1 and 0.6: 3 of 4 pairs ordered right.
    assert m["roc_auc"]["per_class"] == {"neg": 0.75, "pos": 0.75}
    assert m["roc_auc"]["skipped"] == []
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert m["average_precision"]["per_class"]["pos"] == pytest.approx(
        average_precision_score(Y_BINARY, P_BINARY[:, 1]))
    # Confidence 0.9 always right, 0.6 always wrong: ECE = 0.5 * 0.1 + 0.5 * 0.6.
    assert m["ece"] == pytest.approx(0.35)
    reliability = m["reliability"]
    assert sum(reliability["count"]) == 4 and reliability["bins"] == 15
    filled = [i for i, count in enumerate(reliability["count"]) if count]
    assert [reliability["accuracy"][i] for i in filled] == [0.0, 1.0]
    assert [reliability["confidence"][i] for i in filled] == pytest.approx([0.6, 0.9])


def test_multiclass_metrics_with_a_class_missing_from_the_labels() -> None:
    names = ["a", "b", "c"]
    y = np.array([0, 1, 1, 0, 1, 0])
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4], [0.4, 0.5, 0.1],
                  [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]])
    m = classification_metrics(y, p, names)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert m["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["top_k_accuracy"]["2"] == top_k_accuracy_score(y, p, k=2, labels=[0, 1, 2])
    assert m["loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    auc = m["roc_auc"]
    assert auc["skipped"] == ["c"] and set(auc["per_class"]) == {"a", "b"}
    for k, name in enumerate(names[:2]):
        assert auc["per_class"][name] == pytest.approx(roc_auc_score(y == k, p[:, k]))
        assert m["average_precision"]["per_class"][name] == pytest.approx(
            average_precision_score(y == k, p[:, k]))
    assert auc["macro"] == pytest.approx(np.mean(list(auc["per_class"].values())))
    json.dumps(m, allow_nan=False)  # JSON-safe: plain floats, lists, string keys


def test_top_k_goes_up_to_five_and_below_the_class_count() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8), size=40)
    m = classification_metrics(rng.integers(0, 8, 40), p, [str(i) for i in range(8)])
    assert list(m["top_k_accuracy"]) == ["1", "2", "3", "4", "5"]
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3), ["a", "b", "c"])
    assert list(three["top_k_accuracy"]) == ["1", "2"]


def test_no_class_can_be_scored_when_every_label_is_the_same() -> None:
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ["a", "b"])
    assert m["roc_auc"] == {"per_class": {}, "macro": None, "micro": None, "skipped": ["a", "b"]}


def test_bad_shapes_and_empty_input_are_user_errors() -> None:
    assert_user_error(lambda: classification_metrics(np.array([0]), np.ones((1, 3)), ["a", "b"]),
                      "shape (1, 3)")
    assert_user_error(lambda: classification_metrics(np.array([], int), np.ones((0, 2)),
                                                     ["a", "b"]), "no examples")


def test_most_confused_orders_off_diagonal_cells_by_count() -> None:
    table = most_confused([[5, 1, 3], [0, 4, 0], [2, 0, 6]], ["a", "b", "c"], n=2)
    assert table.to_dict(orient="list") == {"true": ["a", "c"], "predicted": ["c", "a"],
                                            "count": [3, 2], "share": [3 / 9, 2 / 8]}
    assert most_confused([[2, 0], [0, 2]], ["a", "b"]).empty


def test_split_unknown_names_and_counts_labels_the_model_never_saw() -> None:
    mask, unknown = split_unknown(["cat", "yak", "zebra", "dog", "zebra"], ["cat", "dog"])
    assert mask.tolist() == [True, False, False, True, False]
    assert unknown == {"zebra": 2, "yak": 1}


def test_predictions_table_round_trips_through_csv(tmp_path: Path) -> None:
    names = ["NA", "1", "c"]  # labels that pandas would otherwise read as NaN and a number
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], dtype="float32")
    table = predictions_table(["x.png", "y.png", 'a "quoted", text'], [0, "c", "zebra"], p,
                              names, "test")
    assert table.columns.tolist() == ["split", "input", "label", "predicted", "confidence",
                                      "loss", "p0", "p1", "p2"]
    assert table["label"].tolist() == ["NA", "c", "zebra"]
    assert math.isnan(table["loss"][2])
    assert table["loss"][:2].mean() == pytest.approx(log_loss([0, 2], p[:2], labels=[0, 1, 2]))
    table.to_csv(tmp_path / "predictions.csv", index=False)
    back = read_predictions(tmp_path / "predictions.csv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    y, probabilities, unknown = prediction_arrays(back, names)
    assert y.tolist() == [0, 2] and probabilities.shape == (2, 3) and unknown == {"zebra": 1}


def test_read_predictions_errors(tmp_path: Path) -> None:
    assert_user_error(lambda: read_predictions(tmp_path / "none.csv"), "does not exist")
    (tmp_path / "bad.csv").write_text("input,label\na,b\n")
    assert_user_error(lambda: read_predictions(tmp_path / "bad.csv"), "not a predictions file",
                      "split")


def _fake_predictions(classes: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def _saved(figure: Figure, path: Path) -> Path:
    assert isinstance(figure, Figure)
    figure.savefig(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return path


@pytest.mark.parametrize("classes", [2, 100])
def test_figures_from_2_to_100_classes(classes: int, tmp_path: Path) -> None:
    names = [f"class {i:03d} with a long name" for i in range(classes)]
    y, p = _fake_predictions(classes, 20 * classes)
    m = classification_metrics(y, p, names)
    confusion = confusion_matrix_figure(m["confusion_matrix"], names)
    axes = confusion.axes[0]
    labels = axes.get_xticklabels()
    assert 1 < len(labels) <= classes and min(t.get_fontsize() for t in labels) >= 5
    # Cells are annotated only while they are big enough to read.
    assert len(axes.texts) == (classes * classes if classes <= 20 else 0)
    _saved(confusion, tmp_path / "confusion.png")
    curves = roc_pr_figure(y, p, names)
    roc_lines = [line.get_label() for line in curves.axes[0].get_lines()]
    if classes == 2:
        assert roc_lines[0].startswith("class 001")
    else:
        assert any(label.startswith("micro") for label in roc_lines)
        assert any(label.startswith("macro") for label in roc_lines)
        assert sum(label.startswith("lowest") for label in roc_lines) == 3
    _saved(curves, tmp_path / "curves.png")
    _saved(reliability_figure(m["reliability"], m["ece"]), tmp_path / "reliability.png")


def test_training_curves_mark_each_stage() -> None:
    history = pd.DataFrame({"epoch": range(6), "stage": ["head"] * 3 + ["block6"] * 3,
                            "accuracy": np.linspace(0.5, 0.9, 6), "loss": np.linspace(1, 0.3, 6),
                            "val_accuracy": np.linspace(0.5, 0.8, 6),
                            "val_loss": np.linspace(1.1, 0.5, 6)})
    figure = training_curves_figure(history)
    assert [axes.get_title() for axes in figure.axes] == ["Loss", "Accuracy"]
    for axes in figure.axes:
        assert {text.get_text() for text in axes.texts} == {"head", "block6"}
        boundaries = [line for line in axes.get_lines() if line.get_xdata()[0] == 3.5]
        assert len(boundaries) == 1  # between epoch 3 and 4 (1-based)
        assert {line.get_label() for line in axes.get_lines()} >= {"train", "validation"}
    without_stages = training_curves_figure(history.drop(columns="stage"))
    assert all(not axes.texts for axes in without_stages.axes)
    assert_user_error(lambda: training_curves_figure(pd.DataFrame({"epoch": [0], "lr": [1]})),
                      "no loss or accuracy column")


def test_top_losses_gallery_of_images_and_table_of_sentences(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", (200, 30 * i, 30)) for i in range(3)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    p = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    table = predictions_table([*paths, tmp_path / "broken.png"], [1, 1, 0, 0], p,
                              ["cat", "dog"], "test")
    gallery = top_losses_figure(table, ["cat", "dog"], n=3)
    titles = [axes.get_title() for axes in gallery.axes if axes.get_title()]
    assert len(titles) == 3 and titles[0].startswith("true dog (0.10)\npred cat (0.90)")
    assert any("cannot open" in text.get_text() for axes in gallery.axes for text in axes.texts)
    _saved(gallery, tmp_path / "gallery.png")
    sentences = table.assign(input=["a dull film", "not bad at all", "fine", "meh"])
    text_figure = top_losses_figure(sentences, ["cat", "dog"], n=2, kind="textcnn")
    cells = [cell.get_text().get_text()
             for cell in text_figure.axes[0].tables[0].get_celld().values()]
    assert "a dull film" in cells and "meh" in cells and "not bad at all" not in cells
    _saved(text_figure, tmp_path / "sentences.png")


def test_float32_probabilities_read_back_as_float64_need_no_warning() -> None:
    import warnings

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, 7)).astype("float32")
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(rng.integers(0, 7, 50), softmax.astype(float),
                                   [str(i) for i in range(7)])
    assert 0 < m["loss"] < 10


def test_curves_of_a_split_holding_one_class_draw_without_warnings() -> None:
    import warnings

    y, p = np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" is a warning
        figure = roc_pr_figure(y, p, ["a", "b"])
    assert figure.axes[1].get_legend() is None  # no precision-recall curve to name
