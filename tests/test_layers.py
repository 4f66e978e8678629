"""The layers of docs/architecture.md import one way: pyproject.toml's import-linter contracts.

``lint-imports`` runs them in .ci/run; these tests run them under pytest too, so a module that
imports a layer above its own (inside a function too) fails the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the tlkit package and pyproject.toml found in ``root``."""
    pytest.importorskip("importlinter")
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(" \
           "no_cache=True, no_logo=True))"
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(root),
                                                       "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_are_kept() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_inside_a_function_breaks_the_layers(tmp_path: Path) -> None:
    # The import circle this contract ended: the run folder asking the devices for workers.
    shutil.copytree(ROOT / "tlkit", tmp_path / "tlkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    runs = tmp_path / "tlkit" / "runs.py"
    runs.write_text(runs.read_text() + "\n\ndef _gpus() -> None:\n"
                    "    from tlkit.devices import use_gpus\n\n    use_gpus(None)\n")
    done = _lint(tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "tlkit.runs is not allowed to import tlkit.devices" in done.stdout


def test_a_new_module_must_take_a_layer(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "tlkit", tmp_path / "tlkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tlkit" / "audio.py").write_text('"""A kind of run nobody placed."""\n')
    done = _lint(tmp_path)
    assert done.returncode == 1 and "tlkit.audio" in done.stdout, done.stdout[-3000:]


def test_the_run_folder_is_read_without_devices_keras_or_models(tmp_path: Path) -> None:
    # A resume's check and `tlkit runs` read the run folder; neither may start TensorFlow
    # or pull in what sits above the run folder.
    code = ("import sys\n"
            "from tlkit.errors import UserError\n"
            "from tlkit.runs import list_runs, unfinished_run\n"
            "try:\n"
            f"    unfinished_run({str(tmp_path / 'none')!r}, 'image')\n"
            "except UserError:\n"
            "    pass\n"
            f"list_runs({str(tmp_path)!r})\n"
            "print(sorted(m for m in sys.modules if m in ('tensorflow', 'keras')\n"
            "             or m.startswith(('tlkit.devices', 'tlkit.models', 'tlkit.train'))))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
