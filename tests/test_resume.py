"""A killed run continues where it stopped and ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder, run_cli

ROOT = Path(__file__).resolve().parents[1]


def _tlkit(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "tlkit", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epochs_logged(partial: Path) -> int:
    log = partial / "history.csv"
    return max(len(log.read_text().splitlines()) - 1, 0) if log.is_file() else 0


def _kill_after(process: subprocess.Popen, partial: Path, epochs: int, sig: int) -> None:
    """Send ``sig`` once ``epochs`` epochs are logged (or fail if the run ends first)."""
    deadline = time.monotonic() + 240
    while _epochs_logged(partial) < epochs:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the run did not reach the kill point"
        time.sleep(0.05)
    process.send_signal(sig)
    process.wait(timeout=120)


def _finished(process: subprocess.Popen) -> None:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out


def _numbers(folder: Path) -> tuple[pd.DataFrame, dict]:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("train_seconds", None)
    metrics.get("probe", {}).pop("fit_seconds", None)
    if "cv" in metrics:
        metrics.pop("train_seconds", None)
    return pd.read_csv(folder / "history.csv"), metrics


def _compare(whole: Path, resumed: Path) -> None:
    history, metrics = _numbers(whole)
    history_b, metrics_b = _numbers(resumed)
    pd.testing.assert_frame_equal(history, history_b, check_exact=True)
    assert metrics == metrics_b


def test_image_run_killed_twice_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "img", per_class=8, classes=("red", "green", "blue"))
    runs = tmp_path / "runs"
    common = ["finetune", "--backbone", "tiny_cnn", "--weights", "none", "--data", str(data),
              "--input-size", "32", "--batch-size", "4", "--out", str(runs),
              "--schedule", "two-stage", "--set", "early_stopping=",
              "--set", "stages.0.epochs=4",
              "--set", "stages.1.epochs=4", "--set", "stages.1.train_from=all"]
    _finished(_tlkit([*common, "--name", "whole"]))
    rng = random.Random()
    first, second = sorted(rng.sample(range(1, 8), 2))  # epochs logged at each kill
    print(f"kills after {first} and {second} epochs")
    partial = runs / ".cut.partial"
    _kill_after(_tlkit([*common, "--name", "cut"]), partial, first, signal.SIGKILL)
    code, out, err = run_cli(["runs", str(runs)])
    assert code == 0 and "unfinished" in out and "cut" in out
    code, _, err = run_cli([*common, "--name", "cut"])
    assert code == 2 and "--resume" in err  # a new run of that name says what is there
    _kill_after(_tlkit(["finetune", "--resume", str(runs / "cut")]), partial, second,
                signal.SIGTERM)
    assert partial.is_dir()  # SIGTERM keeps the folder, like Ctrl-C
    _finished(_tlkit(["finetune", "--resume", str(runs / "cut")]))
    assert not partial.exists()
    _compare(runs / "whole", runs / "cut")


@pytest.mark.slow
def test_text_cross_validation_killed_twice_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    words = ["good", "great", "bad", "awful", "plot", "film", "the", "a"]
    rows = [{"text": f"{words[i % 8]} {words[(i * 3) % 8]} {words[(i * 5) % 8]}",
             "label": "pos" if i % 8 < 2 or (i * 3) % 8 < 2 else "neg"} for i in range(90)]
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    runs = tmp_path / "runs"
    common = ["textcnn", "train", "--data", str(tmp_path / "all.csv"), "--cv", "3",
              "--epochs", "4", "--embedding-dim", "8", "--set", "feature_maps=4",
              "--batch-size", "10", "--out", str(runs)]
    _finished(_tlkit([*common, "--name", "whole"]))
    first, second = sorted(random.Random().sample(range(1, 4), 2))
    folds = [runs / ".cut.partial" / "folds" / str(k) for k in (0, 1)]
    _kill_after(_tlkit([*common, "--name", "cut"]), folds[0], first, signal.SIGKILL)
    _kill_after(_tlkit(["textcnn", "train", "--resume", str(runs / "cut")]), folds[1], second,
                signal.SIGTERM)
    _finished(_tlkit(["textcnn", "train", "--resume", str(runs / "cut")]))
    _compare(runs / "whole", runs / "cut")
    pd.testing.assert_frame_equal(pd.read_csv(runs / "whole" / "folds.csv").drop(
        columns="seconds"), pd.read_csv(runs / "cut" / "folds.csv").drop(columns="seconds"))


def test_resume_errors_are_one_line(tmp_path: Path) -> None:
    code, _, err = run_cli(["finetune", "--resume", str(tmp_path / "nothing")])
    assert code == 2 and "no unfinished run 'nothing'" in err
    (tmp_path / ".half.partial").mkdir()
    (tmp_path / ".half.partial" / "recipe.yaml").write_text("kind: textcnn\n")
    code, _, err = run_cli(["finetune", "--resume", str(tmp_path / "half")])
    assert code == 2 and "tlkit textcnn train --resume" in err
    code, _, err = run_cli(["finetune", "--resume", str(tmp_path / "half"), "--epochs", "3"])
    assert code == 2 and "leave out the other options" in err
    code, out, _ = run_cli(["runs", str(tmp_path), "--remove-unfinished"])
    assert code == 0 and not (tmp_path / ".half.partial").exists()
