"""Start-up of the ``tlkit`` command: help is cheap, and TensorFlow's start-up chatter is hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Every --help a user can ask for; each builds its click.Choice lists from tlkit.choices.
HELPS = [["--help"], ["finetune", "--help"], ["textcnn", "--help"], ["textcnn", "train", "--help"],
         ["textcnn", "predict", "--help"], ["export", "--help"], ["serve", "--help"],
         ["datasets", "fetch", "--help"], ["inspect", "--help"], ["predict", "--help"],
         ["evaluate", "--help"], ["explain", "--help"], ["devices", "--help"]]
HEAVY = ("numpy", "pandas", "tensorflow", "keras", "PIL", "sklearn")


def test_every_help_imports_no_numpy_pandas_or_tensorflow() -> None:
    script = f"""
import sys
from tlkit.cli import main
for args in {HELPS!r}:
    try:
        main(args)
    except SystemExit as stop:
        assert stop.code == 0, (args, stop.code)
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]
    assert "kim-cased" in done.stdout and "savedmodel" in done.stdout  # the choices are shown


ROOT = Path(__file__).resolve().parents[1]
# What TensorFlow printed before tlkit's first line on this CPU-only machine.
START_UP_LINES = ("All log messages before absl::InitializeLog", "Could not find cuda drivers",
                  "failed call to cuInit", "oneDNN custom operations")


def _tlkit(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m tlkit ARGS`` as a user runs it: no TF_CPP_MIN_LOG_LEVEL of the suite's."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("TF_CPP_MIN_LOG_LEVEL", "TLKIT_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "tlkit", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**environment, **env}, timeout=600)


no_gpu = pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="this machine has a GPU")


@no_gpu
def test_training_shows_no_tensorflow_start_up_lines_and_says_cpu(tmp_path: Path) -> None:
    done = _tlkit(["textcnn", "train", "--data", "datasets/questions", "--epochs", "1",
                   "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    shown = [line for line in done.stderr.splitlines()
             if any(words in line for words in START_UP_LINES)]
    assert not shown, shown
    assert done.stderr.splitlines().count("no GPU: training on CPU") == 1, done.stderr[-3000:]


@no_gpu
@pytest.mark.parametrize("verbose", [{"args": ["--verbose"]}, {"env": {"TLKIT_VERBOSE": "1"}}],
                         ids=["--verbose", "TLKIT_VERBOSE=1"])
def test_verbose_shows_tensorflow_start_up_lines(verbose: dict) -> None:
    done = _tlkit([*verbose.get("args", []), "devices"], **verbose.get("env", {}))
    assert done.returncode == 0, done.stderr[-3000:]
    for words in START_UP_LINES:
        assert words in done.stderr, done.stderr[-3000:]
    assert "no GPU: running on CPU" in done.stderr


def test_start_up_lines_are_dropped_and_every_other_line_kept(
        capfd: pytest.CaptureFixture[str]) -> None:
    from tlkit.cli import _start_up_lines_hidden

    with _start_up_lines_hidden():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n"
                    b"I0000 00:00:1796598071.244877    4790 cudart_stub.cc:31] Could not find "
                    b"cuda drivers on your machine, GPU will not be used.\n"
                    b"a warning of a library\n")
    assert capfd.readouterr().err == "a warning of a library\n"
