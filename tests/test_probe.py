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
