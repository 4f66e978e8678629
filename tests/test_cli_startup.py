"""Start-up of the ``tlkit`` command: help is cheap, and TensorFlow's start-up chatter is hidden."""

from __future__ import annotations

import subprocess
import sys

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
