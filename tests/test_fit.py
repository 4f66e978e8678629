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


def test_a_head_stage_writes_the_head_per_epoch_and_keeps_the_classifiers_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras
    import tensorflow as tf

    import tlkit.train.checkpoints
    from tlkit.train.fit import StageFit

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + 0.8 * rng.normal(size=64) > 0).astype("int32")
    inputs = keras.Input((6,))
    features = keras.layers.Dense(8, activation="relu", trainable=False)(inputs)
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, activation="softmax")],
                            name="head")
    model = keras.Model(inputs, head(features), name="classifier")
    feature_model = keras.Model(inputs, features)
    cached = feature_model.predict(x, verbose=0)
    streams = [tf.data.Dataset.from_tensor_slices(pair).batch(8)
               for pair in ((cached[:40], y[:40]), (cached[40:], y[40:]))]
    saved: list[str] = []
    original = tlkit.train.checkpoints.save_weights
    monkeypatch.setattr(tlkit.train.checkpoints, "save_weights",
                        lambda m, path: (saved.append(m.name), original(m, path)))

    def prepare(stage: Stage) -> StageFit:
        head.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        return StageFit(head, *streams)

    history = fit_stages(model, [Stage(name="head", epochs=6, lr=0.1)],
                         {"train": streams[0], "val": streams[1]}, tmp_path,
                         prepare=prepare, monitor="val_loss", verbose=0)
    model.compile(loss="sparse_categorical_crossentropy")
    assert model.evaluate(x[40:], y[40:], verbose=0) == pytest.approx(
        history["val_loss"].min(), rel=1e-4)
    assert set(saved) == {"head"}  # per epoch: the head alone, never the classifier
    assert not (tmp_path / "checkpoints" / "stage-best.weights.h5").exists()


def _noisy_problem(seed: int) -> tuple[object, dict[str, object]]:
    """A small net on noisy labels at a high rate: its val loss wanders epoch to epoch."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] + 0.8 * rng.normal(size=64) > 0).astype("int32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    return model, {"train": tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(8),
                   "val": tf.data.Dataset.from_tensor_slices((x[40:], y[40:])).batch(8)}


@pytest.mark.parametrize("head_lr", [1e-5, 0.05])  # the last stage is kept / is not
def test_a_stage_kept_at_its_last_epoch_offers_that_epoch_alone(head_lr: float,
                                                                tmp_path: Path) -> None:
    import keras

    from tlkit.train.fit import stage_outcomes

    model, datasets = _noisy_problem(0)

    def prepare(stage: Stage) -> None:
        model.compile(keras.optimizers.Adam(stage.lr), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    stages = [Stage(name="head", epochs=3, lr=head_lr),
              Stage(name="fine-tune", epochs=6, lr=0.05, keep="last")]
    history = fit_stages(model, stages, datasets, tmp_path, prepare=prepare,
                         monitor="val_loss", early_stopping=1, verbose=0)
    tuned = history[history["stage"] == "fine-tune"]["val_loss"]
    assert len(tuned) == 6  # no early stopping in a stage kept at its last epoch
    assert tuned.iloc[-1] > tuned.min()  # its best epoch is not its last: the rule shows
    head, tune = stage_outcomes(history, stages)
    assert tune["epoch"] == history["epoch"].max() and tune["value"] == tuned.iloc[-1]
    assert tune["kept"] == (tuned.iloc[-1] < head["value"]) and head["kept"] != tune["kept"]
    assert tune["kept"] == (head_lr == 1e-5)
    assert tune["gain"] == pytest.approx(head["value"] - tuned.iloc[-1], abs=1e-6)
    kept = head if head["kept"] else tune
    assert model.evaluate(datasets["val"], verbose=0)[0] == pytest.approx(kept["value"],
                                                                          rel=1e-4)


def test_stages_of_one_name_get_labels_of_their_own(tmp_path: Path) -> None:
    import keras

    model, datasets = _noisy_problem(2)

    def prepare(stage: Stage) -> None:
        model.compile(keras.optimizers.Adam(stage.lr), "sparse_categorical_crossentropy")

    history = fit_stages(model, [Stage(epochs=2), Stage(epochs=2)], datasets, tmp_path,
                         prepare=prepare, verbose=0)
    assert history["stage"].tolist() == ["head", "head", "head-2", "head-2"]


def test_a_kill_inside_a_stage_kept_at_its_last_epoch_resumes_to_the_same_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    import tlkit.train.fit as fit_module
    from tlkit.train.fit import stage_outcomes

    stages = [Stage(name="head", epochs=3, lr=1e-5),
              Stage(name="fine-tune", epochs=6, lr=0.05, keep="last")]

    def run(folder: Path) -> tuple[pd.DataFrame, float]:
        folder.mkdir(exist_ok=True)
        model, datasets = _noisy_problem(0)

        def prepare(stage: Stage) -> None:
            model.compile(keras.optimizers.Adam(stage.lr), "sparse_categorical_crossentropy")

        history = fit_stages(model, stages, datasets, folder, prepare=prepare, verbose=0)
        return history, model.evaluate(datasets["val"], verbose=0)

    real = fit_module.epoch_callbacks

    def killed_at_epoch_5(*args: object) -> list[object]:
        class Kill(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: object = None) -> None:
                if epoch == 5:  # the third of the fine-tuning stage's six, after its backup
                    raise KeyboardInterrupt

        return [*real(*args), Kill()]

    monkeypatch.setattr(fit_module, "epoch_callbacks", killed_at_epoch_5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.setattr(fit_module, "epoch_callbacks", real)
    resumed, resumed_loss = run(tmp_path / "killed")
    whole, whole_loss = run(tmp_path / "whole")
    assert resumed["epoch"].tolist() == list(range(9))
    assert resumed["val_loss"].tolist() == pytest.approx(whole["val_loss"].tolist(), rel=1e-5)
    assert stage_outcomes(resumed, stages)[1]["kept"]  # the last epoch, after the resume
    assert resumed_loss == pytest.approx(whole_loss, rel=1e-5)
    assert resumed_loss == pytest.approx(whole["val_loss"].iloc[-1], rel=1e-4)
