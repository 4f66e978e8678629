"""Same seed, same data, CPU: identical history and metrics, for an image and a text run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import make_image_folder

from tlkit.recipes import Augment, ImageRecipe, Stage, TextCNNRecipe


def _same_run_files(first: Path, second: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(first / "history.csv"),
                                  pd.read_csv(second / "history.csv"), check_exact=True)
    one, two = (json.loads((p / "metrics.json").read_text()) for p in (first, second))
    for metrics in (one, two):
        metrics.pop("train_seconds")
        metrics.get("probe", {}).pop("fit_seconds", None)
    assert one == two


def test_image_runs_repeat_exactly(tmp_path: Path) -> None:
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "img", per_class=8, classes=("red", "green", "blue"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=4, early_stopping=None, augment=Augment(),
                         stages=[Stage(name="head", epochs=2, lr=0.01),
                                 Stage(name="all", epochs=2, lr=0.01, train_from="all")])
    runs = [finetune(recipe, out=tmp_path / "runs", name=name).path for name in ("a", "b")]
    _same_run_files(*runs)


def test_text_runs_repeat_exactly(tmp_path: Path) -> None:
    from tlkit.train.text import train_textcnn

    words = ["good", "great", "bad", "awful", "plot", "film", "the", "a"]
    rows = [{"text": f"{words[i % 8]} {words[(i * 3) % 8]} {words[(i * 5) % 8]}",
             "label": "pos" if i % 8 < 2 or (i * 3) % 8 < 2 else "neg"} for i in range(80)]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    recipe = TextCNNRecipe(data=str(tmp_path / "train.csv"), embedding_dim=8, feature_maps=4,
                           epochs=3, batch_size=8)
    runs = [train_textcnn(recipe, out=tmp_path / "runs", name=name).path for name in ("a", "b")]
    _same_run_files(*runs)
