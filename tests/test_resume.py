"""A killed run continues where it stopped and ends with the numbers of an uninterrupted run.

Each resumed process must start at the epoch its folder's backup names (a resume that
restarted from epoch 0 would end with the same numbers: training is deterministic). The
kill points are drawn from ``TLKIT_RESUME_SEED`` (random when unset); every assertion
message names the seed, so a failure reruns with the same kill points.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder, run_cli

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("TLKIT_RESUME_SEED") or random.SystemRandom().randrange(10**6))
RERUN = f"kill points drawn with TLKIT_RESUME_SEED={SEED}: set it to rerun them"


def _tlkit(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "tlkit", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epochs_logged(partial: Path) -> int:
    log = partial / "history.csv"
    return max(len(log.read_text().splitlines()) - 1, 0) if log.is_file() else 0


def _kill_after(process: subprocess.Popen, partial: Path, epochs: int, sig: int) -> str:
    """Send ``sig`` once ``epochs`` epochs are logged (or fail if the run ends first);
    return what the process printed."""
    deadline = time.monotonic() + 240
    while _epochs_logged(partial) < epochs:
        assert process.poll() is None, f"{RERUN}\n{process.stdout.read()}"
        assert time.monotonic() < deadline, f"the run did not reach the kill point; {RERUN}"
        time.sleep(0.05)
    process.send_signal(sig)
    out, _ = process.communicate(timeout=120)
    return out


def _finished(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, f"{RERUN}\n{out}"
    return out


def _resume_point(folder: Path, stages: int) -> int | None:
    """The epoch a resume of ``folder`` must start at; None once all its stages are done.

    Read from the files as ``tlkit.train.checkpoints`` documents them, not with its code:
    a fault there would otherwise move the expectation with the resume.
    """
    progress_file = folder / "progress.json"
    progress = (json.loads(progress_file.read_text()) if progress_file.is_file()
                else {"stages_done": 0, "epoch": 0})
    if progress["stages_done"] == stages:
        return None
    latest = folder / "backup" / "latest"
    if latest.is_file():
        state = json.loads((latest.parent / latest.read_text().strip() / "state.json")
                           .read_text())
        if state["stage_index"] == progress["stages_done"]:
            return int(state["epoch"])
    return int(progress["epoch"])


def _first_epoch_run(output: str) -> int | None:
    """The first epoch (from 0) a process trained, read from Keras's ``Epoch N/M`` lines."""
    found = re.search(r"^Epoch (\d+)/\d+$", output, re.MULTILINE)
    return int(found.group(1)) - 1 if found else None


def _resumed_at(output: str, expected: int | None) -> None:
    """The resumed process's first epoch is the one its folder's backup names."""
    assert _first_epoch_run(output) == expected, (
        f"the resumed process started at epoch {_first_epoch_run(output)}, its folder says "
        f"{expected}; {RERUN}\n{output}")


def _numbers(folder: Path) -> tuple[pd.DataFrame, dict]:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("train_seconds", None)
    metrics.pop("phases", None)  # wall times
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
    # epochs logged at each kill; from 2, so the first resume has a backup to start from
    first, second = sorted(random.Random(SEED).sample(range(2, 8), 2))
    print(f"kills after {first} and {second} epochs; {RERUN}")
    partial = runs / ".cut.partial"
    _kill_after(_tlkit([*common, "--name", "cut"]), partial, first, signal.SIGKILL)
    code, out, err = run_cli(["runs", str(runs)])
    assert code == 0 and "unfinished" in out and "cut" in out
    code, _, err = run_cli([*common, "--name", "cut"])
    assert code == 2 and "--resume" in err  # a new run of that name says what is there
    expected = _resume_point(partial, stages=2)
    assert expected and expected >= first - 1, f"{expected} after {first} epochs; {RERUN}"
    output = _kill_after(_tlkit(["finetune", "--resume", str(runs / "cut")]), partial, second,
                         signal.SIGTERM)
    _resumed_at(output, expected)
    assert partial.is_dir(), RERUN  # SIGTERM keeps the folder, like Ctrl-C
    expected = _resume_point(partial, stages=2)
    _resumed_at(_finished(_tlkit(["finetune", "--resume", str(runs / "cut")])), expected)
    assert not partial.exists(), RERUN
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
    rng = random.Random(SEED)
    first, second = rng.choice([2, 3]), rng.choice([2, 3])  # epochs of fold 0, then fold 1
    folds = [runs / ".cut.partial" / "folds" / str(k) for k in (0, 1)]
    _kill_after(_tlkit([*common, "--name", "cut"]), folds[0], first, signal.SIGKILL)
    expected = _fold_resume_point(runs / ".cut.partial")
    output = _kill_after(_tlkit(["textcnn", "train", "--resume", str(runs / "cut")]), folds[1],
                         second, signal.SIGTERM)
    _resumed_at(output, expected)
    expected = _fold_resume_point(runs / ".cut.partial")
    _resumed_at(_finished(_tlkit(["textcnn", "train", "--resume", str(runs / "cut")])),
                expected)
    _compare(runs / "whole", runs / "cut")
    pd.testing.assert_frame_equal(pd.read_csv(runs / "whole" / "folds.csv").drop(
        columns="seconds"), pd.read_csv(runs / "cut" / "folds.csv").drop(columns="seconds"))


def _fold_resume_point(partial: Path) -> int:
    """Where a resumed cross-validation trains first: its last fold's resume point (0: the
    next fold's first epoch, once that fold is finished)."""
    last = max(partial.glob("folds/*"), key=lambda folder: int(folder.name))
    return _resume_point(last, stages=1) or 0


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
