"""Mistakes that need no model: one ``Error:`` line, exit code 2, nothing written, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder, run_cli

SHAPES = "datasets/shapes"

# (arguments, words the one line must hold)
FAST_ERRORS = [
    (["finetune", "--backbone", "vgg61", "--data", SHAPES], ["unknown backbone 'vgg61'"]),
    (["finetune", "--data", "no/such/folder"], ["data path 'no/such/folder' does not exist"]),
    (["finetune", "--recipe", "recipes/kim2014-cnn-rand.yaml", "--data", SHAPES],
     ["kind 'textcnn'", "tlkit textcnn train --recipe"]),
    (["textcnn", "train", "--recipe", "recipes/vgg16-two-stage.yaml"],
     ["kind 'image'", "tlkit finetune --recipe"]),
    (["finetune", "--data", SHAPES, "--epochs", "0"], ["epochs must be at least 1"]),
    (["finetune", "--data", SHAPES, "--batch-size", "0"], ["batch_size must be at least 1"]),
    (["finetune", "--data", SHAPES, "--batch-size", "-4"], ["batch_size must be at least 1"]),
    (["finetune", "--data", SHAPES, "--set", "batch_size=0"], ["batch_size must be at least 1"]),
    (["finetune", "--data", SHAPES, "--input-size", "100000"], ["above 1024", "--input-size"]),
    (["finetune", "--data", SHAPES, "--input-size", "8"], ["8"]),
    (["finetune", "--data", SHAPES, "--name", "a/b"], ["run name 'a/b'", "--name"]),
    (["finetune", "--data", SHAPES, "--name", "../x"], ["run name '../x'", "--name"]),
    (["finetune", "--data", SHAPES, "--out", "README.md"], ["is a file", "--out"]),
    (["finetune", "--data", SHAPES, "--set", "augment.flip=maybe"],
     ["flip", "true or false", "'maybe'"]),
    (["finetune", "--data", SHAPES, "--set", "stages.0.train_from=99"], ["outside", "blocks"]),
    (["finetune", "--data", SHAPES, "--set", "monitor=val_f1"], ["monitor 'val_f1'"]),
    (["finetune", "--data", SHAPES, "--weights", "no/such.h5"],
     ["weights file 'no/such.h5' does not exist"]),
]


@pytest.mark.parametrize(("args", "words"), FAST_ERRORS, ids=[" ".join(a) for a, _ in FAST_ERRORS])
def test_user_errors_are_one_line_exit_2_and_write_nothing(args: list[str], words: list[str],
                                                            tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "runs")] if "--out" not in args else []
    code, stdout, stderr = run_cli([*args, *out])
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_fast_errors_do_not_load_tensorflow() -> None:
    """Each mistake is answered before TensorFlow loads (a second, not a minute)."""
    cases = json.dumps([args for args, _ in FAST_ERRORS])
    script = (
        "import json, sys\n"
        "from tlkit.cli import main\n"
        f"for args in json.loads({cases!r}):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 2, (args, exit_.code)\n"
        "    assert 'tensorflow' not in sys.modules, args\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


# Mistakes in recipe files and data that tests make in a temporary folder: (id, arguments
# with {names} of the inputs below, words the one line must hold). Training cases use the
# tiny backbone and one epoch, so that code which misses a mistake trains briefly and fails
# the test instead of downloading weights or training for minutes.
TRAIN = ["--backbone", "tiny_cnn", "--weights", "none", "--epochs", "1"]
INPUT_ERRORS = [
    ("finetune --set val_fraction=0 --set test_fraction=0",
     ["finetune", "--data", "{images}", *TRAIN, "--set", "val_fraction=0", "--set",
      "test_fraction=0"], ["val_fraction and test_fraction are both 0", "--set test_fraction"]),
    ("finetune --data train_only --set val_fraction=0",
     ["finetune", "--data", "{train_only}", *TRAIN, "--set", "val_fraction=0"],
     ["gives only train images and val_fraction is 0", "split val or test"]),
    ("finetune --recipe stages_mapping.yaml --epochs 1",
     ["finetune", "--data", "{images}", "--recipe", "{stages_mapping}", *TRAIN],
     ["stages must be a list of stages, each a mapping", "got {'head': {'epochs': 3}}"]),
    ("finetune --recipe stages_number.yaml --epochs 1",
     ["finetune", "--data", "{images}", "--recipe", "{stages_number}", *TRAIN],
     ["stages[0] is 5, not a stage"]),
    ("finetune --recipe no_stages.yaml --epochs 1",
     ["finetune", "--data", "{images}", "--recipe", "{no_stages}", *TRAIN],
     ["a recipe needs at least one stage", "stages is empty"]),
    ("finetune --recipe empty.yaml", ["finetune", "--data", "{images}", "--recipe", "{empty}",
                                      *TRAIN], ["empty.yaml' is empty", "leave out --recipe"]),
    ("finetune --recipe comments.yaml", ["finetune", "--data", "{images}", "--recipe",
                                         "{comments}", *TRAIN], ["comments.yaml' is empty"]),
    ("finetune --recipe latin1.yaml", ["finetune", "--data", "{images}", "--recipe",
                                       "{latin1}", *TRAIN],
     ["latin1.yaml', line 2: bytes that are not UTF-8", "save the recipe as UTF-8"]),
    ("finetune --data one_image_per_class",
     ["finetune", "--data", "{one_image_per_class}", *TRAIN],
     ["stratifying needs at least 2 per class", "has 1"]),
    ("finetune --data urls.csv", ["finetune", "--data", "{urls}", *TRAIN],
     ["8 of 8 image paths", "are URLs", "'http://example.com/red/0.jpg'", "download"]),
    ("textcnn train --data one_label.csv", ["textcnn", "train", "--data", "{one_label}",
                                            "--epochs", "1"], ["single label 'pos'"]),
    ("textcnn train --data blank_texts.csv", ["textcnn", "train", "--data", "{blank_texts}",
                                              "--epochs", "1"],
     ["all 20 texts in training data are empty", "--text-column"]),
    ("textcnn train --data one_text_of_a_class.csv",
     ["textcnn", "train", "--data", "{one_text_of_a_class}", "--epochs", "1"],
     ["stratifying needs at least 2 per class and class 'rare' has 1", "dev file"]),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The inputs of INPUT_ERRORS, by name, each wrong in one way."""
    root = tmp_path_factory.mktemp("inputs")
    images = make_image_folder(root / "images", per_class=4)
    png = (images / "red" / "0.png").read_bytes()
    for i in range(200):  # many classes, one image each: no stratified split can be made
        (root / "one_image_per_class" / f"c{i}").mkdir(parents=True)
        (root / "one_image_per_class" / f"c{i}" / "0.png").write_bytes(png)
    make_image_folder(root / "train_only" / "train", per_class=2)
    recipes = {"stages_mapping": "stages:\n  head:\n    epochs: 3\n", "empty": "",
               "stages_number": "stages: [5]\n", "no_stages": "stages: []\n",
               "comments": "# to do\n\n"}
    for name, text in recipes.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "latin1.yaml").write_bytes("backbone: tiny_cnn\n# café\n".encode("latin-1"))
    (root / "urls.csv").write_text("path,label\n" + "".join(
        f"http://example.com/{c}/{i}.jpg,{c}\n" for c in ("red", "green") for i in range(4)))
    (root / "one_label.csv").write_text("text,label\n" + "good film,pos\n" * 20)
    (root / "blank_texts.csv").write_text("text,label\n" + " ,pos\n,neg\n" * 10)
    (root / "one_text_of_a_class.csv").write_text(
        "text,label\n" + "good film,pos\nbad film,neg\n" * 10 + "odd film,rare\n")
    return {path.name.split(".")[0]: str(path) for path in root.iterdir()}


def _filled(args: list[str], inputs: dict[str, str], out: Path) -> list[str]:
    return [arg.format(**inputs) for arg in args] + ["--out", str(out)]


def _catalogue_message(node: str) -> str:
    """The message of the docs/errors.md row that links ``node`` (a test of this file)."""
    from test_error_catalogue import checker

    node = f"tests/{Path(__file__).name}::{node}"
    messages = [row["message"] for row in checker.catalogue_rows() if row["test"] == node]
    assert messages, f"no row of docs/errors.md links {node}"
    return messages[0]


@pytest.mark.parametrize(("args", "words"), [case[1:] for case in INPUT_ERRORS],
                         ids=[case[0] for case in INPUT_ERRORS])
def test_recipe_and_data_mistakes_are_one_line_exit_2_and_write_nothing(
        args: list[str], words: list[str], inputs: dict[str, str], tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    from test_error_catalogue import checker

    code, stdout, stderr = run_cli(_filled(args, inputs, tmp_path / "runs"))
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()
    expected = _catalogue_message(request.node.name)
    assert checker.message_fits(expected, lines[0]), f"docs/errors.md: {expected!r}"


def test_recipe_and_data_mistakes_do_not_load_tensorflow(inputs: dict[str, str],
                                                         tmp_path: Path) -> None:
    """Each is answered before TensorFlow loads: not after the image scan or tokenising."""
    cases = json.dumps([_filled(args, inputs, tmp_path / "runs") for _, args, _ in INPUT_ERRORS])
    script = (
        "import json, sys\n"
        "from tlkit.cli import main\n"
        f"for args in json.loads({cases!r}):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit_:\n"
        "        assert exit_.code == 2, (args, exit_.code)\n"
        "    assert 'tensorflow' not in sys.modules, args\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
