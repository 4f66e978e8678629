"""Regularizers as recipe fields: label smoothing and EMA per stage, RandAugment, MixUp and
CutMix in the augmentation; and LP-FT, the default schedule's shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from tlkit.errors import UserError
from tlkit.recipes import Augment, ImageRecipe, Stage, dump_recipe, load_recipe_text


def test_the_fields_round_trip_through_yaml_and_are_checked() -> None:
    recipe = ImageRecipe(backbone="tiny_cnn", augment=Augment(mixup=0.2, randaugment=True),
                         stages=[Stage(name="ft", label_smoothing=0.1, ema=True,
                                       train_from="all")])
    again = load_recipe_text(dump_recipe(recipe))
    assert again == recipe
    assert again.stages[0].label_smoothing == 0.1 and again.stages[0].ema
    with pytest.raises(UserError, match="alternatives"):
        Augment(mixup=0.2, cutmix=1.0)
    with pytest.raises(UserError, match="label_smoothing must be in"):
        Stage(label_smoothing=1.0)


@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"cutmix": 1.0}])
def test_batch_mixing_blends_images_and_their_one_hot_targets(mixing: dict) -> None:
    import tensorflow as tf

    from tlkit.data.images import soft_label_stream

    images = np.stack([np.full((16, 16, 3), 10.0 * k, "float32") for k in range(8)])
    labels = np.arange(8) % 4
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    mixed_images, targets = next(iter(soft_label_stream(batches, 4, Augment(**mixing), seed=1)))
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
    assert (targets.max(axis=1) < 1 - 1e-3).any()  # some targets are blends of two classes
    assert not np.allclose(mixed_images.numpy(), images)
    _, plain = next(iter(soft_label_stream(batches, 4, None)))
    np.testing.assert_array_equal(plain.numpy(), np.eye(4)[labels])


def test_label_smoothing_softens_the_training_targets_only() -> None:
    """Smoothing is applied to the training stream's targets (Keras's rule: each class gets
    smoothing / classes), so the loss, and with it val_loss, stays plain cross-entropy: a
    stage with smoothing competes for the kept epoch on the same scale as one without."""
    import tensorflow as tf

    from tlkit.data.images import soft_label_stream
    from tlkit.tasks import get_task
    from tlkit.train.heads import head_loss
    from tlkit.train.stages import make_optimizer

    batches = tf.data.Dataset.from_tensor_slices((tf.zeros((3, 4)), [0, 1, 2])).batch(3)
    _, smoothed = next(iter(soft_label_stream(batches, 3, None, label_smoothing=0.3)))
    np.testing.assert_allclose(smoothed.numpy(), np.eye(3) * 0.7 + 0.1, atol=1e-6)
    sets = tf.data.Dataset.from_tensor_slices((tf.zeros((1, 4)), [[1, 0]])).batch(1)
    _, label_sets = next(iter(soft_label_stream(sets, 2, None, multi_label=True,
                                                label_smoothing=0.2)))
    np.testing.assert_allclose(label_sets.numpy(), [[0.9, 0.1]], atol=1e-6)
    loss = head_loss(get_task("image"), soft_targets=True)
    assert type(loss).__name__ == "CategoricalCrossentropy"
    assert loss.get_config()["label_smoothing"] == 0.0
    assert make_optimizer(Stage(ema=True)).use_ema
    assert not make_optimizer(Stage()).use_ema


def test_a_run_with_every_regularizer_on_trains_and_scores(tmp_path: Path) -> None:
    """Smoothing on the cached head stage; EMA, RandAugment and MixUp while fine-tuning."""
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "images", per_class=8)
    recipe = ImageRecipe(
        backbone="tiny_cnn", data=str(data), weights="none", input_size=32, batch_size=4,
        early_stopping=None, augment=Augment(mixup=0.2, randaugment=True), head_init="probe",
        stages=[Stage(name="head", epochs=1, lr=0.01, label_smoothing=0.1),
                Stage(name="ft", epochs=2, lr=0.01, train_from="all", ema=True)])
    run = finetune(recipe, out=tmp_path / "runs", name="r")
    assert run.history["stage"].tolist() == ["head", "ft", "ft"]
    assert {"accuracy", "val_accuracy", "loss", "val_loss"} <= set(run.history.columns)
    assert 0 <= run.metrics["test"]["accuracy"] <= 1
    assert run.metrics["head_init"] == "probe"  # asked for; the default is random
    assert ImageRecipe().head_init == "random"


def test_ema_validates_and_keeps_the_averaged_weights(tmp_path: Path) -> None:
    """With ``ema``, the kept weights are the moving average of the raw ones (the raw path
    is the same as without it), and the logged val_loss is theirs."""
    import keras
    import tensorflow as tf

    from tlkit.train.fit import fit_stages
    from tlkit.train.stages import make_optimizer

    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = x @ np.array([[1.0], [2.0], [-1.0]], "float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    def kept_weights(ema: bool, folder: Path) -> tuple[np.ndarray, float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        stage = Stage(epochs=2, lr=0.05, optimizer="sgd", ema=ema)
        folder.mkdir()
        log = fit_stages(model, [stage], {"train": train, "val": train}, folder,
                         prepare=lambda _: model.compile(make_optimizer(stage), "mse"),
                         verbose=0)
        assert float(model.evaluate(x, y, verbose=0)) == pytest.approx(
            float(log["val_loss"].min()), rel=1e-4)
        return model.get_weights()[0], float(log["val_loss"].min())

    raw, raw_loss = kept_weights(False, tmp_path / "raw")
    averaged, averaged_loss = kept_weights(True, tmp_path / "ema")
    assert not np.allclose(raw, averaged, atol=1e-3)
    assert averaged_loss > raw_loss  # the average trails the raw weights on a convex fit
