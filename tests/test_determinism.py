"""Same seed, same data, CPU: identical history and metrics, for an image and a text run; and
another seed gives other numbers (the seed is used, not fixed somewhere)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import make_image_folder

from tlkit.recipes import Augment, ImageRecipe, Stage, TextCNNRecipe


@pytest.fixture(autouse=True)
def no_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six runs here: their HTML reports (a second each) are not what is compared."""
    monkeypatch.setattr(importlib.import_module("tlkit.evaluate"), "report_after_training",
                        lambda run_path: None)


def _run_files(run: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """history.csv and metrics.json, without the wall-clock times."""
    history = pd.read_csv(run / "history.csv")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("train_seconds")
    metrics.pop("phases")  # wall time of each phase
    metrics.get("probe", {}).pop("fit_seconds", None)
    return history, metrics


def _check_seeds(first: Path, second: Path, other_seed: Path, epochs: int) -> None:
    """``first`` and ``second`` (same seed) are identical and not empty; ``other_seed`` is not."""
    (history, metrics), (again, metrics_again), (other, other_metrics) = map(
        _run_files, (first, second, other_seed))
    assert len(history) == len(other) == epochs
    numbers = history[["loss", "accuracy", "val_loss", "val_accuracy"]]
    assert np.isfinite(numbers.to_numpy()).all() and (history["loss"] > 0).all()
    assert metrics["val"]["n"] > 0 and np.isfinite(metrics["val"]["loss"])
    pd.testing.assert_frame_equal(history, again, check_exact=True)
    assert metrics == metrics_again
    # Another seed: other initial weights, split and batches, so every epoch's loss differs.
    assert (history["loss"] != other["loss"]).all(), (history, other)
    assert metrics["val"]["loss"] != other_metrics["val"]["loss"]


def test_image_runs_repeat_exactly(tmp_path: Path) -> None:
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "img", per_class=8, classes=("red", "green", "blue"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, early_stopping=None, augment=Augment(),
                         stages=[Stage(name="head", epochs=2, lr=0.01),
                                 Stage(name="all", epochs=2, lr=0.01, train_from="all")])
    runs = [finetune(recipe, out=tmp_path / "runs", name=name).path for name in ("a", "b")]
    recipe.seed += 1
    other = finetune(recipe, out=tmp_path / "runs", name="other-seed").path
    _check_seeds(*runs, other, epochs=4)


def test_text_runs_repeat_exactly(tmp_path: Path) -> None:
    from tlkit.train.text import train_textcnn

    words = ["good", "great", "bad", "awful", "plot", "film", "the", "a"]
    rows = [{"text": f"{words[i % 8]} {words[(i * 3) % 8]} {words[(i * 5) % 8]}",
             "label": "pos" if i % 8 < 2 or (i * 3) % 8 < 2 else "neg"} for i in range(80)]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    recipe = TextCNNRecipe(data=str(tmp_path / "train.csv"), embedding_dim=8, feature_maps=4,
                           epochs=3, batch_size=8)
    runs = [train_textcnn(recipe, out=tmp_path / "runs", name=name).path for name in ("a", "b")]
    recipe.seed += 1
    other = train_textcnn(recipe, out=tmp_path / "runs", name="other-seed").path
    _check_seeds(*runs, other, epochs=3)
