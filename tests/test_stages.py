"""Stages: what trains, BatchNorm policy, per-block learning rates, recompiling."""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.backbones import build_backbone, get_backbone
from tlkit.errors import UserError
from tlkit.models.image import build_classifier
from tlkit.recipes import Stage
from tlkit.train.stages import (
    compile_for_stage,
    first_trainable_block,
    make_optimizer,
    prepare_stage,
)

ROW = get_backbone("tiny_cnn")


def _model() -> tuple:
    backbone = build_backbone("tiny_cnn", 32)
    return build_classifier(ROW, backbone, num_classes=2, dropout=0.0), backbone


def _trainable_layers(backbone) -> set[str]:
    return {layer.name for layer in backbone.layers if layer.trainable and layer.weights}


def test_frozen_stage_trains_only_the_head() -> None:
    model, backbone = _model()
    plan = prepare_stage(backbone, ROW, Stage(train_from=None))
    assert plan.backbone_frozen
    assert not backbone.trainable_weights
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"predictions"}


def test_unfreezing_from_the_last_block_keeps_batchnorm_frozen() -> None:
    _, backbone = _model()
    plan = prepare_stage(backbone, ROW, Stage(train_from=-1))
    assert plan.trainable_blocks == [2]
    assert _trainable_layers(backbone) == {"block3_conv"}


def test_batchnorm_policy_trainable_unfreezes_batchnorm() -> None:
    _, backbone = _model()
    prepare_stage(backbone, ROW, Stage(train_from="block2_conv"), batchnorm="trainable")
    assert _trainable_layers(backbone) == {"block2_conv", "block2_bn", "block3_conv", "block3_bn"}


def test_frozen_batchnorm_keeps_its_statistics_while_convolutions_learn() -> None:
    model, backbone = _model()
    plan = prepare_stage(backbone, ROW, Stage(train_from="all", lr=0.01))
    compile_for_stage(model, Stage(train_from="all", lr=0.01), plan)
    bn = backbone.get_layer("block1_bn")
    mean_before = np.array(bn.moving_mean)
    conv_before = np.array(backbone.get_layer("block1_conv").kernel)
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=1, verbose=0)
    np.testing.assert_array_equal(np.array(bn.moving_mean), mean_before)
    assert not np.allclose(np.array(backbone.get_layer("block1_conv").kernel), conv_before)


def test_recompiling_between_stages_changes_what_trains() -> None:
    model, backbone = _model()
    x = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = np.array([0, 1] * 4)
    for stage in (Stage(train_from=None), Stage(train_from=-1, lr=1e-3)):
        plan = prepare_stage(backbone, ROW, stage)
        compile_for_stage(model, stage, plan)
        block1 = np.array(backbone.get_layer("block1_conv").kernel)
        block3 = np.array(backbone.get_layer("block3_conv").kernel)
        model.fit(x, y, epochs=1, verbose=0)
        np.testing.assert_array_equal(np.array(backbone.get_layer("block1_conv").kernel), block1)
        changed = not np.allclose(np.array(backbone.get_layer("block3_conv").kernel), block3)
        assert changed == (stage.train_from is not None)


def test_discriminative_rates_scale_each_block() -> None:
    _, backbone = _model()
    plan = prepare_stage(backbone, ROW, Stage(train_from="all", lr_decay=0.5))
    factor = {path.split("/")[-2]: value for path, value in plan.lr_multipliers.items()}
    assert factor == {"block3_conv": 1.0, "block2_conv": 0.5, "block1_conv": 0.25}


def test_layerwise_optimizer_applies_the_factor_to_the_update() -> None:
    import keras

    a = keras.Variable(np.zeros(3, "float32"), name="a")
    b = keras.Variable(np.zeros(3, "float32"), name="b")
    optimizer = make_optimizer(Stage(lr=0.1, optimizer="adam"), {b.path: 0.25})
    gradient = np.ones(3, "float32")
    optimizer.apply_gradients([(gradient, a), (gradient, b)])
    # Adam's first step moves each weight by about its learning rate.
    np.testing.assert_allclose(np.array(a), -0.1, rtol=1e-3)
    np.testing.assert_allclose(np.array(b), -0.025, rtol=1e-3)


def test_bad_train_from_lists_the_blocks() -> None:
    with pytest.raises(UserError, match="blocks: stem, block2_conv, block3_conv"):
        first_trainable_block(ROW, "block9", {})
    with pytest.raises(UserError, match="out of range"):
        first_trainable_block(ROW, -4, {})


def test_batchnorm_auto_freezes_only_over_pretrained_weights() -> None:
    from tlkit.recipes import ImageRecipe

    assert ImageRecipe(weights="imagenet").batchnorm_policy == "frozen"
    assert ImageRecipe(weights="none").batchnorm_policy == "trainable"
    assert ImageRecipe(weights="none", batchnorm="frozen").batchnorm_policy == "frozen"


def test_batchnorm_momentum_applies_to_training_batchnorm_only() -> None:
    from tlkit.recipes import ImageRecipe

    _, backbone = _model()
    prepare_stage(backbone, ROW, Stage(train_from=-1), batchnorm="trainable",
                  batchnorm_momentum=0.9)
    assert backbone.get_layer("block3_bn").momentum == 0.9
    assert backbone.get_layer("block1_bn").momentum == 0.99
    assert ImageRecipe(weights="none").batchnorm_momentum == 0.9
    assert ImageRecipe(weights="imagenet").batchnorm_momentum is None
