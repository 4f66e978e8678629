"""The shared stage loop keeps the epoch its monitor says is best, and logs stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tlkit.recipes import Stage
from tlkit.train.fit import fit_stages


@pytest.mark.parametrize("monitor", ["val_accuracy", "val_loss"])
def test_kept_weights_are_the_monitors_best_epoch(monitor: str, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + 0.8 * rng.normal(size=64) > 0).astype("int32")  # noisy: metrics wander
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    datasets = {"train": tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(8),
                "val": tf.data.Dataset.from_tensor_slices((x[40:], y[40:])).batch(8)}

    def prepare(stage: Stage) -> None:
        model.compile(keras.optimizers.Adam(stage.lr), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    history = fit_stages(model, [Stage(name="a", epochs=4, lr=0.05),
                                 Stage(name="b", epochs=4, lr=0.05)],
                         datasets, tmp_path, prepare=prepare, monitor=monitor, verbose=0)
    assert list(history["stage"]) == ["a"] * 4 + ["b"] * 4
    assert pd.read_csv(tmp_path / "history.csv")["stage"].tolist() == list(history["stage"])
    loss, accuracy = model.evaluate(datasets["val"], verbose=0)
    if monitor == "val_accuracy":
        assert accuracy == pytest.approx(history["val_accuracy"].max(), abs=1e-6)
    else:
        assert loss == pytest.approx(history["val_loss"].min(), rel=1e-4)
