"""docs/errors.md, the catalogue of user errors, stays true.

Every row links a test that exists, and each error that no other test covered is checked
here the way a user meets it: one ``Error:`` line, exit code 2, nothing written. The line a
case prints must also start the way its catalogue row says. Bad inputs are made by hand in
a temporary folder; runs are folders written by hand (a recipe, the classes and a
model.keras that only the cases after the model loads need to be real, untrained).
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import assert_user_error, make_image_folder, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _load_checker() -> ModuleType:
    """benchmarks/error_catalogue.py: the catalogue's parser and its check against tlkit."""
    spec = importlib.util.spec_from_file_location(
        "error_catalogue", ROOT / "benchmarks" / "error_catalogue.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr] - dataclasses look it up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


checker = _load_checker()
CATALOGUE = checker.CATALOGUE


def catalogue_message(test_name: str) -> str:
    """The message of the row that links ``test_name`` (a test of this file, with its id)."""
    node = f"tests/{Path(__file__).name}::{test_name}"
    messages = [row["message"] for row in checker.catalogue_rows() if row["test"] == node]
    assert messages, f"no row of {CATALOGUE.name} links {node}"
    return messages[0]


def one_error_line(code: int, stdout: str, stderr: str) -> str:
    """The single ``Error:`` line of a CLI call that must fail as a user error."""
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


# ------------------------------------------------------------------ the world of bad inputs


def fake_run(folder: Path, recipe: str, classes: list[str], files: dict[str, str] | None = None
             ) -> Path:
    """A run folder written by hand: recipe.yaml, classes.json, a model.keras that is no model.

    Good enough for every mistake tlkit answers before it loads the model.
    """
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(recipe, encoding="utf-8")
    (folder / "classes.json").write_text(json.dumps(classes), encoding="utf-8")
    (folder / "model.keras").write_bytes(b"not a model")
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _image_files(root: Path) -> dict[str, Path]:
    """Image folders and CSVs, each wrong in one way."""
    images = make_image_folder(root / "images", per_class=3)
    pngs = sorted(images.rglob("*.png"))
    make_image_folder(root / "no_train" / "val", per_class=1)
    (root / "empty_train" / "train").mkdir(parents=True)
    red, green = (p for p in pngs if p.parent.name == "red"), \
        (p for p in pngs if p.parent.name == "green")
    rows = [f"{next(red)},red,train", f"{next(red)},red,train", f"{next(green)},green,val"]
    (root / "val_only.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    (root / "labels.xlsx").write_bytes(b"PK\x03\x04")
    (root / "bad_quote.csv").write_text('path,label\n"unclosed,red\n')
    (root / "purple_blue.csv").write_text(f"path,label\n{pngs[0]},purple\n{pngs[1]},blue\n")
    broken = root / "broken.png"
    broken.write_bytes(b"not an image")
    (root / "unreadable.csv").write_text(f"path,label\n{broken},red\n{broken},green\n")
    (root / "empty").mkdir()
    (root / "all_test.csv").write_text("path,label,split\n" + "".join(
        f"{p},{p.parent.name},test\n" for p in pngs))
    return {"images": images, "one_png": pngs[0], "broken_png": broken}


def _text_files(root: Path) -> None:
    """Text tables, class files and vector files, each wrong in one way."""
    rows = "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(10))
    (root / "train.csv").write_text("text,label\n" + rows)
    (root / "latin1.csv").write_bytes("text,label\ncafé crème,pos\n".encode("latin-1"))
    (root / "notxt").mkdir()
    (root / "classes").mkdir()
    (root / "classes" / "pos.txt").write_text("good\n")
    for folder in ("a", "b"):
        (root / folder).mkdir()
        (root / folder / "reviews.pos").write_text("good\n")
    (root / "vectors.txt").write_text("good 1 2 3\nbad 1 2 3\n")


def _recipe_files(root: Path) -> None:
    (root / "no_stages.yaml").write_text("stages: []\n")


def _run_folders(root: Path) -> None:
    """Finished runs written by hand, and the leftovers of unfinished ones."""
    runs = root / "runs"
    image_recipe = "kind: image\nbackbone: tiny_cnn\nweights: none\ninput_size: 32\n"
    fake_run(runs / "colours", image_recipe, ["green", "red"])
    fake_run(runs / "trained_only", image_recipe, ["green", "red"],
             {"split.csv": "path,label,split\nx.png,red,train\n"})
    fake_run(runs / "words", "kind: textcnn\n", ["neg", "pos"])
    fake_run(runs / "damaged", "kind: image\nbackbon: tiny_cnn\n", ["green", "red"])
    fake_run(runs / "bad_history", image_recipe, ["green", "red"],
             {"history.csv": 'epoch,loss\n"unclosed,1\n'})
    fake_run(runs / "empty_split", image_recipe, ["green", "red"], {"split.csv": ""})
    fake_run(runs / "no_split_column", image_recipe, ["green", "red"],
             {"split.csv": "path,label\nx.png,red\n"})
    fake_run(runs / "one_column", image_recipe, ["green", "red"], {
        "predictions.csv": "split,input,label,predicted,confidence,loss,p0\n"
                           "test,x.png,red,red,1.0,0.0,1.0\n"})
    (runs / ".cut.partial").mkdir()
    (runs / ".cut.partial" / "recipe.yaml").write_text("kind: image\n")
    (runs / ".early.partial").mkdir()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every bad input of the CLI cases, by the name a case's command uses in ``{braces}``."""
    root = tmp_path_factory.mktemp("world")
    named = _image_files(root)
    _text_files(root)
    _recipe_files(root)
    _run_folders(root)
    names = {path.name.split(".")[0]: path for path in root.iterdir()}
    return {key: str(path) for key, path in {**names, **named}.items()}


def _untrained_image_run(folder: Path, data: str) -> Path:
    from tlkit.backbones import build_backbone, get_backbone
    from tlkit.models.image import build_classifier
    from tlkit.recipes import ImageRecipe, dump_recipe

    folder.mkdir(parents=True)
    recipe = ImageRecipe(backbone="tiny_cnn", weights="none", input_size=32, data=data)
    dump_recipe(recipe, folder / "recipe.yaml")
    (folder / "classes.json").write_text(json.dumps(["green", "red"]))
    backbone = build_backbone("tiny_cnn", 32, weights=None)
    build_classifier(get_backbone("tiny_cnn"), backbone, 2).save(folder / "model.keras")
    return folder


def _untrained_text_run(folder: Path) -> Path:
    from tlkit.data.text import build_vocabulary, tokenize
    from tlkit.models.textcnn import build_string_model, build_textcnn
    from tlkit.recipes import TextCNNRecipe, dump_recipe

    folder.mkdir(parents=True)
    dump_recipe(TextCNNRecipe(data="train.csv"), folder / "recipe.yaml")
    (folder / "classes.json").write_text(json.dumps(["neg", "pos"]))
    vocabulary = build_vocabulary(tokenize(["good film", "bad film"]), "kim")
    model = build_textcnn(len(vocabulary), 2, embedding_dim=8, feature_maps=4, seed=0)
    build_string_model(model, vocabulary).save(folder / "model.keras")
    return folder


@pytest.fixture(scope="module")
def model_runs(world: dict[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, str]:
    """``world`` plus runs with real (untrained) models: built and saved, never trained."""
    root = tmp_path_factory.mktemp("model_runs")
    return {**world, "image_run": str(_untrained_image_run(root / "image", world["images"])),
            "text_run": str(_untrained_text_run(root / "text"))}


# ------------------------------------------------------------------------------- CLI cases

# (id, command with {names} of the world, words the one line holds). Training commands get
# `--out` a fresh folder, which must still not exist afterwards.
CLI_CASES = [
    ("finetune --set stages.0.lr=0", "finetune --data {images} --set stages.0.lr=0",
     ["stage 'head'", "lr must be above 0"]),
    ("finetune --set stages.0.lr_decay=2", "finetune --data {images} --set stages.0.lr_decay=2",
     ["lr_decay must be in (0, 1]"]),
    ("finetune --set stages.0.weight_decay=-1",
     "finetune --data {images} --set stages.0.weight_decay=-1", ["weight_decay must be >= 0"]),
    ("finetune --set augment.zoom=1.5", "finetune --data {images} --set augment.zoom=1.5",
     ["augment.zoom", "[0, 1)", "1.5"]),
    ("finetune --set augment.mixup=0.2 --set augment.cutmix=1",
     "finetune --data {images} --set augment.mixup=0.2 --set augment.cutmix=1",
     ["augment.mixup and augment.cutmix are alternatives"]),
    ("finetune --set augment.mixup=2", "finetune --data {images} --set augment.mixup=2",
     ["augment.mixup", "[0, 1]", "2"]),
    ("finetune --set stages.0.label_smoothing=1",
     "finetune --data {images} --set stages.0.label_smoothing=1",
     ["stage 'head'", "label_smoothing must be in [0, 1)"]),
    ("finetune --set stages.1.keep=first", "finetune --data {images} --set stages.1.keep=first",
     ["stage 'fine-tune'", "keep must be one of best, last", "'first'"]),
    ("finetune --set head_init=zeros", "finetune --data {images} --set head_init=zeros",
     ["head_init 'zeros'", "probe, random"]),
    ("finetune --set class_weight=equal", "finetune --data {images} --set class_weight=equal",
     ["class_weight 'equal'", "'balanced'"]),
    ("finetune --set val_fraction=1.5", "finetune --data {images} --set val_fraction=1.5",
     ["val_fraction", "[0, 1)"]),
    ("finetune --set val_fraction=0.6 --set test_fraction=0.5",
     "finetune --data {images} --set val_fraction=0.6 --set test_fraction=0.5",
     ["leave images to train on"]),
    ("finetune --recipe no_stages.yaml", "finetune --data {images} --recipe {no_stages}",
     ["at least one stage"]),
    ("finetune --set augment_views=0", "finetune --data {images} --set augment_views=0",
     ["augment_views must be at least 1"]),
    ("finetune --set augment=null --set augment_views=3",
     "finetune --data {images} --set augment=null --set augment_views=3",
     ["augment_views: 3 needs augmentation"]),
    ("finetune --set early_stopping=0", "finetune --data {images} --set early_stopping=0",
     ["early_stopping", "patience"]),
    ("finetune --seed -1", "finetune --data {images} --seed -1", ["seed must be >= 0"]),
    ("finetune --set stages.5.lr=0.1", "finetune --data {images} --set stages.5.lr=0.1",
     ["no list item 5"]),
    ("finetune --set stages.0=3", "finetune --data {images} --set stages.0=3",
     ["stages[0]: expected a mapping for Stage, got 3"]),
    ("finetune --set seed=[1", "finetune --data {images} --set seed=[1",
     ["override 'seed=[1'", "not plain YAML", "quote it"]),
    ("finetune --set augment=3", "finetune --data {images} --set augment=3",
     ["augment", "expected a mapping for Augment"]),
    ("finetune --set stages.0.train_from=[1]",
     "finetune --data {images} --set stages.0.train_from=[1]",
     ["train_from must be str or int or empty"]),
    ("finetune --set cv=10", "finetune --data {images} --set cv=10",
     ["unknown key 'cv' for ImageRecipe"]),
    ("finetune --set dropout=1.5", "finetune --data {images} --set dropout=1.5",
     ["dropout must be in [0, 1)", "1.5"]),
    ("textcnn train --epochs 0", "textcnn train --data {train} --epochs 0",
     ["epochs must be at least 1"]),
    ("textcnn train --batch-size 0", "textcnn train --data {train} --batch-size 0",
     ["batch_size must be at least 1"]),
    ("textcnn train --set lr=0", "textcnn train --data {train} --set lr=0",
     ["lr must be above 0"]),
    ("textcnn train --set dev_fraction=1", "textcnn train --data {train} --set dev_fraction=1",
     ["dev_fraction", "[0, 1)"]),
    ("textcnn train --set max_length=0", "textcnn train --data {train} --set max_length=0",
     ["max_length must be at least 1"]),
    ("textcnn train --set filter_widths=[0]",
     "textcnn train --data {train} --set filter_widths=[0]", ["filter_widths"]),
    ("finetune --set stages.0.lr.x=3", "finetune --data {images} --set stages.0.lr.x=3",
     ["stages.0.lr is 0.003, which has no fields"]),
    ("textcnn train --set filter_widths=[3,3]",
     "textcnn train --data {train} --set filter_widths=[3,3]", ["names a width twice"]),
    ("textcnn train --set dropout=-0.5", "textcnn train --data {train} --set dropout=-0.5",
     ["dropout must be in [0, 1)"]),
    ("textcnn train --set embedding_dim=0", "textcnn train --data {train} --set "
     "embedding_dim=0", ["embedding_dim must be at least 1"]),
    ("textcnn train --set max_norm=-1", "textcnn train --data {train} --set max_norm=-1",
     ["max_norm must be above 0", "empty"]),
    ("textcnn train --set variant=dynamic", "textcnn train --data {train} --set variant=dynamic",
     ["unknown variant 'dynamic'", "multichannel"]),
    ("textcnn train --set backbone=vgg16", "textcnn train --data {train} --set backbone=vgg16",
     ["unknown key 'backbone' for TextCNNRecipe"]),
    ("finetune --data labels.xlsx", "finetune --data {labels}", ["is not a table file"]),
    ("finetune --data bad_quote.csv", "finetune --data {bad_quote}",
     ["cannot read", "as a table"]),
    ("textcnn train --encoding nope", "textcnn train --data {latin1} --encoding nope",
     ["unknown encoding 'nope'", "latin-1"]),
    ("finetune without --data", "finetune --backbone tiny_cnn", ["no data given", "--data"]),
    ("finetune --data no_train/", "finetune --data {no_train}", ["no 'train' folder"]),
    ("finetune --data empty_train/", "finetune --data {empty_train}",
     ["train' has no class subfolders"]),
    ("finetune --data val_only.csv", "finetune --backbone tiny_cnn --weights none --data "
     "{val_only}",
     ["class 'green' appears in val/test but has no training images"]),
    ("finetune --data all_test.csv", "finetune --backbone tiny_cnn --weights none --data "
     "{all_test}", ["no image is in the train split", "split train"]),
    ("textcnn train without --data", "textcnn train", ["no data given", "--data"]),
    ("textcnn train --data notxt/", "textcnn train --data {notxt}", ["has no .txt files"]),
    ("textcnn train --data pos.txt --data classes/",
     "textcnn train --data {classes}/pos.txt --data {classes}",
     ["is a folder", "<class>.txt"]),
    ("textcnn train --data a/reviews.pos --data b/reviews.pos",
     "textcnn train --data {a}/reviews.pos --data {b}/reviews.pos",
     ["do not have distinct names"]),
    ("textcnn train --data t.csv --data t.csv", "textcnn train --data {train} --data {train}",
     ["is a table and 2 --data were given", "pass one CSV/TSV"]),
    ("textcnn train --vectors with variant rand", "textcnn train --data {train} --vectors "
     "{vectors}", ["variant 'rand'", "ignore --vectors", "--variant static"]),
    ("textcnn train --vectors missing.txt",
     "textcnn train --data {train} --variant static --vectors {train}.missing",
     ["vectors file", "does not exist"]),
    ("textcnn train --set vectors_format=xyz", "textcnn train --data {train} --variant static "
     "--vectors {vectors} --embedding-dim 3 --set vectors_format=xyz",
     ["unknown vectors format 'xyz'", "glove"]),
    ("finetune --out /proc/tlkit-runs", "finetune --data {images} --out /proc/tlkit-runs",
     ["cannot", "'/proc/tlkit-runs'", "pass another --out"]),
    ("finetune --out a-file/sub", "finetune --data {images} --out {train}/sub",
     ["cannot write run folders under", "--out"]),
    ("finetune --name of an existing run", "finetune --data {images} --out {runs} "
     "--name colours", ["exists already", "--name"]),
    ("finetune --name of an unfinished run", "finetune --data {images} --out {runs} --name cut",
     ["an unfinished run named 'cut'", "--resume", "--remove-unfinished"]),
    ("finetune --resume before the recipe was written", "finetune --resume {runs}/early",
     ["stopped before it wrote its recipe", "--remove-unfinished"]),
    ("finetune --resume of a run killed before its split", "finetune --resume {runs}/cut",
     ["stopped before it wrote its split", "--remove-unfinished"]),
    ("predict a folder that does not exist", "predict {runs}/nothing {one_png}",
     ["run folder", "does not exist", "finished run"]),
    ("predict an unfinished run by its name", "predict {runs}/cut {one_png}",
     ["an unfinished run of that name is there"]),
    ("predict a run with a damaged recipe", "predict {runs}/damaged {one_png}",
     ["recipe.yaml", "unknown key 'backbon'"]),
    ("predict a run with a damaged model.keras", "predict {runs}/colours {one_png}",
     ["model.keras' is not a .keras zip archive; it is damaged: train the run again"]),
    ("report a run with a damaged history.csv", "report {runs}/bad_history",
     ["history.csv' is damaged", "train the run again"]),
    ("report a run whose predictions lack a class", "report {runs}/one_column",
     ["1 probability columns but the run has 2 classes"]),
    ("explain an image run with --method bogus",
     "explain {runs}/colours {one_png} --method bogus",
     ["method 'bogus' does not fit an image run", "gradcam"]),
    ("explain an empty sentence", 'explain {runs}/words ""',
     ["an empty sentence has nothing to explain"]),
    ("export --format savedmodel --quantize dynamic", "export {runs}/colours --format "
     "savedmodel --quantize dynamic", ["--quantize dynamic applies to tflite and onnx"]),
    ("export a run without split.csv", "export {runs}/colours --format tflite --out {out}",
     ["has no split.csv", "train the run again"]),
    ("export a text run without predictions.csv", "export {runs}/words --format tflite --out "
     "{out}", ["has no predictions.csv"]),
    ("export a run without test or val rows", "export {runs}/trained_only --format tflite "
     "--out {out}", ["has no test or val rows"]),
    ("export a run whose split.csv is empty", "export {runs}/empty_split --format tflite "
     "--out {out}", ["split.csv' is empty"]),
    ("export a run whose split.csv has no split column", "export {runs}/no_split_column "
     "--format tflite --out {out}", ["split.csv' has no column 'split'"]),
    ("serve --max-batch 0", "serve {runs}/colours --port 0 --max-batch 0",
     ["--max-batch 0 must be at least 1"]),
    ("serve --host 192.0.2.1", "serve {runs}/colours --host 192.0.2.1 --port 0",
     ["cannot listen on 192.0.2.1:0", "--host"]),
    ("inspect conv --input-shape 0x0",
     "inspect conv --input-shape 0x0 --filters 1 --kernel 3", ["positive sides"]),
    ("inspect conv --filters 0", "inspect conv --input-shape 7x7 --filters 0 --kernel 3",
     ["filters, kernel and stride must be at least 1"]),
]

# The same, for mistakes tlkit can only see once the run's model has loaded.
MODEL_CASES = [
    ("predict a folder without images", "predict {image_run} {empty}",
     ["folder", "has no images"]),
    ("predict --input with no path column", "predict {image_run} --input {train}",
     ["has no column 'path'", "--column"]),
    ("textcnn predict --input latin1.csv", "textcnn predict {text_run} --input {latin1}",
     ["line 2", "not utf-8", "--encoding latin-1"]),
    ("evaluate --ignore-unknown on labels it never saw",
     "evaluate {image_run} --data {purple_blue} --ignore-unknown",
     ["no example of the data has a label the model knows", "--label-column"]),
    ("evaluate on images that cannot be read", "evaluate {image_run} --data {unreadable}",
     ["none of the 2 inputs could be read"]),
]


def _cli(command: str, names: dict[str, str], out: Path) -> list[str]:
    args = [arg.format(**names, out=out) for arg in shlex.split(command)]
    trains = args[0] == "finetune" or args[:2] == ["textcnn", "train"]
    if trains and "--out" not in args and "--resume" not in args:
        args += ["--out", str(out)]
    return args


def _check_case(command: str, words: list[str], names: dict[str, str], tmp_path: Path,
                request: pytest.FixtureRequest) -> None:
    out = tmp_path / "out"
    line = one_error_line(*run_cli(_cli(command, names, out)))
    for word in words:
        assert word in line, line
    assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    expected = catalogue_message(request.node.name)
    assert checker.message_fits(expected, line), f"{CATALOGUE.name}: {expected!r}; got {line!r}"


@pytest.mark.parametrize(("command", "words"), [case[1:] for case in CLI_CASES],
                         ids=[case[0] for case in CLI_CASES])
def test_cli_user_error(command: str, words: list[str], world: dict[str, str], tmp_path: Path,
                        request: pytest.FixtureRequest) -> None:
    _check_case(command, words, world, tmp_path, request)


@pytest.mark.parametrize(("command", "words"), [case[1:] for case in MODEL_CASES],
                         ids=[case[0] for case in MODEL_CASES])
def test_cli_user_error_after_the_model_loads(command: str, words: list[str],
                                              model_runs: dict[str, str], tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    _check_case(command, words, model_runs, tmp_path, request)


def test_train_from_a_layer_the_backbone_lacks_is_refused_before_any_stage_trains(
        world: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked on the built backbone, so it costs a model build, not stage 0's training."""
    monkeypatch.setenv("TLKIT_QUIET", "1")  # the scan's end line (it ran) is progress
    out = tmp_path / "out"
    line = one_error_line(*run_cli(_cli(
        "finetune --backbone tiny_cnn --weights none --data {images} --schedule two-stage "
        "--set stages.1.train_from=block9_conv --set calibration_fraction=0", world, out)))
    assert "stage 'fine-tune': train_from 'block9_conv'" in line and "blocks: stem" in line
    assert not out.exists()
    assert checker.message_fits(catalogue_message(
        "test_train_from_a_layer_the_backbone_lacks_is_refused_before_any_stage_trains"), line)


@pytest.fixture
def unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that ``os.access`` calls not writable (root may write anywhere, so say so)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path).absolute() == folder and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return folder


@pytest.mark.parametrize("command", [
    "finetune --data {images} --out {unwritable}/runs",
    "predict {runs}/colours {one_png} --output {unwritable}/p.csv",
], ids=["finetune --out read-only", "predict --output read-only"])
def test_unwritable_destinations_are_one_line(command: str, world: dict[str, str],
                                              unwritable: Path, request: pytest.FixtureRequest
                                              ) -> None:
    args = [arg.format(**world, unwritable=unwritable) for arg in shlex.split(command)]
    line = one_error_line(*run_cli(args))
    assert f"'{unwritable}'" in line and "writable" in line
    assert list(unwritable.iterdir()) == []
    assert checker.message_fits(catalogue_message(request.node.name), line)


def test_a_port_that_needs_root_is_one_line(world: dict[str, str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What binding a port below 1024 answers to a user who is not root (tests may be root)."""
    from tlkit.serve import PredictionServer

    def refuse(server: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(PredictionServer, "server_bind", refuse)
    line = one_error_line(*run_cli(["serve", f"{world['runs']}/colours", "--port", "80"]))
    assert "no permission to listen on port 80" in line and "--port 1024" in line
    assert checker.message_fits(catalogue_message("test_a_port_that_needs_root_is_one_line"),
                                line)


# ------------------------------------------------------------------- library-only mistakes


def _vocabulary(tmp_path: Path, data: dict[str, Any] | None) -> Any:
    from tlkit.data.text import Vocabulary

    path = tmp_path / "vocabulary.json"
    if data is not None:
        path.write_text(json.dumps(data), encoding="utf-8")
    return Vocabulary.load(path)


def _no_images(tmp_path: Path) -> Any:
    import pandas as pd

    from tlkit.data.images import read_image_table

    return read_image_table(pd.DataFrame({"path": [], "label": []}))


def _no_folds(tmp_path: Path) -> Any:
    from tlkit.data.text import kfold_splits

    return kfold_splits([], folds=3)


def _schedule(tmp_path: Path) -> Any:
    from tlkit.recipes import resolve_recipe

    return resolve_recipe("image", flags={"schedule": "nope"})


def _hold_out(tmp_path: Path, fraction: float, labels: list[str]) -> Any:
    from tlkit.data.tables import stratified_holdout

    return stratified_holdout(labels, fraction, seed=0)


def _call(module: str, function: str, *args: Any, **kwargs: Any) -> Any:
    """``module.function(*args, **kwargs)``, imported when the case runs."""
    return getattr(importlib.import_module(module), function)(*args, **kwargs)


def _subclassed(tmp_path: Path) -> Any:
    import keras

    class Doubler(keras.Model):
        def call(self, x: Any) -> Any:
            return 2 * x

    return _call("tlkit.inspection.table", "inspect_model", Doubler())


def _dense_only(tmp_path: Path) -> Any:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense_only")
    return _call("tlkit.explain.gradcam", "default_layer", model)


LIBRARY_CASES = {
    "Vocabulary.load of a missing file": (lambda t: _vocabulary(t, None), ["does not exist"]),
    "Vocabulary.load without the padding tokens": (lambda t: _vocabulary(
        t, {"tokens": ["a"], "tokenizer": "kim", "max_length": 3}), ["[UNK]"]),
    "Vocabulary.load with max_length 0": (lambda t: _vocabulary(
        t, {"tokens": ["", "[UNK]"], "tokenizer": "kim", "max_length": 0}),
        ["max_length 0", "at least 1"]),
    "read_image_table of an empty DataFrame": (_no_images, ["holds no images"]),
    "kfold_splits of no texts": (_no_folds, ["no texts to split into folds"]),
    "stratified_holdout of 150%": (lambda t: _hold_out(t, 1.5, ["a", "b"] * 4),
                                   ["between 0 and 1"]),
    "stratified_holdout of no labels": (lambda t: _call(
        "tlkit.data.tables", "stratified_holdout", [], 0.2, seed=0), ["of no examples"]),
    "read_text_table of no files": (lambda t: _call("tlkit.data.text", "read_text_table", []),
                                    ["no data files given"]),
    "build_vocabulary with max_length 0": (lambda t: _call(
        "tlkit.data.text", "build_vocabulary", [["a"]], "kim", max_length=0),
        ["max length must be at least 1"]),
    "build_textcnn with filter width 0": (lambda t: _call(
        "tlkit.models.textcnn", "build_textcnn", 20, 2, filter_widths=[0, 3]),
        ["filter widths must be positive"]),
    "build_textcnn with one class": (lambda t: _call(
        "tlkit.models.textcnn", "build_textcnn", 20, 1), ["at least 2 classes, got 1"]),
    "classification_metrics of label 5 of 2 classes": (lambda t: _call(
        "tlkit.evaluation.metrics", "classification_metrics", np.array([5]),
        np.full((1, 2), 0.5), ["a", "b"]), ["class ids 0..1", "5..5"]),
    "class_indices of class 5 of 2": (lambda t: _call(
        "tlkit.explain.saliency", "class_indices", np.full((1, 2), 0.5), 5),
        ["class index 5 is out of range", "2 classes"]),
    "default_layer of a model without feature maps": (_dense_only, ["no layer with a 2-D"]),
    "predictions_table of 1 input and 2 labels": (lambda t: _call(
        "tlkit.evaluation.metrics", "predictions_table", ["a.png"], [0, 1],
        np.full((2, 2), 0.5), ["x", "y"], "test"), ["1 inputs, 2 labels", "2 classes"]),
    "build_efficientnet_lite0 with a 2-D input_shape": (lambda t: _call(
        "tlkit.lite0", "build_efficientnet_lite0", input_shape=(64, 64)),
        ["input_shape must be (height, width, 3)"]),
    "build_efficientnet_lite0 of grey images with ImageNet weights": (lambda t: _call(
        "tlkit.lite0", "build_efficientnet_lite0", weights="imagenet",
        input_shape=(64, 64, 1)), ["need 3 input channels"]),
    "build_efficientnet_lite0 with an array as input_tensor": (lambda t: _call(
        "tlkit.lite0", "build_efficientnet_lite0", input_tensor=np.zeros((1, 64, 64, 3))),
        ["input_tensor must be a Keras tensor"]),
    "TextCNNRecipe with vectors_format xyz": (lambda t: _call(
        "tlkit.recipes", "TextCNNRecipe", vectors_format="xyz"), ["vectors format 'xyz'"]),
    "check_export with quantize int4": (lambda t: _call(
        "tlkit.export", "check_export", "tflite", "int4"), ["unknown quantisation 'int4'"]),
    "inspection_report with format xml": (lambda t: _call(
        "tlkit.inspection.report", "inspection_report", "tiny_cnn", fmt="xml"),
        ["unknown format 'xml'"]),
    "inspect_model of a number": (lambda t: _call(
        "tlkit.inspection.table", "inspect_model", 42), ["cannot inspect int"]),
    "inspect_model with classes and include_top": (lambda t: _call(
        "tlkit.inspection.table", "inspect_model", "tiny_cnn", include_top=True, classes=3),
        ["classes wraps a backbone name"]),
    "inspect_model of a subclassed model": (_subclassed, ["a subclassed", "functional"]),
    "resolve_recipe with schedule nope": (_schedule, ["unknown schedule 'nope'", "two-stage"]),
    "stratified_holdout of 90% of 4": (lambda t: _hold_out(t, 0.9, ["a", "b"] * 2),
                                       ["too few would be left to train on"]),
}


@pytest.mark.parametrize("name", list(LIBRARY_CASES))
def test_library_user_error(name: str, tmp_path: Path) -> None:
    call, words = LIBRARY_CASES[name]
    message = assert_user_error(lambda: call(tmp_path), *words)
    expected = catalogue_message(f"test_library_user_error[{name}]")
    assert checker.message_fits(expected, f"Error: {message}"), f"{expected!r}; got {message!r}"


# ----------------------------------------------------- what tlkit once refused and now takes


def test_evaluating_an_image_run_on_one_class_is_allowed(world: dict[str, str],
                                                         tmp_path: Path) -> None:
    """More photos of one class are something to evaluate on, not a classifier to train."""
    from tlkit.evaluate import read_labelled
    from tlkit.models.saved import load_run

    reds = make_image_folder(tmp_path / "more", per_class=2, classes=("red",))
    frame = read_labelled(load_run(f"{world['runs']}/colours", model=False), reds, {})
    assert set(frame["label"]) == {"red"}


def test_set_gpus_takes_a_number() -> None:
    """``--set gpus=7`` means what ``--gpus 7`` does, although YAML reads 7 as a number."""
    from tlkit.recipes import resolve_recipe

    assert resolve_recipe("image", overrides=["gpus=7"]).gpus == "7"


# ---------------------------------------------------------------------- the catalogue itself


@functools.cache
def _node_ids_in(path: Path) -> set[str]:
    """Test function names of a test file (top level and in classes), without collecting."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {node.name for node in ast.walk(tree)
             if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}
    # Tests made by assignment, e.g. `test_x, test_x_many = fuzz(...)`.
    names |= {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
              for item in node.targets for target in ast.walk(item)
              if isinstance(target, ast.Name) and target.id.startswith("test")}
    return names


def test_the_catalogue_has_at_least_60_rows_each_linking_a_test_that_exists() -> None:
    rows = checker.catalogue_rows()
    assert len(rows) >= 60, len(rows)
    for row in rows:
        file, _, node = row["test"].partition("::")
        assert (ROOT / file).is_file(), row["test"]
        assert node.split("[")[0] in _node_ids_in(ROOT / file), row["test"]
        assert row["code"] in ("2", "Python"), row


def test_every_case_here_has_its_row() -> None:
    linked = {row["test"] for row in checker.catalogue_rows()}
    here = f"tests/{Path(__file__).name}"
    cases = [f"test_cli_user_error[{case[0]}]" for case in CLI_CASES]
    cases += [f"test_cli_user_error_after_the_model_loads[{case[0]}]" for case in MODEL_CASES]
    cases += [f"test_library_user_error[{name}]" for name in LIBRARY_CASES]
    missing = [case for case in cases if f"{here}::{case}" not in linked]
    assert not missing, missing


@pytest.mark.slow
def test_every_linked_parametrized_id_is_collected() -> None:
    """The exact ids (``[...]``) as pytest collects them: a reader can run each row's test."""
    rows = [row["test"] for row in checker.catalogue_rows()]
    files = sorted({test.partition("::")[0] for test in rows})
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *files],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    collected = set(done.stdout.splitlines())
    missing = [test for test in rows if test not in collected]
    assert not missing, missing


def test_every_catalogue_message_is_one_that_tlkit_raises() -> None:
    """Each row's message fits a user error raised somewhere in tlkit/ (read, not run)."""
    unmatched = checker.unmatched_rows(checker.catalogue_rows(), checker.user_error_sites())
    assert not unmatched, [row["message"] for row in unmatched]


def test_the_header_counts_the_rows() -> None:
    """The count the page states is the count of its rows (it fell 68 behind once)."""
    import re

    stated = re.search(r"This page lists them: (\d+) rows", CATALOGUE.read_text())
    assert stated is not None
    assert int(stated.group(1)) == len(checker.catalogue_rows())
