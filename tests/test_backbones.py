"""The backbone table: every row builds, its block names exist, its numbers are Keras's."""

from __future__ import annotations

import pytest

from tlkit.backbones import (
    BACKBONES,
    backbone_table,
    block_of_layers,
    build_backbone,
    check_input_size,
    get_backbone,
)
from tlkit.errors import UserError


def _family(constructor: str) -> str:
    """Rows built by one constructor module (EfficientNetB0-B7, DenseNet121-201) share its
    code; only their depth arguments differ."""
    return constructor.split(":")[0] + ":" + constructor.split(":")[1].rstrip("0123456789")


# Rows over 30M parameters take seconds each to build, and so do the deeper rows of a family
# whose smallest row builds in the default run: they run with -m slow.
SMALLEST = {min((row for row in BACKBONES.values() if _family(row.constructor) == family),
                key=lambda row: row.params).name
            for family in {_family(row.constructor) for row in BACKBONES.values()}}
HEAVY = {name for name, row in BACKBONES.items()
         if row.params > 30_000_000 or name not in SMALLEST}


def _rows() -> list:
    return [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
            for name in BACKBONES]


@pytest.mark.parametrize("name", _rows())
def test_every_row_builds_with_its_blocks_and_parameter_count(name: str) -> None:
    import keras

    row = get_backbone(name)
    size = max(row.min_size, 32)
    model = build_backbone(name, input_size=size)
    layer_names = {layer.name for layer in model.layers}
    for boundary in row.blocks:
        assert boundary.removeprefix("after:") in layer_names
    if row.last_conv is not None:
        assert row.last_conv in layer_names
    assert model.count_params() == row.params
    blocks = block_of_layers(model, row)
    # Every block owns at least one layer, and blocks come in order along the graph.
    assert set(blocks.values()) == set(range(len(row.block_names)))
    keras.backend.clear_session()


def test_unknown_backbone_lists_the_choices() -> None:
    with pytest.raises(UserError, match="unknown backbone 'vgg61'; choose one of: vgg16, vgg19"):
        get_backbone("vgg61")


def test_names_are_case_and_dash_insensitive() -> None:
    assert get_backbone("EfficientNet-Lite0").name == "efficientnet_lite0"


def test_input_size_below_minimum() -> None:
    with pytest.raises(UserError, match="below inceptionv3's minimum of 75"):
        check_input_size(get_backbone("inceptionv3"), 64)
    with pytest.raises(UserError, match="minimum"):
        build_backbone("xception", input_size=32)


def test_shortcut_convolution_belongs_to_its_block() -> None:
    # ResNet's projection shortcut is created before the block's first named convolution;
    # reading the graph (not layer positions) must still put it in conv4's block.
    row = get_backbone("resnet50")
    blocks = block_of_layers(build_backbone("resnet50", input_size=32), row)
    assert blocks["conv4_block1_0_conv"] == blocks["conv4_block1_1_conv"] == 3
    assert blocks["conv3_block4_out"] == 2
    assert blocks["conv1_conv"] == 0


def test_after_boundary_starts_past_the_named_layer() -> None:
    row = get_backbone("inceptionv3")
    blocks = block_of_layers(build_backbone("inceptionv3", input_size=75), row)
    assert blocks["mixed0"] == 0
    assert blocks["mixed1"] == 1
    assert blocks["mixed10"] == len(row.blocks)


def test_table_lists_every_row() -> None:
    table = backbone_table()
    assert list(table["name"]) == list(BACKBONES)
    assert table.set_index("name").loc["efficientnet_lite0", "imagenet"] == "offline"
