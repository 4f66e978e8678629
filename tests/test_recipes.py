"""Recipes: YAML round trips, overrides, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_user_error

from tlkit.errors import UserError
from tlkit.recipes import (
    SCHEDULES,
    ImageRecipe,
    Stage,
    TextCNNRecipe,
    apply_overrides,
    build_recipe,
    dump_recipe,
    load_recipe,
    load_recipe_text,
)

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_recipes_folder_has_the_promised_files() -> None:
    names = {path.name for path in RECIPES}
    assert {"vgg16-two-stage.yaml", "resnet50-gradual-unfreezing.yaml",
            "mobilenetv2-feature-extraction.yaml", "efficientnet_lite0-two-stage.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_and_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    assert load_recipe_text(dump_recipe(recipe)) == recipe


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_round_trips(schedule: str) -> None:
    recipe = ImageRecipe(backbone="vgg16", data="x", stages=SCHEDULES[schedule]())
    assert load_recipe_text(dump_recipe(recipe)) == recipe


def test_dump_writes_a_file_that_loads_back(tmp_path: Path) -> None:
    recipe = ImageRecipe(backbone="resnet50", stages=[Stage(train_from=3, lr=2e-5)])
    dump_recipe(recipe, tmp_path / "r.yaml")
    assert load_recipe(tmp_path / "r.yaml") == recipe


def test_overrides_win_over_file_values_and_convert_types() -> None:
    recipe = load_recipe_text("backbone: vgg16\nbatch_size: 8\n",
                              ["batch_size=16", "stages.0.lr=1e-5", "augment.flip=false"])
    assert recipe.batch_size == 16
    assert recipe.stages[0].lr == pytest.approx(1e-5)
    assert recipe.augment.flip is False


def test_apply_overrides_returns_a_checked_copy() -> None:
    recipe = ImageRecipe()
    changed = apply_overrides(recipe, ["stages.0.train_from=block5_conv1", "augment="])
    assert changed.stages[0].train_from == "block5_conv1"
    assert changed.augment is None
    assert recipe.stages[0].train_from is None


def test_exponent_written_without_a_dot_is_still_a_float() -> None:
    # YAML 1.1 reads 1e-4 as a string; a learning rate must still load as a float.
    assert load_recipe_text("stages:\n- lr: 1e-4\n").stages[0].lr == pytest.approx(1e-4)


@pytest.mark.parametrize(("text", "words"), [
    ("backbon: vgg16\n", "unknown key 'backbon'"),
    ("batch_size: many\n", "batch_size must be int"),
    ("stages:\n- epochs: 2\n  learning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("stages: 3\n", "must be a list"),
    ("augment: [1]\n", "augment"),
    ("batchnorm: sometimes\n", "batchnorm 'sometimes'"),
    ("stages:\n- optimizer: lbfgs\n", "optimizer 'lbfgs'"),
    ("kind: audio\n", "unknown kind 'audio'"),
    ("- just\n- a list\n", "mapping"),
    ("backbone: [unclosed\n", "not valid YAML"),
])
def test_bad_recipe_text_is_a_clear_error(text: str, words: str) -> None:
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        load_recipe_text(text)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_bad_override_syntax() -> None:
    with pytest.raises(UserError, match="key=value"):
        load_recipe_text("", ["batch_size"])


def test_recipes_are_checked_on_construction_and_assignment() -> None:
    from tlkit.recipes import TextCNNRecipe

    with pytest.raises(UserError, match="batch_size must be int"):
        ImageRecipe(batch_size="16")
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        ImageRecipe(batch_size=0)
    recipe = ImageRecipe()
    with pytest.raises(UserError, match="epochs must be int"):
        recipe.stages[0].epochs = "1"
    with pytest.raises(UserError, match="epochs must be at least 1"):
        recipe.stages[0].epochs = 0
    with pytest.raises(UserError, match="unknown backbone"):
        recipe.backbone = "vgg61"
    recipe.stages[0].epochs = 7
    assert recipe.stages[0].epochs == 7
    with pytest.raises(UserError, match="unknown tokenizer"):
        TextCNNRecipe(tokenizer="spacy")


def test_monitor_defaults_text_keeps_best_dev_accuracy() -> None:
    from tlkit.recipes import TextCNNRecipe

    assert TextCNNRecipe().monitor == "val_accuracy"
    assert ImageRecipe().monitor == "val_loss"
    for variant in ("rand", "static", "non-static", "multichannel"):
        assert load_recipe(f"recipes/kim2014-cnn-{variant}.yaml").monitor == "val_accuracy"
    with pytest.raises(UserError, match="monitor 'accuracy'"):
        ImageRecipe(monitor="accuracy")


def test_resolve_recipe_merges_file_then_flags_then_set(tmp_path: Path) -> None:
    from tlkit.recipes import resolve_recipe

    file = tmp_path / "r.yaml"
    file.write_text("kind: image\nbackbone: vgg16\nbatch_size: 8\nseed: 3\n")
    recipe = resolve_recipe("image", file, {"batch_size": 16, "seed": None, "epochs": 2},
                            ["seed=5"])
    assert (recipe.backbone, recipe.batch_size, recipe.seed) == ("vgg16", 16, 5)
    # the default, LP-FT: the head, then the whole backbone; --epochs sets both
    assert [(stage.name, stage.epochs) for stage in recipe.stages] == [("head", 2),
                                                                       ("fine-tune", 2)]
    schedule = resolve_recipe("image", None, {"schedule": "feature-extraction"})
    assert [stage.name for stage in schedule.stages] == ["head"]
    with pytest.raises(UserError, match="kind 'image', not 'textcnn'"):
        resolve_recipe("textcnn", file)


@pytest.mark.parametrize(("text", "words"), [
    ("stages:\n  head:\n    epochs: 3\n", "stages must be a list of stages, each a mapping"),
    ("stages: [5]\n", "stages[0] is 5, not a stage"),
    ("stages:\n", "stages must be a list of stages"),
    ("stages: []\n", "a recipe needs at least one stage; stages is empty"),
], ids=["mapping", "number", "null", "empty list"])
@pytest.mark.parametrize("epochs", [None, 2], ids=["", "epochs"])
def test_stages_of_the_wrong_shape_are_one_line_with_or_without_epochs(
        tmp_path: Path, text: str, words: str, epochs: int | None) -> None:
    """--epochs rewrites each stage: a mapping or a number there was a TypeError, and an
    empty list trained the default schedule."""
    from tlkit.recipes import resolve_recipe

    file = tmp_path / "r.yaml"
    file.write_text(text)
    assert_user_error(lambda: resolve_recipe("image", file, {"epochs": epochs}), words)


@pytest.mark.parametrize("text", ["", "\n\n", "# backbone: vgg16\n"],
                         ids=["empty", "blank lines", "comments"])
def test_an_empty_recipe_file_is_refused(tmp_path: Path, text: str) -> None:
    from tlkit.recipes import resolve_recipe

    file = tmp_path / "mine.yaml"
    file.write_text(text)
    assert_user_error(lambda: load_recipe(file), "recipe '", "mine.yaml' is empty",
                      "leave out --recipe")
    assert_user_error(lambda: resolve_recipe("image", file, {"epochs": 1}), "is empty")


def test_a_recipe_saved_as_utf_16_loads_and_other_bytes_are_one_line(tmp_path: Path) -> None:
    """Both were a UnicodeDecodeError traceback."""
    file = tmp_path / "r.yaml"
    for codec in ("utf-16", "utf-8-sig"):
        file.write_bytes("backbone: vgg16\nbatch_size: 8 # café\n".encode(codec))
        assert load_recipe(file).batch_size == 8
    file.write_bytes("backbone: vgg16\n# caf\xe9\n".encode("latin-1"))
    assert_user_error(lambda: load_recipe(file), "r.yaml', line 2: bytes that are not UTF-8",
                      "save the recipe as UTF-8")


def test_an_item_of_a_default_list_can_be_set() -> None:
    recipe = build_recipe(TextCNNRecipe, {}, ["filter_widths.0=2"])
    assert recipe.filter_widths == [2, 4, 5]  # the other widths stay the paper's
    assert_user_error(lambda: build_recipe(TextCNNRecipe, {}, ["filter_widths.3=6"]),
                      "no list item 3")


def test_a_dotted_override_into_a_plain_value_is_one_line() -> None:
    assert_user_error(lambda: apply_overrides(ImageRecipe(), ["batch_size.x=1"]),
                      "batch_size is 32, which has no fields", "--set batch_size=")
    assert_user_error(lambda: build_recipe(TextCNNRecipe, {}, ["filter_widths.0.x=3"]),
                      "filter_widths.0 is 3")
    # An empty section takes fields: augmentation off, then one of its settings.
    recipe = build_recipe(ImageRecipe, {"augment": None}, ["augment.zoom=0.2"])
    assert recipe.augment is not None and recipe.augment.zoom == 0.2


@pytest.mark.parametrize("command", ["finetune", "lr-find"])
def test_help_names_the_schedule_the_default_recipe_trains(command: str) -> None:
    from click.testing import CliRunner

    from tlkit.cli import cli
    from tlkit.recipes import SCHEDULES, ImageRecipe, default_schedule

    assert SCHEDULES[default_schedule()]() == ImageRecipe().stages
    shown = " ".join(CliRunner().invoke(cli, [command, "--help"]).output.split())
    assert f"[default: (recipe: {default_schedule()})]" in shown
