"""Use a finished run of either kind: predict labels for new inputs.

The saved model takes raw inputs (RGB 0-255 images, or strings), so prediction only reads
inputs and calls it. An input that cannot be read (an undecodable image) becomes a row with
an ``error`` and the rest goes on.

Example:
    >>> predict("runs/trec", ["How far is the moon ?"], top_k=2)  # doctest: +SKIP
                        input label_1  prob_1 label_2  prob_2
    0  How far is the moon ?     NUM  0.9712     LOC  0.0151
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.images import IMAGE_EXTENSIONS
from tlkit.data.tables import decode_file, is_table_file, read_table, require_columns
from tlkit.errors import UserError
from tlkit.runs import MODEL_FILE, Run, load_keras_file, load_run

# Keras's default batch. For VGG16 at 224 on this 2-core CPU, 64 ran at about 80% of 32's
# rate (activations of 64 images overflow the caches); 16 and 32 were alike.
PREDICT_BATCH = 32
# Inputs past this many get a progress bar (when a terminal shows it).
PROGRESS_FROM = 1000


def open_run(run: Run | str | Path, kind: str | None = None, model: bool = True) -> Run:
    """A finished run, its model loaded unless ``model=False``; ``kind`` (if given) must match.

    Example:
        >>> open_run("runs/shapes", kind="textcnn")  # doctest: +SKIP
        Traceback (most recent call last):
        tlkit.errors.UserError: 'runs/shapes' is an image run, not a textcnn run; ...
    """
    run = run if isinstance(run, Run) else load_run(run, model=False)
    if kind is not None and run.kind != kind:
        raise UserError(f"'{run.path}' is an {run.kind} run, not a {kind} run; use a folder "
                        "from the matching training command")
    if model and run.model is None:
        run.model = load_keras_file(run.path / MODEL_FILE)
    return run


def gather_inputs(run: Run, inputs: Sequence[str], input_file: str | Path | None = None,
                  column: str | None = None, encoding: str = "utf-8") -> list[str]:
    """The run's inputs: image files and folders, or sentences; plus those of ``input_file``.

    ``input_file`` is a CSV/TSV (``column``, default the recipe's path or text column) or,
    for text runs, a file with one sentence per line. CSV image paths are relative to the
    CSV's folder.

    Example:
        >>> import tempfile
        >>> lines = Path(tempfile.mkdtemp()) / "more.txt"
        >>> _ = lines.write_text("second one\\n\\nthird one\\n")
        >>> gather_inputs(Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {}),
        ...               ["a fine film"], lines)
        ['a fine film', 'second one', 'third one']
    """
    items = _image_inputs(inputs) if run.kind == "image" else _text_inputs(inputs)
    if input_file is not None:
        items += _file_inputs(run, Path(input_file), column, encoding)
    if not items:
        raise UserError("no inputs given: pass them as arguments or --input FILE")
    return items


def _image_inputs(inputs: Sequence[str]) -> list[str]:
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += [str(p) for p in folder_images(path)]
        elif path.is_file() and is_table_file(path):
            paths += _csv_image_paths(path, "path")
        elif path.is_file():
            paths.append(str(path))
        else:
            raise UserError(f"'{item}' is not an image file, a folder or a CSV of paths; this "
                            "is an image run (text goes to a text run)")
    return paths


def folder_images(folder: Path) -> list[Path]:
    """The images under ``folder``; files in formats tlkit does not read get one warning.

    The warning (on stderr) is the one training gives for the same files (HEIC, AVIF, ...).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.heic"): (folder / name).touch()
        >>> [p.name for p in folder_images(folder)]  # and a warning about b.heic on stderr
        ['a.png']
    """
    # The walk and the warning are training's own (tlkit.data.images), so both say the same.
    from tlkit.data.images import (
        OTHER_IMAGE_EXTENSIONS,
        _visible_files,
        _warn_other_formats,
        _with_suffixes,
    )

    files = _visible_files(folder)
    found = _with_suffixes(files, IMAGE_EXTENSIONS)
    others = _with_suffixes(files, OTHER_IMAGE_EXTENSIONS)
    if not found:
        suffixes = ", ".join(sorted({p.suffix.lower() for p in others}))
        unread = (f"; its {len(others)} {suffixes} file(s) are in formats tlkit does not "
                  "read: convert them to .jpg or .png") if others else ""
        raise UserError(f"folder '{folder}' has no images ({', '.join(IMAGE_EXTENSIONS)})"
                        f"{unread}")
    _warn_other_formats(others)
    return found


def _text_inputs(inputs: Sequence[str]) -> list[str]:
    for item in inputs:
        if Path(item).suffix.lower() in IMAGE_EXTENSIONS and Path(item).is_file():
            raise UserError(f"'{item}' is an image file; this is a text run (it reads "
                            "sentences, or --input FILE with one per line)")
    return list(inputs)


def _file_inputs(run: Run, path: Path, column: str | None, encoding: str) -> list[str]:
    if run.kind == "image":
        return _csv_image_paths(path, column or run.recipe.path_column)
    if is_table_file(path):
        column = column or run.recipe.text_column
        frame = read_table(path, encoding)
        require_columns(frame, {column: "--column"}, f"'{path}'")
        return frame[column].tolist()
    return [line for line in decode_file(path, encoding).split("\n") if line.strip()]


def _csv_image_paths(path: Path, column: str) -> list[str]:
    frame = read_table(path)
    require_columns(frame, {column: "--column"}, f"'{path}'")
    return [str(p if Path(p).is_absolute() else path.parent / p) for p in frame[column]]


def probabilities(run: Run, items: Sequence[str]) -> tuple[np.ndarray, list[str | None]]:
    """Class probabilities of each input, and an error (or None) for each.

    Rows with an error hold NaN.

    Example:
        >>> import keras
        >>> hashed = keras.Sequential([keras.Input((), dtype="string"),  # a stand-in text model
        ...                            keras.layers.Hashing(2, output_mode="one_hot")])
        >>> run = Run(Path("runs/sst2"), "textcnn", None, ["neg", "pos"], {}, model=hashed)
        >>> probs, errors = probabilities(run, ["a fine film", " "])
        >>> np.isnan(probs).any(axis=1).tolist(), errors
        ([False, True], [None, 'empty text: nothing to classify'])
    """
    # Keras writes progress to stdout, which carries the predictions (`tlkit predict > a.csv`).
    with contextlib.redirect_stdout(sys.stderr):
        if run.kind == "image":
            return _image_probabilities(run, list(items))
        result = _batched(run.model, np.array(list(items), dtype=object))
    empty = [None if str(text).strip() else "empty text: nothing to classify"
             for text in items]
    result[[e is not None for e in empty]] = np.nan
    return result, empty


def _image_probabilities(run: Run, paths: list[str]) -> tuple[np.ndarray, list[str | None]]:
    import keras

    from tlkit.data.images import decode_once, unreadable_reason
    from tlkit.train.fit import progress_verbosity

    result = np.full((len(paths), len(run.class_names)), np.nan, dtype="float32")
    predicted = np.zeros(len(paths), dtype=bool)
    verbose = progress_verbosity() if len(paths) >= PROGRESS_FROM else 0
    progress = keras.utils.Progbar(len(paths), verbose=verbose, unit_name="image")
    for rows, images in decode_once(paths, run.recipe.input_size, PREDICT_BATCH):
        result[rows] = run.model.predict_on_batch(images)
        predicted[rows] = True
        progress.add(len(rows))
    if not predicted.all():  # rows that failed count as done too (all done: already said)
        progress.update(len(paths), finalize=True)
    # Only the files that did not decode are read again, to say why in one line.
    errors = [None if done else unreadable_reason(path) or "could not be decoded as an image"
              for path, done in zip(paths, predicted, strict=True)]
    return result, errors


def _batched(model: Any, texts: np.ndarray) -> np.ndarray:
    """``model.predict`` in batches, with Keras's progress bar on long inputs."""
    import tensorflow as tf

    from tlkit.train.fit import progress_verbosity

    verbose = progress_verbosity() if len(texts) >= PROGRESS_FROM else 0
    data = tf.data.Dataset.from_tensor_slices(texts).batch(PREDICT_BATCH)
    return model.predict(data.prefetch(tf.data.AUTOTUNE), verbose=verbose)


def top_k_table(items: Sequence[str], probs: np.ndarray, errors: Sequence[str | None],
                class_names: Sequence[str], top_k: int) -> pd.DataFrame:
    """``input``, then ``label_1, prob_1, ..., label_k, prob_k`` and ``error`` per input.

    Example:
        >>> print(top_k_table(["x"], np.array([[0.2, 0.8]]), [None], ["a", "b"], 1).to_csv())
        ,input,label_1,prob_1,error
        0,x,b,0.8,
        <BLANKLINE>
    """
    if not 1 <= top_k <= len(class_names):
        raise UserError(f"--top-k {top_k}: choose between 1 and {len(class_names)} (the run's "
                        "number of classes)")
    table = pd.DataFrame({"input": list(items)})
    filled = np.nan_to_num(probs, nan=-1.0)
    order = np.argsort(-filled, axis=1, kind="stable")[:, :top_k]
    failed = np.array([e is not None for e in errors])
    for k in range(top_k):
        picked = order[:, k]
        table[f"label_{k + 1}"] = np.where(failed, "", np.array(class_names)[picked])
        table[f"prob_{k + 1}"] = np.round(probs[np.arange(len(items)), picked], 4)
    table["error"] = [e or "" for e in errors]
    return table


def predict(run: Run | str | Path, inputs: Sequence[str] = (), top_k: int = 1,
            input_file: str | Path | None = None, column: str | None = None,
            encoding: str = "utf-8", kind: str | None = None) -> pd.DataFrame:
    """Top-k labels and probabilities of a run's model for each input (either kind).

    ``kind`` (``image`` or ``textcnn``), if given, is the kind of run expected.

    Example:
        >>> predict("runs/shapes", ["datasets/shapes/circle"], top_k=2)  # doctest: +SKIP
    """
    run = open_run(run, kind, model=False)  # every mistake is answered before TensorFlow
    if not 1 <= top_k <= len(run.class_names):
        raise UserError(f"--top-k {top_k}: choose between 1 and {len(run.class_names)} (the "
                        "run's number of classes)")
    items = gather_inputs(run, inputs, input_file, column, encoding)
    run = open_run(run)
    probs, errors = probabilities(run, items)
    return top_k_table(items, probs, errors, run.class_names, top_k)
