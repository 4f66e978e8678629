"""The run folder: what a finished run leaves on disk, written so it is never half there.

A run is built in a hidden ``.NAME.partial`` folder next to its final place and renamed when
everything is written; a failure removes the partial folder. Layout::

    recipe.yaml  classes.json  model.keras  history.csv  metrics.json  split.csv
    checkpoints/best.weights.h5  checkpoints/last.weights.h5  logs/ (TensorBoard)

Example:
    >>> with new_run_folder("runs", "demo") as folder:  # doctest: +SKIP
    ...     write_json(folder / "metrics.json", {"accuracy": 1.0})
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tlkit.errors import UserError

MODEL_FILE = "model.keras"
RECIPE_FILE = "recipe.yaml"
CLASSES_FILE = "classes.json"


def run_name(prefix: str) -> str:
    """A readable, sortable run name: ``PREFIX-YYYYmmdd-HHMMSS``."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def new_run_folder(out: str | Path, name: str) -> Iterator[Path]:
    """Yield a partial folder to write into; publish it as ``out/name`` only on success."""
    out = Path(out)
    final = out / name
    if final.exists():
        raise UserError(f"run folder '{final}' exists already; choose another --name or --out")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    os.replace(partial, final)


def published_path(partial: Path) -> Path:
    """Where the partial folder yielded by ``new_run_folder`` is published."""
    return partial.parent / partial.name.removeprefix(".").removesuffix(".partial")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def check_run_folder(path: str | Path) -> Path:
    """Return ``path`` if it is a finished run folder, else a UserError saying what is missing."""
    folder = Path(path)
    if not (folder / MODEL_FILE).is_file() or not (folder / RECIPE_FILE).is_file():
        raise UserError(f"'{folder}' is not a tlkit run folder (no {MODEL_FILE} and "
                        f"{RECIPE_FILE}); pass the folder a finished run printed")
    return folder


def load_keras_file(path: str | Path) -> Any:
    """Load a ``.keras`` file written by tlkit (image or text run) for inference."""
    import keras

    import tlkit.models.textcnn  # noqa: F401 - registers the text model's custom layers

    return keras.saving.load_model(path, compile=False)
