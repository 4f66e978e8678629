"""Files a user asks for (predictions, reports, explanations, exports, inspections, datasets)
survive a full disk and Ctrl-C whole; stdout carries only the table; HEIC and broken images
are skipped with a warning.

Full disks are small tmpfs mounts (skipped where mounting needs a root this test has not),
filled by the test; each check compares the sha256 of every file there before and after.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import io
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    assert_user_error,
    make_image_folder,
    mounted_tmpfs,
    run_cli,
    write_image,
)
from test_report import make_run

# Files a run folder needs to predict, evaluate, explain, report and export.
RUN_FILES = ("model.keras", "recipe.yaml", "classes.json", "metrics.json", "history.csv",
             "split.csv", "predictions.csv")
REPORT_FILES = ("report.html", "report.md", "report.json")
# The module (``tlkit.predict`` is the function of that name).
PREDICT = importlib.import_module("tlkit.predict")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tlkit.recipes import ImageRecipe, Stage
    from tlkit.train.image import finetune

    root = tmp_path_factory.mktemp("user_files")
    data = make_image_folder(root / "img", per_class=6, classes=("red", "green", "blue"))
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=8, early_stopping=None, augment=None,
                         stages=[Stage(epochs=2, lr=0.03, train_from="all")])
    return finetune(recipe, out=root / "runs", name="colours").path


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs: once ``fill`` ran, every write there fails with ENOSPC."""
    with mounted_tmpfs(tmp_path / "disk", "16m") as mount:
        yield mount


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as handle:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while handle.write(b"\0" * chunk):
                    pass
            except OSError as error:
                assert error.errno == errno.ENOSPC


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden ones too), the filler left out."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "filler"}


def one_line(code: int, stdout: str, stderr: str) -> str:
    """The one ``Error:`` line, last on stderr; what precedes it may only be progress lines
    of the phase that was running (``name: ...``), never a traceback."""
    assert code == 2, stdout + stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), stderr
    assert all(not line.startswith(("Error", "Traceback", " ")) and ": " in line
               for line in lines[:-1]), stderr
    return lines[-1]


@pytest.fixture
def run_on_disk(image_run: Path, disk: Path) -> Path:
    run = disk / "run"
    run.mkdir()
    for name in RUN_FILES:
        shutil.copy(image_run / name, run / name)
    return run


# Per command: its arguments, and the previous version of what it writes (smaller than the
# new one, so that writing over it in place needs room the disk does not have).
COMMANDS = {
    "predict --output": (["predict", "{run}", "{images}", "--output", "{disk}/p.csv"],
                         {"p.csv": "input,label_1,prob_1,error\nold.png,red,0.9,\n"}),
    "evaluate": (["evaluate", "{run}", "--data", "{images}", "--name", "more"],
                 {"run/reports/more/predictions.csv": "input,label\nold.png,red\n",
                  "run/reports/more/report.html": "<p>one example</p>"}),
    "report": (["report", "{run}"], {f"run/{name}": "previous" for name in REPORT_FILES}),
    "explain --out": (["explain", "{run}", "{images}/red/0.png", "--out", "{disk}/x"],
                      {"x/0.gradcam.png": "previous", "x/0.gradcam.npy": "previous"}),
    "inspect --output": (["inspect", "{run}", "--format", "csv", "--output",
                          "{disk}/layers.csv"], {"layers.csv": "name\nconv\n"}),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_full_disk_keeps_the_previous_files_and_is_one_line(
        run_on_disk: Path, disk: Path, tmp_path: Path, command: str) -> None:
    images = make_image_folder(tmp_path / "more", per_class=2, classes=("red", "green", "blue"))
    args, previous = COMMANDS[command]
    for name, text in previous.items():
        (disk / name).parent.mkdir(parents=True, exist_ok=True)
        (disk / name).write_text(text)
    before = snapshot(disk)
    fill(disk)
    line = one_line(*run_cli([arg.format(run=run_on_disk, disk=disk, images=images)
                              for arg in args]))
    assert line.startswith(f"Error: the disk is full: cannot write '{disk}/"), line
    assert " free)" in line and "unchanged" in line and line.endswith("run again"), line
    assert snapshot(disk) == before  # the previous files byte for byte, nothing new


def test_a_full_disk_leaves_no_export_and_no_dataset(run_on_disk: Path, disk: Path,
                                                     tmp_path: Path) -> None:
    from tlkit.datasets import Dataset, RawFile, fetch_dataset

    raw = tmp_path / "mirror" / "sst.train"
    raw.parent.mkdir()
    raw.write_bytes(b"1 a gripping film .\n0 dull .\n")
    row = Dataset(name="tiny", description="", citation="", format="label-first",
                  splits={"train": (RawFile("sst.train",
                                            hashlib.sha256(raw.read_bytes()).hexdigest()),)},
                  train_command="", labels=("negative", "positive"))
    fill(disk)
    before = snapshot(disk)
    line = one_line(*run_cli(["export", str(run_on_disk), "--format", "savedmodel", "--out",
                              str(disk / "exported")]))
    assert line.startswith(f"Error: the disk is full: cannot write '{disk}/exported' ("), line
    assert_user_error(lambda: fetch_dataset(row, disk / "data", raw.parent.as_uri()),
                      f"the disk is full: cannot write '{disk}/data/tiny' (")
    assert snapshot(disk) == before and not list(disk.glob("**/.*"))


def _interrupt_after(function: Callable[..., object]) -> Callable[..., object]:
    """``function``, then Ctrl-C: what a user's Ctrl-C in the middle of the work does."""
    def interrupted(*args: object, **kwargs: object) -> None:
        function(*args, **kwargs)
        raise KeyboardInterrupt

    return interrupted


def test_an_interrupted_evaluate_keeps_the_previous_report_and_a_rerun_replaces_it(
        image_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.evaluation.report
    from tlkit.evaluate import evaluate

    more = make_image_folder(tmp_path / "more", per_class=3, classes=("red", "green", "blue"))
    fewer = make_image_folder(tmp_path / "fewer", per_class=1, classes=("red", "green", "blue"))
    evaluate(image_run, more, name="again")
    folder = image_run / "reports" / "again"
    (folder / "stale.txt").write_text("from the first report only")
    before = snapshot(image_run / "reports")
    with monkeypatch.context() as patch:
        patch.setattr(tlkit.evaluation.report, "write_report",
                      _interrupt_after(tlkit.evaluation.report.write_report))
        with pytest.raises(KeyboardInterrupt):
            evaluate(image_run, fewer, name="again")
    assert snapshot(image_run / "reports") == before
    metrics = evaluate(image_run, fewer, name="again")
    assert metrics["n"] == 3 and not (folder / "stale.txt").exists()
    assert pd.read_csv(folder / "predictions.csv").shape[0] == 3
    assert '"n": 3' in (folder / "report.json").read_text()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["again"]


def test_an_interrupted_report_rebuild_keeps_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tlkit.evaluation.report
    from tlkit.evaluation.report import build_run_report

    run = make_run(tmp_path)
    build_run_report(run)
    for name in REPORT_FILES:
        (run / name).write_text(f"the previous {name}")
    before = snapshot(run)
    monkeypatch.setattr(tlkit.evaluation.report, "_markdown",
                        _interrupt_after(tlkit.evaluation.report._markdown))
    with pytest.raises(KeyboardInterrupt):
        build_run_report(run)
    assert snapshot(run) == before  # no file of the report was rewritten, none left beside


def test_ctrl_c_during_the_renames_waits_until_the_report_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    from tlkit.evaluation.report import publish

    for name in REPORT_FILES:
        (tmp_path / name).write_text("previous")
    rename = os.replace

    def ctrl_c_after_the_first_rename(source: object, target: object) -> None:
        rename(source, target)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # where Python runs the handler

    monkeypatch.setattr(os, "replace", ctrl_c_after_the_first_rename)
    with pytest.raises(KeyboardInterrupt):
        publish(tmp_path, {name: b"new" for name in REPORT_FILES})
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == dict.fromkeys(
        REPORT_FILES, "new")


def test_stdout_carries_only_the_predictions(image_run: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PREDICT, "PROGRESS_FROM", 1)  # the predict phase's lines on
    images = make_image_folder(tmp_path / "new", per_class=2, classes=("red", "blue"))
    code, stdout, stderr = run_cli(["predict", str(image_run), str(images)])
    assert code == 0, stderr
    assert stdout.startswith("input,label_1,prob_1,error\n"), stdout[:200]
    table = pd.read_csv(io.StringIO(stdout), keep_default_na=False)
    assert len(table) == 4 and table["label_1"].isin(["red", "green", "blue"]).all()
    assert "predict: done" in stderr and "4 images" in stderr  # the progress went to stderr


def test_text_prediction_progress_goes_to_stderr(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from tlkit.runs import Run

    monkeypatch.setattr(PREDICT, "PROGRESS_FROM", 1)
    hashed = keras.Sequential([keras.Input((), dtype="string"),
                               keras.layers.Hashing(2, output_mode="one_hot")])
    run = Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {}, model=hashed)
    probabilities, _ = PREDICT.probabilities(run, ["a fine film", "a dull one"])
    out, err = capsys.readouterr()
    assert probabilities.shape == (2, 2) and out == "" and "2 sentences" in err


def _odd_files(folder: Path) -> dict[str, Path]:
    """A folder of two good images, a HEIC (not a format TensorFlow decodes) and a broken
    PNG."""
    good = [write_image(folder / f"{name}.png", colour, seed=1)
            for name, colour in (("red", (220, 30, 30)), ("blue", (30, 40, 220)))]
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (folder / "broken.png").write_bytes(b"not an image")
    return {"red": good[0], "blue": good[1], "heic": folder / "phone.heic",
            "broken": folder / "broken.png"}


def test_predict_on_a_folder_says_which_formats_it_skipped(image_run: Path,
                                                           tmp_path: Path) -> None:
    files = _odd_files(tmp_path / "photos")
    code, stdout, stderr = run_cli(["predict", str(image_run), str(tmp_path / "photos")])
    assert code == 0, stderr
    assert ("warning: skipping 1 image file(s) in formats tlkit does not read (.heic: 1); "
            "convert them to .jpg or .png to use them") in stderr
    table = pd.read_csv(io.StringIO(stdout), keep_default_na=False)
    assert sorted(table["input"]) == sorted(str(files[k]) for k in ("blue", "broken", "red"))
    only = tmp_path / "only-heic"
    only.mkdir()
    shutil.copy(files["heic"], only / "phone.heic")
    line = one_line(*run_cli(["predict", str(image_run), str(only)]))
    assert line == (f"Error: folder '{only}' has no images (.jpg, .jpeg, .png, .bmp, .gif, "
                    ".webp); its 1 .heic file(s) are in formats tlkit does not read: convert "
                    "them to .jpg or .png")


def test_explain_skips_what_it_cannot_read_and_explains_the_rest(
        image_run: Path, tmp_path: Path) -> None:
    files = _odd_files(tmp_path / "photos")
    out = tmp_path / "expl"
    code, stdout, stderr = run_cli(["explain", str(image_run), str(files["heic"]),
                                    str(files["red"]), str(files["broken"]), str(files["blue"]),
                                    "--out", str(out)])
    assert code == 0, stderr
    assert "(.heic: 1)" in stderr and "skipping 1 unreadable image(s)" in stderr
    assert "JPEG XL" not in stderr + stdout  # TensorFlow's own text is not the reason shown
    assert sorted(p.name for p in out.iterdir()) == [
        "blue.gradcam.npy", "blue.gradcam.png", "red.gradcam.npy", "red.gradcam.png"]
    heatmap = np.load(out / "red.gradcam.npy")
    assert heatmap.shape == (32, 32) and abs(float(heatmap.sum()) - 1) < 1e-4
    line = one_line(*run_cli(["explain", str(image_run), str(files["heic"]),
                              str(files["broken"]), "--out", str(out / "none")]))
    assert line.startswith("Error: none of the 2 images can be read, e.g. '"), line
    assert "JPEG XL" not in line and not (out / "none").exists()


# --------------------------------------------------------------- Ctrl-C during `tlkit report`

# `tlkit report`, with a Ctrl-C landing in a weakref callback first: where importlib's module
# locks have one, Python prints "Exception ignored" and goes on (1 in about 40 Ctrl-Cs).
CTRL_C_IN_A_CALLBACK = """
import signal, sys, weakref
import tlkit.evaluation.report as report
load_run = report.load_run
class Lock:
    pass
def ctrl_c_in_a_callback(*args, **kwargs):
    lock = Lock()
    ref = weakref.ref(lock, lambda ref: signal.raise_signal(signal.SIGINT))
    del lock
    return load_run(*args, **kwargs)
report.load_run = ctrl_c_in_a_callback
from tlkit.cli import main
main(["report", sys.argv[1]])
"""
TLKIT = "from tlkit.cli import main; main()"


def _report_run(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A finished run whose report files are marked as the previous ones, and their sha256."""
    from tlkit.evaluation.report import build_run_report

    run = make_run(tmp_path)
    build_run_report(run)
    for name in REPORT_FILES:
        (run / name).write_text(f"the previous {name}")
    return run, snapshot(run)


def _tlkit(code: str, *args: str) -> subprocess.Popen[str]:
    # Ctrl-C as a terminal sends it, even when the tests run where SIGINT is ignored.
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_a_ctrl_c_swallowed_by_a_callback_still_stops_the_report(tmp_path: Path) -> None:
    run, before = _report_run(tmp_path)
    process = _tlkit(CTRL_C_IN_A_CALLBACK, str(run))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode != 0, stdout + stderr
    assert "Aborted!" in stderr and "Exception ignored" not in stderr, stderr
    assert snapshot(run) == before


def test_ctrl_c_at_seeded_times_stops_the_report_and_keeps_the_previous_one(
        tmp_path: Path) -> None:
    run, before = _report_run(tmp_path)
    for seed in (1, 2):
        delay = random.Random(seed).uniform(0.3, 2.5)  # `tlkit report` takes 2-7 s here
        process = _tlkit(TLKIT, "report", str(run))
        time.sleep(delay)
        if process.poll() is not None:
            continue  # done before the Ctrl-C (a machine faster than this one)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode != 0, f"seed {seed}, Ctrl-C after {delay:.2f}s: {stderr}"
        now = snapshot(run)
        # Whole or not at all: the previous report, or (Ctrl-C held back during the renames)
        # the new one; never a mix, and nothing left beside.
        rewritten = {name for name in REPORT_FILES if now[name] != before[name]}
        assert now == before or rewritten == set(REPORT_FILES), f"seed {seed}: {rewritten}"
        assert set(now) == set(before), f"seed {seed}: files left beside the report"


def test_inspect_output_into_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "no" / "layers.csv"
    line = one_line(*run_cli(["inspect", "tiny_cnn", "--output", str(target)]))
    assert line == (f"Error: cannot write --output '{target}': '{target.parent}' is not a "
                    "writable folder")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden"])
def test_a_report_name_that_leaves_the_reports_folder_is_one_line(image_run: Path,
                                                                   name: str) -> None:
    before = sorted(p.relative_to(image_run.parent) for p in image_run.parent.rglob("*"))
    code, _, stderr = run_cli(["evaluate", str(image_run), "--data",
                               str(image_run.parent.parent / "img"), "--name", name])
    assert code == 2, stderr
    assert stderr.startswith(f"Error: report name '{name}' must be one folder"), stderr
    assert len(stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(image_run.parent) for p in image_run.parent.rglob("*")) == before
