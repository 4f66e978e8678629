"""Mistakes that need no model: one ``Error:`` line, exit code 2, nothing written, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

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
