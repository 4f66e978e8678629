"""Progress on stderr (issue 21): phases announced early, throttled plain lines in files, bars
in a terminal, nothing with --quiet, each phase's wall time in metrics.json, and a killed
run's last lines in its log."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_image_folder

from tlkit import progress

ROOT = Path(__file__).resolve().parents[1]
CONTROL = re.compile(r"[\r\x08\x1b]")  # a bar's redraws, backspaces and ANSI escapes
PHASES = {"scan", "tensorflow", "check", "split", "cache", "probe", "stage head", "evaluate",
          "save", "report"}


def _finetune_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tlkit", *extra, "finetune", "--backbone", "tiny_cnn",
            "--weights", "none", "--data", str(data), "--out", str(out), "--name", "r",
            "--epochs", "2", "--batch-size", "4"]  # batches: the cache pass counts 4 at a time


def _env() -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop(progress.QUIET_ENV, None)
    return env


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_throttled_to_one_per_interval_plus_the_end(monkeypatch, capsys):
    """1000 counts over 100 s: the start, the first count (rate and ETA at once), at most one
    line per 10 s, and the end; each count line has done/total, rate and ETA."""
    clock = FakeClock()
    monkeypatch.setattr(progress, "_clock", clock)
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    with (progress.recording() as times,
          progress.phase("cache train", total=1000, unit="image") as step):
        for _ in range(1000):
            clock.now += 0.1
            step.advance()
    lines = capsys.readouterr().err.splitlines()
    counts = [line for line in lines if "ETA" in line]
    assert lines[0] == "cache train: 1000 images"
    assert lines[-1].startswith("cache train: done in 1m 40s, 1000 images, 10.0 images/s")
    assert len(counts) <= 1 + 100 / progress.LINE_INTERVAL, lines
    assert len(counts) >= 9, lines  # not silent either: a line every interval
    assert counts[0] == "cache train: 1/1000 images (0%), 10.0 images/s, ETA 1m 40s"  # 99.9 s
    assert times == {"cache train": 100.0}


def test_a_phase_that_counts_nothing_still_speaks_every_interval(monkeypatch, capsys):
    """A fit with no counts (the probe) writes a line per interval, so a log shows it runs."""
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.2)
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    with progress.phase("probe", detail="logistic regression"):
        time.sleep(0.75)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "probe: logistic regression" and lines[-1].startswith("probe: done in ")
    assert 2 <= len([line for line in lines if line.startswith("probe: running for ")]) <= 4


def test_a_phase_of_checks_says_nothing_before_its_mistake(monkeypatch, capsys):
    """announce=False (the scan, before TensorFlow): a mistake found in it stays the only
    line; a scan that ends says so in one line."""
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    with (pytest.raises(ValueError),
          progress.phase("scan", unit="image", announce=False) as scan):
        scan.advance(5)
        raise ValueError("no class subfolders")
    assert capsys.readouterr().err == ""
    with progress.phase("scan", unit="image", announce=False) as scan:
        scan.advance(5)
    assert re.fullmatch(r"scan: done in [\d.]+s, 5 images, [\d.]+ images/s\n",
                        capsys.readouterr().err)


def test_passes_add_up_under_one_record_and_quiet_says_nothing(monkeypatch, capsys):
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    clock = FakeClock()
    monkeypatch.setattr(progress, "_clock", clock)
    with progress.recording() as times, progress.recording() as same:
        for split in ("train", "val"):
            with progress.phase(f"cache {split}", total=4, record="cache") as step:
                clock.now += 2.5
                step.advance(4)
    assert times is same and times == {"cache": 5.0}
    assert capsys.readouterr().err == ""


def _wait_for(path: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> float:
    """Seconds until ``text`` is in the file ``path`` (read while the process runs)."""
    start = time.monotonic()
    while text not in (path.read_text() if path.is_file() else ""):
        assert process.poll() is None or text in path.read_text(), path.read_text()[-3000:]
        assert time.monotonic() - start < timeout, path.read_text()[-3000:]
        time.sleep(0.02)
    return time.monotonic() - start


def test_a_run_logged_to_files_shows_each_phase_on_stderr(tmp_path):
    """stdout and stderr to files, as `> log 2>&1` or a scheduler: the first line comes before
    TensorFlow loads, every phase is announced on stderr with plain lines (the cache pass
    with its rate and ETA), stdout keeps only the run's summary, and metrics.json and the
    report have each phase's time."""
    data = make_image_folder(tmp_path / "images", per_class=10)
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_file.open("w") as out, err_file.open("w") as err:
        process = subprocess.Popen(_finetune_args(data, tmp_path / "runs"), cwd=ROOT,
                                   env=_env(), stdout=out, stderr=err)
        first = _wait_for(err_file, "scan: ", process)
        cache = _wait_for(err_file, "cache train: ", process)
        assert process.wait(timeout=300) == 0, err_file.read_text()[-3000:]
    assert first < cache  # the log speaks before the long phases start
    stdout, stderr = out_file.read_text(), err_file.read_text()
    assert stdout.startswith("run folder: ") and "Epoch" not in stdout
    # progress lines ("stage head: 3 epochs to run") stay on stderr; the summary's
    # "stages (val_loss): ..." line is the run's result
    assert not re.search(r"^stage \S+: ", stdout, re.M) and "stage head: " in stderr
    assert re.match(r"scan: done in [\d.]+s, 20 images, ", stderr)  # before TensorFlow loads
    assert not CONTROL.search(stdout) and not CONTROL.search(stderr), repr(stderr[-2000:])
    assert re.search(r"^cache train: 4/\d+ images \(\d+%\), [\d.]+ images/s, ETA [\d.]+s$", stderr,
                     re.M), stderr
    assert re.search(r"^cache train: done in [\d.]+s, \d+ images, [\d.]+ images/s$", stderr,
                     re.M), stderr
    assert re.search(r"^split: done in .*: train \d+, val \d+, test \d+", stderr, re.M)
    assert "Epoch 1/2" in stderr and re.search(r"^stage head: done in ", stderr, re.M)
    for name in ("probe", "evaluate val", "evaluate test", "save", "report"):
        assert re.search(rf"^{name}: done in ", stderr, re.M), name
    phases = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())["phases"]
    assert set(phases) >= PHASES and all(seconds >= 0 for seconds in phases.values())
    report = (tmp_path / "runs" / "r" / "report.md").read_text()
    assert "time: cache" in report and "time: stage head" in report


def test_quiet_silences_progress(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=10)
    done = subprocess.run(_finetune_args(data, tmp_path / "runs", "--quiet"), cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not re.search(r"^(scan|cache train|stage head|report): |Epoch", done.stderr, re.M), \
        done.stderr
    assert done.stdout.startswith("run folder: ")
    phases = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())["phases"]
    assert set(phases) >= PHASES  # times are recorded all the same


def test_a_killed_run_leaves_its_last_lines_in_the_log(tmp_path):
    """SIGKILL once training started: the log holds every line written up to then."""
    data = make_image_folder(tmp_path / "images", per_class=10)
    log = tmp_path / "log.txt"
    with log.open("w") as file:
        process = subprocess.Popen(_finetune_args(data, tmp_path / "runs"), cwd=ROOT,
                                   env=_env(), stdout=file, stderr=subprocess.STDOUT)
        _wait_for(log, "stage head: ", process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    text = log.read_text()
    for line in ("scan: done in ", "cache train: done in ", "probe: done in ", "stage head: "):
        assert line in text, text


def test_output_to_a_file_is_line_buffered(tmp_path):
    """The CLI makes stdout in a file flush each line (Python buffers it in blocks there)."""
    code = ("import sys; from tlkit.cli import line_buffered_output; line_buffered_output(); "
            "print(sys.stdout.line_buffering, sys.stderr.line_buffering)")
    with (tmp_path / "out.txt").open("w") as out:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=out, check=True)
    assert (tmp_path / "out.txt").read_text().split() == ["True", "True"]


def test_a_terminal_shows_bars(tmp_path):
    """stderr on a pseudo-terminal: each cache pass and scoring pass draws a bar (rich),
    Keras draws its epoch bar; stdout (a file) still gets only the summary."""
    data = make_image_folder(tmp_path / "images", per_class=10)
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with (tmp_path / "out.txt").open("w") as out:
        process = subprocess.Popen(_finetune_args(data, tmp_path / "runs"), cwd=ROOT,
                                   env={**_env(), "COLUMNS": "120"}, stdout=out,
                                   stderr=terminal)
        assert process.wait(timeout=300) == 0
    os.close(terminal)
    reader.join(timeout=10)
    os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert re.search(r"cache train .*━", shown), shown[-3000:]
    assert re.search(r"evaluate test .*━", shown), shown[-3000:]
    assert "\x1b[" in shown and "━" in shown.split("Epoch 1/2")[1]  # Keras's bar
    assert not re.search(r"stage head: \d+/\d+ batches", shown)  # no lines under Keras's bar
    assert (tmp_path / "out.txt").read_text().startswith("run folder: ")


def test_a_stage_counts_every_batch_with_steps_per_execution(monkeypatch, capsys):
    """Keras calls on_train_batch_end once per execution (the text CNN runs several steps in
    one): the stage's count still reaches every batch of every epoch."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tlkit.train.fit import _stage_phase

    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=2)
    train = tf.data.Dataset.from_tensor_slices((np.ones((8, 2)), np.ones(8))).batch(2)
    with _stage_phase("train", train, 2) as counter:
        model.fit(train, epochs=2, callbacks=[counter], verbose=0)
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.match(r"stage train: done in [\d.]+s, 8 batches, ", last), last


def test_a_vectors_file_counts_every_row(tmp_path, monkeypatch, capsys):
    from tlkit.vectors import load_vectors

    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    rows = [f"w{i} 0.5 0.25" for i in range(60_001)]
    (tmp_path / "v.txt").write_text("\n".join(rows) + "\n")
    load_vectors(tmp_path / "v.txt", ["", "w3", "zebra"])
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.match(r"vectors: done in [\d.]+s, 60001 vectors, [\d.]+ vectors/s: 1 of the 2 "
                    r"words wanted$", last), last


def test_a_cross_validated_run_records_its_phases_after_publishing(tmp_path):
    """The report (and its time) comes once the run folder is published, for k folds too."""
    from tlkit.recipes import ImageRecipe, Stage
    from tlkit.train.image import ImageJob, check_image_run
    from tlkit.train.job import cross_validate

    data = make_image_folder(tmp_path / "images", per_class=8)
    recipe = ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                         batch_size=8, augment=None, probe=False,
                         stages=[Stage(name="all", epochs=1, lr=0.01, train_from="all")])
    run = cross_validate(ImageJob(check_image_run(recipe, tmp_path / "runs", "cv"),
                                  tmp_path / "runs"), folds=2)
    saved = json.loads((run.path / "metrics.json").read_text())["phases"]
    assert {"check", "split", "stage all", "evaluate", "save", "report"} <= set(saved)
    assert saved == run.metrics["phases"]
