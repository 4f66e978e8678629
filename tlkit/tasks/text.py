"""Text classification, one label per sentence: the ``textcnn`` kind of run (Kim's CNN).

Inputs are sentences; the saved model takes raw strings (its tokenizer inside), so the
pipeline only leaves out empty texts. Formats that cannot carry the tokenizer (TFLite,
ONNX) take token ids made with the run's ``vocabulary.json``.

Example:
    >>> TextTask().gather_inputs(None, ["a fine film"])
    ['a fine film']
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import UserError
from tlkit.runs import PREDICTIONS_FILE, VOCABULARY_FILE
from tlkit.tasks.base import PREDICT_BATCH, Task

if TYPE_CHECKING:
    import pandas as pd

EMPTY = "empty text: nothing to classify"


class TextTask(Task):
    """Single-label sentence classification with Kim's CNN (recipe kind ``textcnn``).

    Example:
        >>> task = TextTask()
        >>> task.name, task.explain_methods, task.gallery
        ('textcnn', ('ngrams', 'saliency'), 'sentences')
    """

    name = "textcnn"
    noun = "sentence"
    inputs_hint = "sentences in quotes, or --data FILE"
    explain_methods = ("ngrams", "saliency")
    explainer = "sentences"
    gallery = "sentences"
    reference_file = PREDICTIONS_FILE
    reference_column = "input"

    def read_labelled(self, run: Any, data: Any, columns: dict[str, str | None]
                      ) -> pd.DataFrame:
        """``input, label`` rows of a table, class files, or a folder of split tables (its
        test table).

        Example:
            >>> from tlkit.recipes import TextCNNRecipe
            >>> from tlkit.runs import Run
            >>> run = Run(Path("r"), "textcnn", TextCNNRecipe(), ["neg", "pos"], {})
            >>> import pandas as pd
            >>> TextTask().read_labelled(run, pd.DataFrame({"text": ["ok"], "label": ["pos"]}),
            ...                          {}).to_dict("records")
            [{'input': 'ok', 'label': 'pos'}]
        """
        import pandas as pd

        from tlkit.data.labels import LabelFormat
        from tlkit.data.text import read_text_table

        recipe = run.recipe
        given = {key: value for key, value in columns.items() if value is not None}
        table = read_text_table(_test_table(data), given.get("text_column", recipe.text_column),
                                given.get("label_column", recipe.label_column),
                                given.get("encoding", recipe.encoding), LabelFormat.of(recipe))
        return pd.DataFrame({"input": table["text"], "label": table["label"]})

    def gather_inputs(self, run: Any, inputs: Sequence[str]) -> list[str]:
        """The sentences as given; an image file given to a text run is refused."""
        from tlkit.data.images import IMAGE_EXTENSIONS

        for item in inputs:
            if Path(item).suffix.lower() in IMAGE_EXTENSIONS and Path(item).is_file():
                raise UserError(f"'{item}' is an image file; this is a text run (it reads "
                                "sentences, or --input FILE with one per line)")
        return list(inputs)

    def file_inputs(self, run: Any, path: Path, column: str | None, encoding: str
                    ) -> list[str]:
        """A CSV/TSV's ``column`` (default the recipe's text column), or a file's lines."""
        from tlkit.data.tables import decode_file, is_table_file, read_table, require_columns

        if is_table_file(path):
            column = column or run.recipe.text_column
            frame = read_table(path, encoding)
            require_columns(frame, {column: "--column"}, f"'{path}'")
            return frame[column].tolist()
        return [line for line in decode_file(path, encoding).split("\n") if line.strip()]

    def batches(self, model: Any, items: Sequence[str]) -> Iterator[tuple[np.ndarray, Any]]:
        """Batches of the non-empty texts as strings (the model tokenizes them itself)."""
        import tensorflow as tf

        rows = np.array([i for i, text in enumerate(items) if str(text).strip()], dtype="int64")
        for start in range(0, len(rows), PREDICT_BATCH):
            chunk = rows[start:start + PREDICT_BATCH]
            yield chunk, tf.constant([str(items[i]) for i in chunk], dtype=tf.string)

    def failure(self, item: str) -> str:
        """Only empty texts are left out of ``batches``."""
        return EMPTY

    def exported_model(self, run: Any, fmt: str) -> tuple[Any, Any, str]:
        """The string model for a SavedModel; its inner token-id model for TFLite and ONNX,
        which cannot carry the tokenizer."""
        import keras
        import tensorflow as tf

        model = run.model
        if fmt == "savedmodel":
            return model, tf.TensorSpec((None,), tf.string, name="text"), "text"
        from tlkit.data.text import Vocabulary

        vocabulary = Vocabulary.load(run.path / VOCABULARY_FILE)
        (ids_model,) = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        spec = tf.TensorSpec((None, vocabulary.max_length), tf.int32, name="token_ids")
        return ids_model, spec, "token_ids"

    def export_files(self, run: Any, takes: str, folder: Path) -> dict[str, Any]:
        """A token-id export carries ``vocabulary.json`` and how to cut strings into tokens."""
        if takes != "token_ids":
            return {}
        shutil.copyfile(run.path / VOCABULARY_FILE, folder / VOCABULARY_FILE)
        return {"vocabulary": VOCABULARY_FILE, "tokenizer": tokenizer_spec(run.path)}

    def export_batches(self, run: Any, items: Sequence[str], takes: str
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The texts ``probabilities`` takes, as strings or as the run's token ids."""
        vocabulary = None
        if takes == "token_ids":
            from tlkit.data.text import Vocabulary

            vocabulary = Vocabulary.load(run.path / VOCABULARY_FILE)
        for rows, texts in self.batches(run.model, items):
            strings = np.array([t.decode("utf-8") for t in texts.numpy()], dtype=object)
            yield rows, strings if vocabulary is None else _token_ids(vocabulary, strings)

    def check_explain_inputs(self, inputs: Sequence[str], data: str | Path | None,
                             method: str) -> None:
        """Sentences (never paths) or ``--data`` for n-grams per class, not both.

        Example:
            >>> TextTask().check_explain_inputs(["cat.jpg"], None, "ngrams")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tlkit.errors.UserError: 'cat.jpg' is an image file or folder; a text run explains ...
        """
        from tlkit.data.images import IMAGE_EXTENSIONS

        for item in inputs:
            if not item.strip():
                raise UserError("an empty sentence has nothing to explain; give words in "
                                "quotes")
            # Caught here even when the file is missing: a path is never meant as a sentence.
            if Path(item).suffix.lower() in IMAGE_EXTENSIONS or Path(item).is_dir():
                raise UserError(f"'{item}' is an image file or folder; a text run explains "
                                "sentences (in quotes), or a file of them with --data")
        if data is None:
            return
        if inputs:
            raise UserError("give sentences or --data FILE, not both")
        if method != "ngrams":
            raise UserError("--data ranks n-grams per class over a dataset (method ngrams); "
                            f"explain single sentences with --method {method}")

    def request_inputs(self, request: Any, folder: Path, allow: Path | None
                       ) -> tuple[list[str], list[str | None]]:
        """The sentences, ``{"b64": ...}`` ones decoded, and an error or None for each.

        Example:
            >>> from tlkit.serve import Request
            >>> TextTask().request_inputs(Request(["a", "%"], encoded=frozenset({1})),
            ...                           Path("."), None)
            (['a', ''], [None, 'input 1 is not base64 of UTF-8 text'])
        """
        texts: list[str] = []
        errors: list[str | None] = []
        for i, item in enumerate(request.inputs):
            error = None
            if i in request.encoded:
                try:
                    item = base64.b64decode(item, validate=True).decode("utf-8")
                except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
                    item, error = "", f"{request.word} {i} is not base64 of UTF-8 text"
            texts.append(item)
            errors.append(error)
        return texts, errors


def _test_table(data: Any) -> Any:
    """A folder of split tables is evaluated on its test table; other data as it is."""
    from tlkit.data.tables import split_tables

    if isinstance(data, list) or not isinstance(data, str | Path) or not Path(data).is_dir():
        return data
    tables = split_tables(data)
    if tables and "test" not in tables:
        raise UserError(f"folder '{data}' holds {', '.join(p.name for p in tables.values())} "
                        "but no test table; pass --data the file to evaluate on")
    return tables.get("test", data)


def tokenizer_spec(run_path: Path) -> dict[str, Any]:
    """How a text run cuts strings into tokens, for runtimes that must do it themselves.

    Apply ``rules`` (RE2 / Python ``re`` patterns; the ``lower`` tokenizer's ``\\pL`` classes
    need the ``regex`` package in Python) in order, lower-case as ``lower`` says (``ascii``
    after the rules, ``unicode`` before them), strip, split on spaces, then look tokens up
    in ``vocabulary.json`` (unknown: 1), cut to ``max_length`` and pad with 0.

    Example:
        >>> import tempfile
        >>> from tlkit.data.text import build_vocabulary
        >>> folder = Path(tempfile.mkdtemp())
        >>> build_vocabulary([["a", "film"]], "kim", max_length=20).save(folder / VOCABULARY_FILE)
        >>> {key: value for key, value in tokenizer_spec(folder).items() if key != "rules"}
        {'name': 'kim', 'lower': 'ascii', 'max_length': 20}
    """
    from tlkit.data.text import Vocabulary, get_tokenizer

    vocabulary = Vocabulary.load(Path(run_path) / VOCABULARY_FILE)
    row = get_tokenizer(vocabulary.tokenizer)
    return {"name": row.name, "rules": [list(rule) for rule in row.rules], "lower": row.lower,
            "max_length": vocabulary.max_length}


def _token_ids(vocabulary: Any, texts: np.ndarray) -> np.ndarray:
    from tlkit.data.text import tokenize

    return vocabulary.encode(tokenize([str(t) for t in texts], vocabulary.tokenizer))
