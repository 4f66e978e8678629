"""Shared fixtures: a private Keras cache and tiny image folders made in tmp_path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def private_keras_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                       ) -> Path:
    """Tests never read or write the user's ~/.keras: each session gets its own cache."""
    home = tmp_path_factory.getbasetemp() / "keras_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def write_image(path: Path, colour: tuple[int, int, int], size: int = 24, mode: str = "RGB",
                seed: int = 0) -> Path:
    """A small image of one dominant colour plus noise, in the format of ``path``'s suffix."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255)
    image = Image.fromarray(pixels.astype("uint8"), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


CLASS_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_image_folder(root: Path, per_class: int = 8, classes: tuple[str, ...] = ("red", "green"),
                      suffix: str = ".png") -> Path:
    """``root/<class>/<i>.png``: classes told apart by colour, learnable in a few steps."""
    for name in classes:
        for i in range(per_class):
            write_image(root / name / f"{i}{suffix}", CLASS_COLOURS[name], seed=i)
    return root


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal, even where the tests were started
    with SIGINT ignored (a background job of a non-interactive shell: Python then installs
    no handler, and an in-process Ctrl-C would do nothing)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two colour classes, eight PNGs each."""
    return make_image_folder(tmp_path / "images")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str] | None = None
            ) -> tuple[int, str, str]:
    """Run ``tlkit ARGS`` with click's test runner: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from tlkit.cli import cli

    result = CliRunner().invoke(cli, args, prog_name="tlkit")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_user_error(call: Any, *words: str, ignore_case: bool = False) -> str:
    """Run ``call``; it must raise one UserError whose single-line message holds ``words``."""
    from tlkit.errors import UserError

    with pytest.raises(UserError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        found = word.lower() in message.lower() if ignore_case else word in message
        assert found, f"{word!r} not in: {message}"
    return message


@contextmanager
def mounted_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``1m``, ``16m``) at ``folder``: a disk that fills up for real.

    Mounting needs root (CI runs as root); elsewhere the test is skipped with the reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill here (needs root): {made.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
