"""Linear probe: C chosen on validation, test scored once, JSON-safe output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tlkit.evaluation.probe import linear_probe


def _blobs(n: int, seed: int, noise_features: int = 20) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(size=(n, 2 + noise_features))
    x[:, :2] += np.array([[0, 0], [2.5, 0], [0, 2.5]])[y]
    return x.astype("float32"), y


def test_probe_keeps_the_best_c_on_val_and_scores_test_with_it() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (_blobs(n, s) for n, s in
                                                            ((30, 0), (90, 1), (90, 2)))
    probe = linear_probe(train_x, train_y, val_x, val_y, test_x, test_y)
    best = max(probe["val_by_C"].values())
    assert probe["val_accuracy"] == pytest.approx(best)
    assert probe["C"] == min(c for c in probe["Cs"] if probe["val_by_C"][f"{c:g}"] == best)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe["C"], max_iter=5000))
    reference.fit(train_x, train_y)
    assert probe["test_accuracy"] == pytest.approx(reference.score(test_x, test_y))
    assert probe["test_accuracy"] > 0.6
    assert json.loads(json.dumps(probe)) == probe


def test_probe_without_test_split_and_with_spatial_features() -> None:
    x, y = _blobs(60, 0, noise_features=6)
    spatial = np.repeat(x[:, None, :], 4, axis=1)  # (n, 4, 8): flattened per row
    probe = linear_probe(spatial[::2], y[::2], spatial[1::2], y[1::2], Cs=(1.0,))
    assert probe["test_accuracy"] is None and probe["n_features"] == 32
    assert probe["C"] == 1.0 and probe["n_train"] == 30


def test_an_empty_grid_is_refused() -> None:
    x, y = _blobs(12, 0)
    with pytest.raises(ValueError, match="Cs is empty"):
        linear_probe(x, y, x, y, Cs=())


@pytest.mark.parametrize("classes", [2, 3])
def test_the_probe_weights_give_its_probabilities_as_a_softmax_head(classes: int) -> None:
    """A Dense softmax layer with kernel coef.T and bias intercept is the probe (LP-FT's
    starting head); a class no training example has gets no probability."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tlkit.evaluation.probe import fit_linear_probe

    x, y = _blobs(90, 0)
    keep = y < classes
    x, y = x[keep], y[keep]
    probe = fit_linear_probe(x, y, x, y, Cs=(1.0,), n_classes=classes + 1)
    logits = x @ probe.coef.T + probe.intercept
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    expected = reference.fit(x, y).predict_proba(x)
    np.testing.assert_allclose(softmax[:, :classes], expected, atol=1e-6)
    assert softmax[:, classes].max() < 1e-6


def test_the_head_starts_from_the_probe(tmp_path) -> None:
    """``head_init: probe``: before any head epoch, the classifier's head
    answers the probe's probabilities on the cached features; ``random`` does not."""
    from pathlib import Path

    import pandas as pd

    from tlkit.backbones import build_backbone, get_backbone
    from tlkit.data.images import ImageData
    from tlkit.evaluation.probe import fit_linear_probe
    from tlkit.models.image import build_classifier
    from tlkit.recipes import ImageRecipe
    from tlkit.seeds import EpochClock
    from tlkit.train.image import FrozenFeatures

    row = get_backbone("tiny_cnn")
    model = build_classifier(row, build_backbone("tiny_cnn", 32), 3, dropout=0.0)
    images = ImageData(pd.DataFrame({"path": ["a.png"], "label": ["a"], "split": "train"}),
                       ["a", "b", "c"], [])
    frozen = FrozenFeatures(ImageRecipe(backbone="tiny_cnn"), row, model, images,
                            Path(tmp_path), EpochClock(0), model.distribute_strategy)
    x, y = _blobs(60, 1, noise_features=30)  # 32 features: tiny_cnn's pooled width
    probe = fit_linear_probe(x, y, x, y, Cs=(1.0,), n_classes=3)
    before = frozen.head.predict(x, verbose=0)
    frozen.start_head_from(probe)
    after = frozen.head.predict(x, verbose=0)
    logits = x @ probe.coef.T + probe.intercept
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(after, expected, atol=1e-5)
    assert np.abs(before - expected).max() > 0.1
