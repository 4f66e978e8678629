"""A run folder is never lost: a failed resume keeps it, a full disk is one line, a live run
is locked against a second process, and its paths work from any working folder."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import make_image_folder, mounted_tmpfs, run_cli

import tlkit.train.fit as fit_module
import tlkit.train.image as image_module
from tlkit.errors import UserError
from tlkit.recipes import ImageRecipe, Stage, TextCNNRecipe
from tlkit.runs import LOCK_FILE, RunWriter

# Holds the lock of a run as a training process does, until it is killed.
HOLD_LOCK = """
import fcntl, os, sys, time
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(handle, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""
# Exit 0 if the lock file is free, 1 if a process holds it.
PROBE_LOCK = """
import fcntl, os, sys
handle = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
"""
TINY = ["--backbone", "tiny_cnn", "--weights", "none", "--input-size", "32", "--batch-size",
        "4", "--epochs", "2", "--set", "early_stopping=", "--set", "probe=false",
        "--set", "augment="]


def _recipe(data: Path | str) -> ImageRecipe:
    """Four end-to-end epochs of tiny_cnn: each epoch writes the backbone's weights."""
    return ImageRecipe(backbone="tiny_cnn", data=str(data), weights="none", input_size=32,
                       batch_size=4, early_stopping=None, augment=None, probe=False,
                       stages=[Stage(epochs=4, lr=0.03, train_from="all")])


def _stop_after(monkeypatch: pytest.MonkeyPatch, epochs: int, error: BaseException,
                seen: dict[str, Any]) -> None:
    """Raise ``error`` at the end of epoch ``epochs`` (after its backup); note the lock."""
    import keras

    real = fit_module.epoch_callbacks

    def with_stop(best_file: Path, folder: Path, *args: Any) -> list[Any]:
        class Stop(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch + 1 >= epochs:
                    lock = folder / LOCK_FILE
                    probe = [sys.executable, "-c", PROBE_LOCK, str(lock)]
                    seen["locked"] = subprocess.run(probe, check=False).returncode == 1
                    seen["pid"] = lock.read_text().strip() if lock.is_file() else None
                    raise error

        return [*real(best_file, folder, *args), Stop()]

    monkeypatch.setattr(fit_module, "epoch_callbacks", with_stop)


def _interrupted_run(tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The partial folder of a run interrupted (Ctrl-C) after two epochs, locked meanwhile."""
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "img", per_class=6)
    seen: dict[str, Any] = {}
    with monkeypatch.context() as patch:
        _stop_after(patch, 2, KeyboardInterrupt(), seen)
        with pytest.raises(KeyboardInterrupt):
            finetune(_recipe(data), out=out, name="cut")
    assert seen == {"locked": True, "pid": str(os.getpid())}  # a live run holds its lock
    return out / ".cut.partial"


def _sums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the lock (it names the latest holder)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_failed_resume_keeps_the_partial_folder(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    partial = _interrupted_run(tmp_path, out, monkeypatch)
    before = _sums(partial)

    def failing(*args: Any, **kwargs: Any) -> None:
        raise failure

    monkeypatch.setattr(image_module, "fit_stages", failing)
    failure: BaseException = UserError("injected failure")
    code, _, err = run_cli(["finetune", "--resume", str(out / "cut")])
    line = _one_error_line(err)
    assert code == 2 and "injected failure" in line and f"kept in {partial}" in line, err
    assert f"tlkit finetune --resume {out / 'cut'}" in line
    failure = RuntimeError("an injected bug")
    with pytest.raises(RuntimeError) as caught:
        image_module.finetune(_recipe(tmp_path / "img"), out=out, name="cut", resume=True)
    assert f"kept in {partial}" in " ".join(caught.value.__notes__)
    assert partial.is_dir() and _sums(partial) == before
    assert not (out / "cut").exists()


def test_a_new_run_stopped_by_a_full_disk_after_an_epoch_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.train.image import finetune

    data = make_image_folder(tmp_path / "img", per_class=6)
    out = tmp_path / "runs"
    _stop_after(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"), {})
    with pytest.raises(UserError) as caught:
        finetune(_recipe(data), out=out, name="full")
    partial = out / ".full.partial"
    message = str(caught.value)
    assert message.startswith(f"the disk is full: cannot write '{partial}' (")
    assert "free)" in message and f"kept in {partial}" in message, message
    assert (partial / "backup" / "latest").read_text() == "epoch-2"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs: a disk that fills up at once (mounting needs root)."""
    with mounted_tmpfs(tmp_path / "disk", "2m") as disk:
        yield disk


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until about ``leave`` bytes are free."""
    with (disk / "filler").open("ab") as filler:
        while shutil.disk_usage(disk).free > leave:
            try:
                filler.write(b"\0" * min(65536, shutil.disk_usage(disk).free - leave))
                filler.flush()
            except OSError:
                break


def test_a_full_disk_during_finetune_is_one_line(small_disk: Path, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "img", per_class=6)
    out = small_disk / "runs"
    _fill(small_disk, leave=48 * 1024)  # the run's small files fit, its weights do not
    code, _, err = run_cli(["finetune", *TINY, "--set", "stages.0.train_from=all",
                            "--data", str(data), "--out", str(out), "--name", "full"])
    line = _one_error_line(err)
    assert code == 2, err
    assert line.startswith(f"Error: the disk is full: cannot write '{out / 'full'}' ("), line
    assert " free)" in line and "free some space" in line
    # no epoch was completed: nothing to resume, so the partial folder went
    assert not (out / ".full.partial").exists() and not (out / "full").exists()


def test_a_full_disk_during_resume_keeps_the_run_unchanged(
        small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = small_disk / "runs"
    partial = _interrupted_run(tmp_path, out, monkeypatch)
    before = _sums(partial)
    _fill(small_disk, leave=0)
    code, _, err = run_cli(["finetune", "--resume", str(out / "cut")])
    line = _one_error_line(err)
    assert code == 2 and line.startswith(f"Error: the disk is full: cannot write '{partial}'")
    assert "B free)" in line and f"kept in {partial}" in line, err
    assert _sums(partial) == before


def test_a_run_another_process_trains_is_refused_naming_its_pid(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    partial = out / ".cut.partial"
    partial.mkdir(parents=True)
    (partial / "recipe.yaml").write_text("kind: image\n")
    data = make_image_folder(tmp_path / "img", per_class=2)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(partial / LOCK_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = f"run 'cut' is being trained by process {holder.pid}"
        code, _, err = run_cli(["finetune", "--resume", str(out / "cut")])
        assert code == 2 and busy in _one_error_line(err) and "wait for it to finish" in err
        code, _, err = run_cli(["finetune", *TINY, "--data", str(data), "--out", str(out),
                                "--name", "cut"])
        assert code == 2 and busy in _one_error_line(err) and "--resume" in err
        code, listing, _ = run_cli(["runs", str(out)])
        assert code == 0 and "training" in listing
        code, _, _ = run_cli(["runs", str(out), "--remove-unfinished"])
        assert code == 0 and partial.is_dir()  # a live run is not removed
    finally:
        holder.kill()
        holder.wait()
    # the lock went with its process: the resume gets past it to what the folder lacks
    code, _, err = run_cli(["finetune", "--resume", str(out / "cut")])
    assert code == 2 and "stopped before it wrote its split" in err


def test_a_run_folder_works_from_another_folder(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    trained_in, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    make_image_folder(trained_in / "img", per_class=6)
    elsewhere.mkdir()
    monkeypatch.chdir(trained_in)
    code, out, err = run_cli(["finetune", *TINY, "--data", "img", "--out", "runs",
                              "--name", "moved"])
    assert code == 0, err
    run = trained_in / "runs" / "moved"
    assert not (run / LOCK_FILE).exists()
    split = pd.read_csv(run / "split.csv")
    assert all(Path(p).is_absolute() for p in split["path"]), split["path"].tolist()
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["data"] == str(trained_in / "img")
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(["export", str(run), "--format", "savedmodel", "--out",
                              str(elsewhere / "exported")])
    assert code == 0 and (elsewhere / "exported" / "export.json").is_file(), err
    code, out, err = run_cli(["evaluate", str(run), "--data", str(trained_in / "img"),
                              "--name", "again"])
    assert code == 0 and (run / "reports" / "again" / "metrics.json").is_file(), err


def test_text_recipe_paths_are_stored_absolute(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("train.csv", "test.csv"):
        Path(name).write_text("text,label\nok,+\n")
    writer = RunWriter(tmp_path, tmp_path / "run")
    writer.write_recipe(TextCNNRecipe(data="train.csv", test="test.csv"))
    stored = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    assert (stored["data"], stored["test"], stored["dev"]) == (
        str(tmp_path / "train.csv"), str(tmp_path / "test.csv"), None)


def test_an_interrupt_just_after_the_backup_is_named_keeps_what_latest_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGTERM that lands right after ``latest`` is renamed must not remove its backup.

    tests/test_resume.py met it: ``latest`` said epoch-4 and ``epoch-4/`` was gone.
    """
    import keras

    import tlkit.train.checkpoints as checkpoints

    real_write_text = checkpoints.write_text

    def write_then_interrupt(path: Path, text: str) -> None:
        real_write_text(path, text)
        raise KeyboardInterrupt("signal 15")

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)
    *_, backup = checkpoints.epoch_callbacks(tmp_path / "best.weights.h5", tmp_path, "head", 0,
                                            "val_loss", "min", None)
    backup.set_model(model)
    monkeypatch.setattr(checkpoints, "write_text", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        backup.on_epoch_end(3, {"val_loss": 0.5})
    latest = tmp_path / "backup" / (tmp_path / "backup" / "latest").read_text().strip()
    assert latest.name == "epoch-4"
    assert (latest / "state.json").is_file() and (latest / "state.weights.h5").is_file()
