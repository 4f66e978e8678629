"""A run's saved model, opened for inference: tlkit's custom layers known, GPUs shared.

The run folder (``tlkit.runs``) reads everything else; opening ``model.keras`` needs Keras,
the text model's custom layers and the GPUs' memory growth, which belong above it.

Example:
    >>> load_run("no/such/run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    tlkit.errors.UserError: run folder 'no/such/run' does not exist; ...
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from tlkit.errors import UserError
from tlkit.runs import MODEL_FILE, Run, read_run


def load_run(path: str | Path, model: bool = True) -> Run:
    """Open a finished run of any kind; ``model=False`` skips loading the Keras model.

    Example:
        >>> import tempfile
        >>> from tlkit.recipes import TextCNNRecipe
        >>> from tlkit.runs import new_run_folder
        >>> with new_run_folder(out := Path(tempfile.mkdtemp()), "demo", "textcnn") as writer:
        ...     writer.write_recipe(TextCNNRecipe()); writer.write_classes(["neg", "pos"])
        ...     (writer.path / MODEL_FILE).touch()  # only checked for, with model=False
        >>> run = load_run(out / "demo", model=False)
        >>> run.kind, run.class_names, run.model
        ('textcnn', ['neg', 'pos'], None)
    """
    run = read_run(path)
    if model:
        run.model = load_keras_file(run.path / MODEL_FILE)
    return run


def load_keras_file(path: str | Path) -> Any:
    """Load a ``.keras`` file written by tlkit (image or text run) for inference.

    GPU memory growth is turned on first: a server or a notebook shares the card.

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
