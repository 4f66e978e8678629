"""The run folder, shared by every kind of run: written so it is never half there, and loaded.

A run is built in a hidden ``.NAME.partial`` folder next to its final place and renamed when
everything is written; a failure removes the partial folder. Every kind writes::

    recipe.yaml  classes.json  model.keras  history.csv  metrics.json  predictions.csv
    report.html  report.md  report.json  (and the report's figures)
    checkpoints/best.weights.h5  logs/ (TensorBoard)

plus what is its own (image: ``split.csv``; text: ``vocabulary.json``, and ``folds.csv`` with
``folds/<k>/`` under cross-validation). ``load_run`` opens any finished run; the recipe's
``kind`` says which job made it.

Example:
    >>> check_run_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tlkit.errors.UserError: run name 'a/b' must be one folder name (no '/', ...
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tlkit.errors import UserError

MODEL_FILE = "model.keras"
RECIPE_FILE = "recipe.yaml"
CLASSES_FILE = "classes.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
FOLDS_FILE = "folds.csv"
PREDICTIONS_FILE = "predictions.csv"
PARTIAL_SUFFIX = ".partial"


@dataclass
class Run:
    """A finished run of either kind, as its folder holds it.

    ``model`` is the saved model (raw RGB 0-255 images in, or raw strings in), None when
    loaded with ``model=False``; ``history`` has one row per epoch with its ``stage``;
    ``folds`` has one row per fold of a cross-validated run.

    Example:
        >>> Run(Path("r"), "image", None, ["a", "b"], {})  # the model and tables stay out
        Run(path=PosixPath('r'), kind='image', recipe=None, class_names=['a', 'b'], metrics={})
    """

    path: Path
    kind: str
    recipe: Any
    class_names: list[str]
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)
    history: pd.DataFrame | None = field(default=None, repr=False)
    folds: pd.DataFrame | None = field(default=None, repr=False)


def run_name(prefix: str) -> str:
    """A readable, sortable run name: ``PREFIX-YYYYmmdd-HHMMSS``.

    Example:
        >>> run_name("shapes")  # doctest: +ELLIPSIS
        'shapes-...-...'
    """
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def partial_path(final: Path) -> Path:
    """Where the run that will be published at ``final`` is written until it is finished.

    Example:
        >>> str(partial_path(Path("runs/shapes")))
        'runs/.shapes.partial'
    """
    return final.parent / f".{final.name}{PARTIAL_SUFFIX}"


def check_run_name(name: str) -> str:
    """``name`` if it can name one run folder, else a UserError.

    Example:
        >>> check_run_name("shapes-v2")
        'shapes-v2'
    """
    if (not name or "/" in name or "\\" in name or name in (".", "..")
            or name.startswith(".")):
        raise UserError(f"run name '{name}' must be one folder name (no '/', not '.' or '..', "
                        "not starting with '.'); choose another --name")
    return name


def check_destination(out: str | Path, name: str, resume: bool = False) -> Path:
    """The final path ``out/name`` of a new (or resumed) run, checked before any work starts.

    Example:
        >>> check_destination("/proc/version", "x")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: --out '/proc/version' is a file; ...
    """
    out = Path(out)
    final = out / check_run_name(name)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a folder to hold run folders")
    if final.exists():
        raise UserError(f"run folder '{final}' exists already; choose another --name or --out")
    partial = partial_path(final)
    if resume and not partial.is_dir():
        raise UserError(f"there is no unfinished run '{name}' in '{out}' to resume (no "
                        f"{partial.name}); `tlkit runs {out}` lists them")
    if not resume and partial.exists():
        raise UserError(f"an unfinished run named '{name}' is in '{partial}'; continue it with "
                        f"--resume {final}, or remove it with `tlkit runs {out} "
                        "--remove-unfinished`")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write run folders under '{out}' ('{existing}' is not a "
                        "writable folder); pass another --out")
    _check_creatable(out)
    return final


def _check_creatable(out: Path) -> None:
    """Make the missing folders of ``out`` and remove them again, or say why they cannot be.

    Asking ``os.access`` of the nearest existing folder is not enough: it answers yes for
    root under /proc, where no folder can be made, and the run would then fail only after
    building its model.
    """
    made: list[Path] = []
    try:
        for folder in reversed([p for p in (out, *out.absolute().parents) if not p.exists()]):
            folder.mkdir()
            made.append(folder)
    except OSError as error:
        raise UserError(f"cannot write run folders under '{out}' ({error.strerror}); pass "
                        "another --out") from error
    finally:
        for folder in reversed(made):
            folder.rmdir()


class RunWriter:
    """Writes the files of a run into its partial folder; ``final`` is where it will appear.

    Example:
        >>> import tempfile
        >>> writer = RunWriter(Path(tempfile.mkdtemp()), Path("runs/demo"))
        >>> writer.write_classes(["cat", "dog"])
        >>> read_json(writer.path / CLASSES_FILE)
        ['cat', 'dog']
    """

    def __init__(self, partial: Path, final: Path) -> None:
        self.path = partial
        self.final = final

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``data`` as indented JSON into the run folder."""
        path = self.path / name
        write_json(path, data)
        return path

    def write_recipe(self, recipe: Any) -> None:
        """The resolved recipe, so the run can be repeated from its folder alone."""
        from tlkit.recipes import dump_recipe

        dump_recipe(recipe, self.path / RECIPE_FILE)

    def write_classes(self, class_names: list[str]) -> None:
        """Class names in id order (``classes.json``)."""
        self.write_json(CLASSES_FILE, list(class_names))

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """A CSV table (split, history, folds, predictions)."""
        frame.to_csv(self.path / name, index=False)

    def save_model(self, model: Any) -> None:
        """Save an uncompiled view of ``model``: no optimizer state, loadable without tlkit.

        A layerwise optimizer would need tlkit to deserialize, and optimizer state would
        double or triple the file of a fully fine-tuned backbone. Nested models that were
        compiled to train (a head on cached features, the text CNN inside its string model)
        are saved without their optimizer too.
        """
        import keras

        stack = [model]
        while stack:
            layer = stack.pop()
            if isinstance(layer, keras.Model) and layer is not model:
                layer.optimizer = None
                layer.compiled = False
            stack.extend(getattr(layer, "layers", []))
        keras.Model(model.inputs, model.outputs, name=model.name).save(self.path / MODEL_FILE)


@contextmanager
def new_run_folder(out: str | Path, name: str, kind: str = "image", resume: bool = False
                   ) -> Iterator[RunWriter]:
    """Yield a writer into a partial folder; publish it as ``out/name`` only on success.

    An interrupt (Ctrl-C, or SIGTERM through the CLI) keeps the partial folder so that
    ``--resume`` can continue it; any other failure removes it. With ``resume`` the partial
    folder of an earlier, killed run is written into again.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with new_run_folder(out, "demo") as run:
        ...     run.write_classes(["cat", "dog"])
        >>> [p.name for p in out.iterdir()], [p.name for p in (out / "demo").iterdir()]
        (['demo'], ['classes.json'])
    """
    from tlkit.recipes import KIND_COMMANDS

    final = check_destination(out, name, resume)
    partial = partial_path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir(exist_ok=resume)
    try:
        yield RunWriter(partial, final)
    except KeyboardInterrupt:
        print(f"interrupted: the unfinished run is kept in {partial}; continue it with "
              f"`{KIND_COMMANDS[kind]} --resume {final}`", file=sys.stderr, flush=True)
        raise
    except BaseException as error:
        from tlkit.devices import peer_failure

        lost = peer_failure(error, final, KIND_COMMANDS[kind])
        if lost is None:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        raise UserError(lost) from error
    os.replace(partial, final)


def unfinished_run(path: str | Path, kind: str) -> tuple[Any, Path, str]:
    """(recipe, out, name) of the unfinished run at ``path`` (``out/NAME`` or its partial).

    Example:
        >>> unfinished_run("runs/none-such", "image")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: there is no unfinished run 'none-such' in 'runs' to resume ...
    """
    from tlkit.devices import worker_out
    from tlkit.recipes import KIND_COMMANDS, kind_of, load_recipe

    path = Path(path)
    name = path.name
    if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
        name = name[1:-len(PARTIAL_SUFFIX)]
    own = worker_out(path.parent)  # a non-chief worker resumes its own copy of the run
    check_destination(own, name, resume=True)
    recipe_file = partial_path(own / name) / RECIPE_FILE
    if not recipe_file.is_file():
        raise UserError(f"the unfinished run '{name}' stopped before it wrote its recipe; "
                        f"remove it with `tlkit runs {path.parent} --remove-unfinished` and "
                        "start again")
    recipe = load_recipe(recipe_file)
    if kind_of(recipe) != kind:
        raise UserError(f"'{path}' is an unfinished {kind_of(recipe)} run; resume it with "
                        f"`{KIND_COMMANDS[kind_of(recipe)]} --resume {path}`")
    return recipe, path.parent, name


def list_runs(folder: str | Path) -> pd.DataFrame:
    """One row per run folder under ``folder``: name, status, kind, accuracies, path.

    Example:
        >>> list_runs("no/such/folder").empty
        True
    """
    rows = []
    base = Path(folder)
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        unfinished = path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)
        if not path.is_dir() or not (unfinished or (path / RECIPE_FILE).is_file()):
            continue
        metrics_file = path / METRICS_FILE
        metrics = read_json(metrics_file) if metrics_file.is_file() and not unfinished else {}
        rows.append({"name": path.name[1:-len(PARTIAL_SUFFIX)] if unfinished else path.name,
                     "status": "unfinished" if unfinished else "finished",
                     "kind": run_kind(path),
                     "val_accuracy": metrics.get("val", {}).get("accuracy"),
                     "test_accuracy": metrics.get("test", {}).get("accuracy"),
                     "path": str(path)})
    return pd.DataFrame(rows, columns=["name", "status", "kind", "val_accuracy",
                                       "test_accuracy", "path"])


def run_kind(path: str | Path) -> str:
    """The kind (``image``, ``textcnn``) a run folder's recipe names; ``?`` without one.

    Reads only ``recipe.yaml``, so checks can use it before TensorFlow loads.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / RECIPE_FILE).write_text("kind: textcnn\\n")
        >>> run_kind(folder), run_kind(folder / "elsewhere")
        ('textcnn', '?')
    """
    import yaml

    recipe = Path(path) / RECIPE_FILE
    if not recipe.is_file():
        return "?"
    data = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    return str(data.get("kind", "image")) if isinstance(data, dict) else "?"


def remove_unfinished(folder: str | Path) -> list[Path]:
    """Delete every unfinished run folder under ``folder``; returns what was removed.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> (out / ".old.partial").mkdir()
        >>> [p.name for p in remove_unfinished(out)], list(out.iterdir())
        (['.old.partial'], [])
    """
    removed = [Path(p) for p in list_runs(folder).query("status == 'unfinished'")["path"]]
    for path in removed:
        shutil.rmtree(path)
    return removed


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, beside ``path`` first and then renamed into place.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> write_json(path, {"accuracy": 0.5})
        >>> path.read_text().splitlines()
        ['{', '  "accuracy": 0.5', '}']
    """
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    """Read a JSON file; one that is damaged (or is not JSON at all) is a UserError.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
        >>> _ = path.write_text("{oops")
        >>> read_json(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: '.../metrics.json' is not a readable JSON file (JSONDecodeError)...
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"'{path}' is not a readable JSON file ({type(error).__name__}); it "
                        "is damaged or was replaced: restore it or train the run again") from error


def check_run_folder(path: str | Path) -> Path:
    """Return ``path`` if it is a finished run folder, else a UserError saying what it is.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / RECIPE_FILE).write_text("kind: image")
        >>> check_run_folder(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: ... finished tlkit run folder (no classes.json, model.keras); ...
    """
    folder = Path(path)
    if folder.name.startswith(".") and folder.name.endswith(PARTIAL_SUFFIX):
        raise UserError(f"'{folder}' is an unfinished run (it stopped before the end); "
                        "train again, or delete the folder")
    if not folder.exists():
        hint = (" (an unfinished run of that name is there; train again)"
                if partial_path(folder).exists() else "")
        raise UserError(f"run folder '{folder}' does not exist{hint}; pass the folder a "
                        "finished run printed")
    missing = [name for name in (RECIPE_FILE, CLASSES_FILE, MODEL_FILE)
               if not (folder / name).is_file()]
    if missing:
        raise UserError(f"'{folder}' is not a finished tlkit run folder (no "
                        f"{', '.join(missing)}); pass the folder a finished run printed")
    return folder


def load_run(path: str | Path, model: bool = True) -> Run:
    """Open a finished run of any kind; ``model=False`` skips loading the Keras model.

    Example:
        >>> import tempfile
        >>> from tlkit.recipes import TextCNNRecipe
        >>> with new_run_folder(out := Path(tempfile.mkdtemp()), "demo", "textcnn") as writer:
        ...     writer.write_recipe(TextCNNRecipe()); writer.write_classes(["neg", "pos"])
        ...     (writer.path / MODEL_FILE).touch()  # only checked for, with model=False
        >>> run = load_run(out / "demo", model=False)
        >>> run.kind, run.class_names, run.model
        ('textcnn', ['neg', 'pos'], None)
    """
    from tlkit.recipes import kind_of, load_recipe

    folder = check_run_folder(path)
    recipe = load_recipe(folder / RECIPE_FILE)
    metrics_file = folder / METRICS_FILE
    return Run(
        path=folder,
        kind=kind_of(recipe),
        recipe=recipe,
        class_names=[str(name) for name in read_json(folder / CLASSES_FILE)],
        metrics=read_json(metrics_file) if metrics_file.is_file() else {},
        model=load_keras_file(folder / MODEL_FILE) if model else None,
        history=_read_csv(folder / HISTORY_FILE),
        folds=_read_csv(folder / FOLDS_FILE),
    )


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"'{path}' is damaged ({str(error).strip().splitlines()[0]}); restore "
                        "it or train the run again") from error


def load_keras_file(path: str | Path) -> Any:
    """Load a ``.keras`` file written by tlkit (image or text run) for inference.

    Example:
        >>> import keras, tempfile
        >>> path = Path(tempfile.mkdtemp()) / MODEL_FILE
        >>> keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
        >>> load_keras_file(path).output_shape
        (None, 2)
    """
    import keras

    import tlkit.models.textcnn  # noqa: F401 - registers the text model's custom layers
    from tlkit.devices import use_gpus

    use_gpus(None)  # memory growth on before the model lands on a GPU: a server shares it
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # Keras says "File not found" for a file that is there but is not a zip archive
        raise UserError(f"'{path}' is not a .keras zip archive; it is damaged: train the run "
                        "again")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as error:
        if "Lambda" in str(error):  # Keras refuses code in safe mode; tlkit never runs it
            raise UserError(f"'{path}' holds a Lambda layer with Python code; tlkit loads "
                            "models in safe mode and will not run code from a file") from error
        raise UserError(f"'{path}' is not a readable .keras model "
                        f"({str(error).strip().splitlines()[0]}); it is damaged: train the run "
                        "again") from error
