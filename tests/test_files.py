"""tlkit/files.py: a write that fails, is interrupted or meets a full disk leaves the old file."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import mounted_tmpfs

from tlkit.errors import UserError
from tlkit.files import is_disk_full, replacing, write_bytes, write_text


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: writes past it fail with ENOSPC, as on a full disk."""
    with mounted_tmpfs(tmp_path / "disk", "1m") as disk:
        yield disk


def test_a_full_disk_keeps_the_previous_file_and_names_the_path(small_disk: Path) -> None:
    path = small_disk / "preds.csv"
    write_text(path, "path,label\na.png,cat\n")
    before = sha256(path)
    with pytest.raises(UserError) as caught:
        write_bytes(path, b"x" * 2_000_000)
    message = str(caught.value)
    assert message.startswith(f"the disk is full: cannot write '{path}' (")
    assert "free)" in message and "previous 'preds.csv' is unchanged" in message
    assert sha256(path) == before
    assert sorted(p.name for p in small_disk.iterdir()) == ["preds.csv"]


def test_a_full_disk_leaves_no_new_file(small_disk: Path) -> None:
    with pytest.raises(UserError, match="the disk is full"):
        write_bytes(small_disk / "new.csv", b"x" * 2_000_000)
    assert list(small_disk.iterdir()) == []


def test_an_interrupted_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    write_text(path, "old")
    with pytest.raises(KeyboardInterrupt), replacing(path) as partial:
        partial.write_text("half")
        raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    report = tmp_path / "report"
    with replacing(report) as partial:
        partial.mkdir()
        (partial / "metrics.json").write_text("120")
        (partial / "old-only.png").write_text("x")
    with pytest.raises(RuntimeError), replacing(report) as partial:
        partial.mkdir()
        (partial / "metrics.json").write_text("33")
        raise RuntimeError("killed mid-report")
    assert sorted(p.name for p in report.iterdir()) == ["metrics.json", "old-only.png"]
    with replacing(report) as partial:
        partial.mkdir()
        (partial / "metrics.json").write_text("33")
    assert [p.name for p in report.iterdir()] == ["metrics.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_full_disk_errors_are_recognised_through_their_causes() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("h5py could not write") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(RuntimeError("Unable to write file (No space left on device)"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_the_cli_turns_a_full_disk_anywhere_into_one_line(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from conftest import run_cli

    import tlkit.backbones

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/model.keras")

    monkeypatch.setattr(tlkit.backbones, "backbone_table", full)
    code, stdout, stderr = run_cli(["backbones"])
    assert code == 2, stdout + stderr
    assert stderr.startswith("Error: the disk is full: cannot write '/somewhere/model.keras'")
    assert len(stderr.strip().splitlines()) == 1


def test_ctrl_c_between_the_renames_of_a_folder_swap_waits_for_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c: None) -> None:
    import os
    import signal

    import tlkit.files

    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("old")
    real_replace = os.replace

    def replace_then_ctrl_c(source: Path, target: Path) -> None:
        real_replace(source, target)
        if Path(target).name.endswith(".old"):  # the old folder has just been moved aside
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(tlkit.files.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), replacing(report) as partial:
        partial.mkdir()
        (partial / "metrics.json").write_text("new")
    assert (report / "metrics.json").read_text() == "new"
