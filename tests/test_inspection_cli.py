"""``tlkit inspect`` through the real entry point: formats, plans, conv arithmetic, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tlkit.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``tlkit inspect ARGS``; return the exit code, stdout and stderr."""
    code = 0
    try:
        main(["inspect", *args])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_table_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--input-size", "64")
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["name", "type", "output", "params"]
    assert "block3_relu" in out and "16x16x32" in out
    assert "parameters        6,200" in out
    assert "training memory" in out


def test_csv_to_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--format", "csv", "--out", str(tmp_path / "t.csv"))
    assert code == 0 and "wrote" in out
    table = pd.read_csv(tmp_path / "t.csv", index_col="name")
    assert table.loc["block3_conv", "output_shape"] == "8x8x32"
    assert table["params"].sum() == 6_200


def test_json_and_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--format", "json", "--plan", "--memory", "1GB")
    document = json.loads(out)
    assert code == 0
    assert document["totals"]["params"] == 6_200
    assert document["layers"][1]["rf"] == [3, 3]
    assert [plan["stage"] for plan in document["plans"]] == ["head", "full"]
    code, out, _ = run(capsys, "tiny_cnn", "--format", "markdown")
    assert out.startswith("| name | type | output |")


def test_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--plan", "--memory", "512MiB", "--stage", "full",
                       "--optimizer", "sgd")
    assert code == 0
    assert "batch plan for 536.87 MB (tiny_cnn_classifier, sgd)" in out
    assert "largest batch" in out and "  full " in out and "  head " not in out


def test_run_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tlkit.backbones import build_backbone, get_backbone
    from tlkit.models.image import build_classifier

    row = get_backbone("tiny_cnn")
    build_classifier(row, build_backbone("tiny_cnn", 32), num_classes=2).save(
        tmp_path / "model.keras")
    code, out, _ = run(capsys, str(tmp_path))
    assert code == 0
    assert "tiny_cnn/block1_conv" in out and "head/predictions" in out


def test_conv_arithmetic(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "conv", "--input", "32x32x3", "--filters", "10", "--kernel", "5",
                       "--stride", "1", "--pad", "2")
    assert code == 0
    assert "(32 - 5 + 2*2) / 1 + 1 = 32 -> 32x32x10" in out
    assert "= 760 (750 weights + 10 biases)" in out


@pytest.mark.parametrize(("args", "message"), [
    (["conv", "--input", "7x7", "--filters", "1", "--kernel", "3", "--stride", "3"],
     "stride 3 does not fit"),
    (["conv", "--input", "7 by 7", "--filters", "1", "--kernel", "3"], "cannot read input shape"),
    (["conv", "--filters", "1"], "needs --input"),
    (["tiny_cnn", "--filters", "3"], "--filters belongs to `tlkit inspect conv`"),
    (["vgg61"], "unknown backbone 'vgg61'"),
    (["vgg16", "--input-size", "8"], "below vgg16's minimum"),
    (["tiny_cnn", "--plan"], "--plan needs --memory"),
    (["tiny_cnn", "--plan", "--memory", "lots"], "cannot read memory size 'lots'"),
])
def test_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                                        message: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_neither_run_folder_nor_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and "folder without model.keras" in err


def test_choices_match_the_library() -> None:
    from tlkit.cli.inspect import inspect
    from tlkit.inspection.memory import DTYPE_BYTES, OPTIMIZER_SLOTS
    from tlkit.inspection.report import FORMATS

    choices = {param.name: list(param.type.choices) for param in inspect.params
               if hasattr(param.type, "choices")}
    assert choices["dtype"] == list(DTYPE_BYTES)
    assert choices["optimizer"] == list(OPTIMIZER_SLOTS)
    assert choices["fmt"] == list(FORMATS)
