"""The run folder, shared by every kind of run: written so it is never half there, and loaded.

A run is built in a hidden ``.NAME.partial`` folder next to its final place and renamed when
everything is written. What a failure does to the partial folder:

- a resumed run keeps it, whatever the failure: it holds epochs that cost time, and the
  error says where it is and how to resume it again once the cause is fixed;
- a new run keeps it when interrupted (Ctrl-C, SIGTERM) or stopped by a full disk once it
  holds a completed epoch (a backup or a finished stage): ``--resume`` continues it after
  space is freed. A new run that fails otherwise, or on a full disk before its first
  epoch, removes it: it held nothing worth resuming.

A full disk is one line naming the path and its free space (``tlkit.files``).

While a process trains a run it holds an OS lock (``flock``) on ``.lock`` in the partial
folder, with its PID written in it; the kernel releases it when the process ends, however
it ends. A second process on that run (a resume, or a new run of that name) is refused
before any work; the lock file is removed when the folder is published.

Paths in ``recipe.yaml`` (and the image job's ``split.csv``) are stored absolute, so a run
folder works from any working folder; relative ones of older runs are read from the
working folder. Every kind writes::

    recipe.yaml  classes.json  model.keras  history.csv  metrics.json  predictions.csv
    report.html  report.md  report.json  (and the report's figures)
    checkpoints/best.weights.h5  logs/ (TensorBoard)

plus what is its own (image: ``split.csv``; text: ``vocabulary.json``; ``folds.csv`` with
``folds/<k>/`` under cross-validation). Every file name is defined here once; ``RunWriter``
writes each file and ``read_run`` reads a finished run back (the recipe's ``kind`` says
which job made it). Opening its model is the model layer's (``tlkit.models.saved``): this
module imports neither Keras nor the devices, workers or models above it.

Example:
    >>> check_run_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tlkit.errors.UserError: run name 'a/b' must be one folder name (no '/', ...
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import UserError
from tlkit.files import disk_full_error, is_disk_full, remove, replacing, write_text

if TYPE_CHECKING:  # pandas loads only where a table is read: file names serve --help checks
    import pandas as pd

# The files of a run folder (module docstring), each named here and nowhere else.
MODEL_FILE = "model.keras"
RECIPE_FILE = "recipe.yaml"
CLASSES_FILE = "classes.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
PREDICTIONS_FILE = "predictions.csv"
SPLIT_FILE = "split.csv"  # image runs: every image, its label and split
VOCABULARY_FILE = "vocabulary.json"  # text runs: tokens by id, tokenizer, length
FOLDS_FILE = "folds.csv"  # cross-validated runs: one row per fold
FOLDS_FOLDER = "folds"  # ... and each fold's training files in folds/<k>/
LOGS_FOLDER = "logs"  # TensorBoard
CACHE_FOLDER = "cache"  # a run's own feature cache, removed when training ends
# What training keeps while it runs (tlkit.train.checkpoints), for a resume.
CHECKPOINTS_FOLDER = "checkpoints"
BEST_FILE = "best.weights.h5"
STAGE_BEST = "stage-best.weights.h5"
PROGRESS_FILE = "progress.json"
BACKUP_FOLDER = "backup"
LATEST_FILE = "latest"  # in backup/: names the last complete epoch's backup
PARTIAL_SUFFIX = ".partial"
LOCK_FILE = ".lock"
# Recipe fields that name files or folders: stored absolute in the run's recipe.yaml.
PATH_FIELDS = ("data", "dev", "test", "vectors", "weights", "cache_dir")

# The run locks this process holds: the partial folder's real path -> the locked file.
_HELD: dict[str, int] = {}


class RunKept(UserError):
    """A failure after which the unfinished run is kept as it is, its message saying how to
    resume it (a multi-worker run whose peer stopped: ``tlkit.train.workers``).

    Example:
        >>> isinstance(RunKept("worker 1 stopped"), UserError)
        True
    """


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


def check_run_name(name: str, what: str = "run") -> str:
    """``name`` if it can name one run (or report) folder, else a UserError.

    Example:
        >>> check_run_name("shapes-v2")
        'shapes-v2'
    """
    if (not name or "/" in name or "\\" in name or name in (".", "..")
            or name.startswith(".")):
        raise UserError(f"{what} name '{name}' must be one folder name (no '/', not '.' or '..', "
                        "not starting with '.'); choose another --name")
    return name


def check_destination(out: str | Path, name: str, resume: bool = False) -> Path:
    """The final path ``out/name`` of a new (or resumed) run, checked before any work starts.

    A run another process trains (it holds the lock) is refused, naming that process; a
    resume takes the lock itself, for as long as this process lives (``releasing``).

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
    holder = run_holder(partial)
    if holder:
        raise UserError(f"run '{name}' is being trained by {holder} (in {partial}); wait for "
                        f"it to finish, or stop it and continue it with --resume {final}")
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
    if resume:
        lock_run(partial, name)
    return final


def run_holder(partial: Path) -> str | None:
    """``process PID`` of another process training the run in ``partial``; None if none is.

    Looking takes the lock for an instant (``flock`` has no test), so ``lock_run`` retries.

    Example:
        >>> import tempfile
        >>> print(run_holder(Path(tempfile.mkdtemp())))  # no .lock file: nobody trains it
        None
    """
    if os.path.realpath(partial) in _HELD:
        return None
    try:
        handle = os.open(partial / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
        return f"process {pid}" if pid.isdigit() else "another process"
    finally:
        os.close(handle)  # closing also drops the lock taken to look
    return None


def lock_run(partial: Path, name: str) -> None:
    """Hold the lock of the run in ``partial`` until this process ends (or ``unlock_run``).

    Example:
        >>> import tempfile
        >>> lock_run(folder := Path(tempfile.mkdtemp()), "demo")
        >>> (folder / LOCK_FILE).read_text() == f"{os.getpid()}\\n"
        True
        >>> unlock_run(folder)
    """
    key = os.path.realpath(partial)
    if key in _HELD:
        return
    try:
        handle = os.open(partial / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(partial, "the unfinished run in it is unchanged") from error
        raise
    for _ in range(5):
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.05)  # another process may only be looking (run_holder)
    else:
        os.close(handle)
        holder = run_holder(partial) or "another process"
        raise UserError(f"run '{name}' is being trained by {holder}; wait for it to finish, "
                        "or stop it and --resume")
    _HELD[key] = handle
    with suppress(OSError):  # a full disk: the lock holds all the same, without the PID in it
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())


@contextmanager
def releasing(final: Path) -> Iterator[None]:
    """Release this process's lock of the run ``final`` when the block ends, however it ends.

    A resume takes the lock in its checks, before TensorFlow loads; a failure between them
    and the run folder must not leave it held for the rest of a Python session.

    Example:
        >>> with releasing(Path("runs/demo")):
        ...     pass
    """
    try:
        yield
    finally:
        unlock_run(partial_path(final))


def unlock_run(partial: Path) -> None:
    """Release the run lock this process holds on ``partial`` (nothing if it holds none).

    Example:
        >>> unlock_run(Path("runs/.never-locked.partial"))
    """
    handle = _HELD.pop(os.path.realpath(partial), None)
    if handle is not None:
        os.close(handle)


def _check_creatable(out: Path) -> None:
    """Make the missing folders of ``out`` and remove them again, or say why they cannot be.

    Asking ``os.access`` of the nearest existing folder is not enough: it answers yes for
    root under /proc, where no folder can be made, and the run would then fail only after
    building its model. Other processes may check or use the same folders at once (the
    workers of one multi-worker run do): one made meanwhile is theirs, and is left alone.
    """
    made: list[Path] = []
    try:
        for folder in reversed([p for p in (out, *out.absolute().parents) if not p.exists()]):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # another process made it a moment ago
            made.append(folder)
    except OSError as error:
        raise UserError(f"cannot write run folders under '{out}' ({error.strerror}); pass "
                        "another --out") from error
    finally:
        for folder in reversed(made):
            with suppress(OSError):  # another process has put its run in it meanwhile
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
        """The resolved recipe with absolute paths, so the run can be repeated from its
        folder alone, from any working folder. A resume finds it written already."""
        from tlkit.recipes import dump_recipe

        path, text = self.path / RECIPE_FILE, dump_recipe(stored_paths(recipe))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text(path, text)

    def write_classes(self, class_names: list[str]) -> None:
        """Class names in id order (``classes.json``)."""
        self.write_json(CLASSES_FILE, list(class_names))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """The run's numbers (``metrics.json``)."""
        self.write_json(METRICS_FILE, metrics)

    def write_predictions(self, frame: pd.DataFrame) -> None:
        """One row per held-out input (``predictions.csv``)."""
        self.write_table(PREDICTIONS_FILE, frame)

    def write_history(self, frame: pd.DataFrame) -> None:
        """One row per epoch (``history.csv``; training writes it epoch by epoch)."""
        self.write_table(HISTORY_FILE, frame)

    def write_split(self, frame: pd.DataFrame) -> None:
        """Every image with its label and split (``split.csv``), read back by a resume."""
        self.write_table(SPLIT_FILE, frame)

    def write_folds(self, frame: pd.DataFrame) -> None:
        """One row per fold of a cross-validated run (``folds.csv``)."""
        self.write_table(FOLDS_FILE, frame)

    def write_vocabulary(self, vocabulary: Any) -> None:
        """A text run's vocabulary (``vocabulary.json``): its ``to_dict()``, as JSON."""
        write_text(self.path / VOCABULARY_FILE,
                   json.dumps(vocabulary.to_dict(), ensure_ascii=False))

    def fold(self, k: int) -> Path:
        """The folder of fold ``k`` of a cross-validated run (``folds/<k>``), made."""
        folder = self.path / FOLDS_FOLDER / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_table(self, name: str, frame: pd.DataFrame) -> None:
        """A CSV table, written beside and renamed."""
        with replacing(self.path / name) as partial:
            frame.to_csv(partial, index=False)

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


def stored_paths(recipe: Any) -> Any:
    """``recipe`` with the paths it names made absolute (those that exist, and ``cache_dir``).

    Example:
        >>> from tlkit.recipes import TextCNNRecipe
        >>> stored = stored_paths(TextCNNRecipe(data="tlkit", test="no/such.csv"))
        >>> stored.data == os.path.abspath("tlkit"), stored.test  # what is not there: as given
        (True, 'no/such.csv')
    """
    def absolute(value: Any, name: str) -> Any:
        if isinstance(value, list):
            return [absolute(item, name) for item in value]
        if not isinstance(value, str) or value in ("imagenet", "none"):
            return value
        return os.path.abspath(value) if name == "cache_dir" or Path(value).exists() else value

    names = {each.name for each in dataclasses.fields(recipe)}
    return dataclasses.replace(recipe, **{name: absolute(getattr(recipe, name), name)
                                          for name in PATH_FIELDS if name in names})


def holds_epochs(partial: Path) -> bool:
    """Whether an unfinished run folder (or a fold of it) has a completed epoch to resume.

    Example:
        >>> import tempfile
        >>> holds_epochs(Path(tempfile.mkdtemp()))
        False
    """
    return (any(partial.glob(f"**/{BACKUP_FOLDER}/{LATEST_FILE}"))
            or any(partial.glob(f"**/{PROGRESS_FILE}")))


def _full_disk_path(error: BaseException, folder: Path) -> Path:
    """The file a full disk stopped, if outside ``folder`` (a cache elsewhere), else ``folder``."""
    seen: BaseException | None = error
    while seen is not None:
        name = getattr(seen, "filename", None)
        if isinstance(name, (str, Path)):
            path = Path(name).absolute()
            if folder.absolute() not in (path, *path.parents):
                return path
        seen = seen.__cause__ or seen.__context__
    return folder


def _run_failed(error: BaseException, partial: Path, final: Path, command: str,
                resume: bool) -> BaseException | None:
    """Keep or remove a failed run's partial folder (the module docstring's rule); return
    the error to raise instead of ``error``, or None to raise ``error`` itself."""
    again = f"`{command} --resume {final}`"
    if isinstance(error, KeyboardInterrupt):
        print(f"interrupted: the unfinished run is kept in {partial}; continue it with {again}",
              file=sys.stderr, flush=True)
        return None
    if isinstance(error, RunKept):
        return None
    full = is_disk_full(error)
    where = _full_disk_path(error, partial)
    if resume or (full and holds_epochs(partial)):
        kept = f"the unfinished run is kept in {partial}"
        if full:
            return disk_full_error(where, f"{kept} (resume it with {again})")
        if isinstance(error, UserError):
            return UserError(f"{error}; {kept}: resume it with {again} once that is fixed")
        error.add_note(f"{kept}: resume it with {again} once this is fixed")
        return None
    remove(partial)  # nothing in it to resume; the error names the run it would have been
    return disk_full_error(final if where == partial else where) if full else None


@contextmanager
def new_run_folder(out: str | Path, name: str, kind: str = "image", resume: bool = False
                   ) -> Iterator[RunWriter]:
    """Yield a writer into a partial folder; publish it as ``out/name`` only on success.

    The partial folder is locked while the run lasts. What a failure keeps is the module
    docstring's rule: an interrupt (Ctrl-C, or SIGTERM through the CLI), ``RunKept`` and
    any failure of a resumed run keep it, so that ``--resume`` can continue it. With
    ``resume`` the partial folder of an earlier, killed run is written into again.

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
    lock_run(partial, name)  # before the try: a run another process locked is not ours
    try:
        try:
            yield RunWriter(partial, final)
        except BaseException as error:
            instead = _run_failed(error, partial, final, KIND_COMMANDS[kind], resume)
            if instead is None:
                raise
            raise instead from error
        os.replace(partial, final)
        (final / LOCK_FILE).unlink(missing_ok=True)  # after the rename: no unlocked moment
    finally:
        unlock_run(partial)


def unfinished_run(path: str | Path, kind: str, under: str | Path | None = None
                   ) -> tuple[Any, Path, str]:
    """(recipe, out, name) of the unfinished run at ``path`` (``out/NAME`` or its partial).

    ``under`` is the folder this process keeps its copy of the run in, when not ``out``
    (a non-chief worker's own: ``tlkit.train.workers``).

    Example:
        >>> unfinished_run("runs/none-such", "image")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: there is no unfinished run 'none-such' in 'runs' to resume ...
    """
    from tlkit.recipes import KIND_COMMANDS, kind_of, load_recipe

    path = Path(path)
    name = path.name
    if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
        name = name[1:-len(PARTIAL_SUFFIX)]
    own = path.parent if under is None else Path(under)
    check_destination(own, name, resume=True)  # locks the run for this process
    partial = partial_path(own / name)
    try:
        if not (partial / RECIPE_FILE).is_file():
            raise UserError(f"the unfinished run '{name}' stopped before it wrote its recipe; "
                            f"remove it with `tlkit runs {path.parent} --remove-unfinished` "
                            "and start again")
        recipe = load_recipe(partial / RECIPE_FILE)
        if kind_of(recipe) != kind:
            raise UserError(f"'{path}' is an unfinished {kind_of(recipe)} run; resume it with "
                            f"`{KIND_COMMANDS[kind_of(recipe)]} --resume {path}`")
    except BaseException:
        unlock_run(partial)
        raise
    return recipe, path.parent, name


def list_runs(folder: str | Path) -> pd.DataFrame:
    """One row per run folder under ``folder``: name, status, kind, accuracies, path.

    Example:
        >>> list_runs("no/such/folder").empty
        True
    """
    import pandas as pd

    rows = []
    base = Path(folder)
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        unfinished = path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)
        if not path.is_dir() or not (unfinished or (path / RECIPE_FILE).is_file()):
            continue
        metrics_file = path / METRICS_FILE
        metrics = read_json(metrics_file) if metrics_file.is_file() and not unfinished else {}
        status = "finished"
        if unfinished:  # a run another process trains is neither to resume nor to remove
            status = "training" if run_holder(path) else "unfinished"
        rows.append({"name": path.name[1:-len(PARTIAL_SUFFIX)] if unfinished else path.name,
                     "status": status,
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
    """Delete every unfinished run folder under ``folder`` that no process trains; returns
    what was removed.

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
    write_text(path, json.dumps(data, indent=2) + "\n")


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


def read_run(path: str | Path) -> Run:
    """A finished run of any kind as its folder holds it, without its model (no Keras).

    ``tlkit.models.saved.load_run`` also opens the model.

    Example:
        >>> import tempfile
        >>> from tlkit.recipes import TextCNNRecipe
        >>> with new_run_folder(out := Path(tempfile.mkdtemp()), "demo", "textcnn") as writer:
        ...     writer.write_recipe(TextCNNRecipe()); writer.write_classes(["neg", "pos"])
        ...     (writer.path / MODEL_FILE).touch()  # only checked for here
        >>> run = read_run(out / "demo")
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
        history=_read_csv(folder / HISTORY_FILE),
        folds=_read_csv(folder / FOLDS_FILE),
    )


def read_split(folder: Path) -> pd.DataFrame | None:
    """An image run's ``split.csv`` (path, label, split; all text), None if it has none.

    Example:
        >>> import tempfile
        >>> print(read_split(Path(tempfile.mkdtemp())))
        None
    """
    return _read_csv(folder / SPLIT_FILE, dtype=str, keep_default_na=False)


def _read_csv(path: Path, **options: Any) -> pd.DataFrame | None:
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"'{path}' is damaged ({str(error).strip().splitlines()[0]}); restore "
                        "it or train the run again") from error
