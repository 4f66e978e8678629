"""``tlkit inspect`` through the real entry point: formats, plans, conv arithmetic, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
from conftest import run_cli


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``tlkit inspect ARGS``: the exit code, stdout and stderr."""
    return run_cli(["inspect", *args], capsys)


def test_table_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--input-size", "64")
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["name", "type", "output", "params"]
    assert "block3_relu" in out and "16x16x32" in out
    assert "parameters        6,200" in out
    assert "training memory" in out and "(adam, BatchNorm frozen)" in out


def test_model_is_the_default_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    # Compared after the table: Keras numbers the input layer's name differently each time.
    explicit, short = run(capsys, "model", "tiny_cnn"), run(capsys, "tiny_cnn")
    assert explicit[0] == short[0] == 0
    assert explicit[1].split("\n\n")[1] == short[1].split("\n\n")[1]


def test_csv_to_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--format", "csv", "--output",
                       str(tmp_path / "t.csv"))
    assert code == 0 and "wrote" in out
    table = pd.read_csv(tmp_path / "t.csv", index_col="name")
    assert table.loc["block3_conv", "output_shape"] == "8x8x32"
    assert table["params"].sum() == 6_200


def test_json_and_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--format", "json", "--plan", "--memory", "3GB")
    document = json.loads(out)
    assert code == 0
    assert document["totals"]["params"] == 6_200
    assert document["layers"][1]["rf"] == [3, 3]
    assert [plan["stage"] for plan in document["plans"]] == ["head", "full"]
    assert all(plan["estimate_bytes"] <= plan["budget_bytes"] for plan in document["plans"])
    code, out, _ = run(capsys, "tiny_cnn", "--format", "markdown")
    assert out.startswith("| name | type | output |")


def test_plan(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--plan", "--memory", "2GiB", "--stage", "full",
                       "--optimizer", "sgd")
    assert code == 0
    assert "batch plan for 2.15 GB (tiny_cnn_classifier, sgd, BatchNorm frozen" in out
    assert "largest batch" in out and "  full " in out and "  head " not in out


@pytest.mark.parametrize(("args", "policy"), [
    ([], "frozen"), (["--weights", "none"], "trainable"),
    (["--weights", "none", "--batchnorm", "frozen"], "frozen"),
    (["--batchnorm", "trainable"], "trainable"),
])
def test_plan_follows_the_batchnorm_policy_of_finetune(
        capsys: pytest.CaptureFixture[str], args: list[str], policy: str) -> None:
    code, out, _ = run(capsys, "tiny_cnn", "--format", "json", "--memory", "3GB", *args)
    assert code == 0
    assert {plan["batchnorm"] for plan in json.loads(out)["plans"]} == {policy}


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
    code, out, _ = run(capsys, "conv", "--input-shape", "32x32x3", "--filters", "10",
                       "--kernel", "5", "--pad", "2")
    assert code == 0
    assert "(32 - 5 + 2*2) / 1 + 1 = 32 -> 32x32x10" in out
    assert "= 760 (750 weights + 10 biases)" in out


def test_each_command_helps_with_its_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    _, group, _ = run(capsys, "--help")
    _, conv, _ = run(capsys, "conv", "--help")
    _, model, _ = run(capsys, "vgg16", "--help")
    assert "TARGET [OPTIONS] | conv [OPTIONS]" in group and "conv" in group
    assert "--input-shape" in conv and "--plan" not in conv and "--input-size" not in conv
    assert "--plan" in model and "--input-shape" not in model
    assert "[default: adam]" in model and "[default: auto]" in model


@pytest.mark.parametrize(("args", "message"), [
    (["conv", "--input-shape", "7x7", "--filters", "1", "--kernel", "3", "--stride", "3"],
     "stride 3 does not fit"),
    (["conv", "--input-shape", "7 by 7", "--filters", "1", "--kernel", "3"],
     "cannot read input shape"),
    (["conv", "--filters", "1", "--kernel", "3"], "Missing option '--input-shape'"),
    (["tiny_cnn", "--filters", "3"], "No such option '--filters'"),
    (["vgg61"], "unknown backbone 'vgg61'"),
    (["vgg16", "--input-size", "8"], "below vgg16's minimum"),
    (["tiny_cnn", "--plan"], "--plan needs --memory"),
    (["tiny_cnn", "--plan", "--memory", "lots"], "cannot read memory size 'lots'"),
    (["tiny_cnn", "--optimizer", "lion"], "'lion' is not one of"),
])
def test_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str],
                       message: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err


def test_neither_run_folder_nor_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and "folder without model.keras" in err


def test_help_and_errors_that_need_no_model_load_neither_tensorflow_nor_pandas() -> None:
    script = """
import sys
from tlkit.cli import main
for args in (["--help"], ["conv", "--help"], ["vgg16", "--help"], ["vgg61"],
             ["vgg16", "--input-size", "8"], ["vgg16", "--memory", "lots"],
             ["conv", "--input-shape", "7 by 7", "--filters", "1", "--kernel", "3"]):
    try:
        main(["inspect", *args])
    except SystemExit:
        pass
heavy = {"tensorflow", "keras", "pandas"} & set(sys.modules)
assert not heavy, f"imported {heavy}"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "unknown backbone 'vgg61'" in done.stderr
    assert "below vgg16's minimum" in done.stderr
    assert "cannot read memory size 'lots'" in done.stderr
    assert "cannot read input shape" in done.stderr


def test_every_option_has_help_and_shows_its_default() -> None:
    from tlkit.cli.inspect import inspect

    for command in inspect.commands.values():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            assert param.help, f"{command.name} {param.opts[0]} has no help"
            if param.to_info_dict()["default"] is not None and not param.is_flag:
                assert param.show_default, f"{command.name} {param.opts[0]} hides its default"


def test_choices_match_the_library() -> None:
    from tlkit.cli.inspect import inspect
    from tlkit.inspection.memory import DTYPE_BYTES
    from tlkit.inspection.report import FORMATS
    from tlkit.optimizers import OPTIMIZERS
    from tlkit.recipes import BATCHNORM_POLICIES

    choices = {param.name: list(param.type.choices) for param in inspect.commands["model"].params
               if hasattr(param.type, "choices")}
    assert choices["dtype"] == list(DTYPE_BYTES)
    assert choices["optimizer"] == list(OPTIMIZERS)
    assert choices["fmt"] == list(FORMATS)
    assert choices["batchnorm"] == list(BATCHNORM_POLICIES)
