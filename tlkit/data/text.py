"""Labelled sentences from CSV/TSV files, DataFrames or line files, ready for a text CNN.

Every source becomes one table with the columns ``text`` and ``label`` (labels as strings),
so tokenising, splitting and checking are written once. Tokenisers are rows of one table of
regular expressions that TensorFlow runs both here and inside the exported model, so
training and prediction cannot tokenise differently. The vocabulary comes from the training
split only.

Example:
    >>> table = read_text_table(pd.DataFrame({"text": ["a fine film", "a dull film"],
    ...                                       "label": ["pos", "neg"]}))
    >>> data = prepare_text_data(table, dev_fraction=0.0)
    >>> data.class_names, data.vocabulary.tokens[:3]
    (['neg', 'pos'], ['', '[UNK]', 'a'])
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tlkit.choices import TOKENIZERS, Tokenizer
from tlkit.data.labels import (
    CALIBRATION_SPLIT,
    TABLE_SEP,
    LabelFormat,
    calibration_holdout,
    check_split,
    holdout,
    iterative_kfold,
    label_matrix,
    label_strings,
    multi_label_classes,
    parse_label_sets,
)
from tlkit.data.tables import (
    as_labels,
    class_order,
    decode_file,
    existing_path,
    is_table_file,
    label_ids,
    read_table,
    require_columns,
    shown,
)
from tlkit.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import tensorflow as tf

    from tlkit.seeds import EpochClock

PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"
DEV_FRACTION = 0.1
# What messages call each split when the caller names no files.
SPLIT_WORDS = {"train": "training data", "dev": "dev data", "test": "test data"}
DEV_FIX = "pass a dev file or add training texts"  # what a dev split too small for needs
# The default cap on tokens per text. Kim's sentence datasets stay far below it (the longest
# text is 37 to 120 tokens); one runaway line (a whole file on one line) would otherwise set
# every batch it joins, and the exported model's input, to its length.
DEFAULT_MAX_LENGTH = 400


def get_tokenizer(name: str) -> Tokenizer:
    """The tokenizer row called ``name``.

    Example:
        >>> get_tokenizer("kim").lower
        'ascii'
    """
    if name not in TOKENIZERS:
        raise UserError(f"unknown tokenizer '{shown(name)}'; choose one of: "
                        f"{', '.join(TOKENIZERS)}")
    return TOKENIZERS[name]


def standardize(texts: tf.Tensor, tokenizer: str) -> tf.Tensor:
    """Apply a tokenizer's rewrites to a string tensor; tokens are then separated by spaces.

    This is the one implementation: ``tokenize`` and the exported string model both call it.

    Example:
        >>> import tensorflow as tf
        >>> standardize(tf.constant(["It's (fine)!"]), "kim").numpy()
        array([b"it 's ( fine ) !"], dtype=object)
    """
    import tensorflow as tf

    row = get_tokenizer(tokenizer)
    if row.lower == "unicode":
        texts = tf.strings.lower(texts, encoding="utf-8")
    for pattern, replacement in row.rules:
        texts = tf.strings.regex_replace(texts, pattern, replacement)
    if row.lower == "ascii":
        texts = tf.strings.lower(texts)
    return tf.strings.strip(texts)


def tokenize(texts: Sequence[str], tokenizer: str = "kim") -> list[list[str]]:
    """Token lists of ``texts``, exactly as the exported model will cut them.

    Example:
        >>> tokenize(["Don't panic, it's fine."], "kim")
        [['do', "n't", 'panic', ',', 'it', "'s", 'fine']]
    """
    import tensorflow as tf

    get_tokenizer(tokenizer)
    if not texts:
        return []
    tokens = tf.strings.split(standardize(tf.constant(list(texts), dtype=tf.string), tokenizer))
    return [[t.decode("utf-8") for t in row] for row in tokens.to_list()]


# ---------------------------------------------------------------------------------- reading


def read_text_table(source: str | Path | Sequence[str | Path] | pd.DataFrame,
                    text_column: str = "text", label_column: str = "label",
                    encoding: str = "utf-8", labels: LabelFormat | None = None
                    ) -> pd.DataFrame:
    """Read labelled sentences into a ``text, label`` table (labels as strings).

    ``source`` is a CSV/TSV file (``.csv``, ``.tsv``, ``.tab``) or DataFrame with the named
    columns; a folder of ``<class>.txt`` files with one sentence per line; or a list of line
    files, one per class, named as in Kim's data (``rt-polarity.pos``, ``rt-polarity.neg``:
    the suffix is the class; the stem when all suffixes are the same).

    Multi-label (``labels.multi``, ``LabelFormat.of(recipe)``): a table only (a class file
    is one label); each ``label`` is the text's label set joined by ``labels.TABLE_SEP`` in
    class order (from ``label_column`` or the 0/1 ``labels.columns``), an empty set allowed.

    Example:
        >>> read_text_table(["rt-polarity.pos", "rt-polarity.neg"])  # doctest: +SKIP
        >>> read_text_table(pd.DataFrame({"text": ["a", "b"], "label": [1, 0]})).label.tolist()
        ['1', '0']
        >>> read_text_table(pd.DataFrame({"text": ["a", "b"], "toxic": ["1", "0"],
        ...                               "insult": ["1", "1"]}),
        ...                 labels=LabelFormat(True, columns=("toxic", "insult"))).label.tolist()
        ['insult|toxic', 'insult']
    """
    labels = labels or LabelFormat()
    if isinstance(source, pd.DataFrame):
        return _table_from_frame(source, text_column, label_column, "DataFrame", labels)
    if isinstance(source, (str, Path)):
        path = existing_path(source)
        if labels.multi and not (path.is_file() and is_table_file(path)):
            raise _class_files_error(labels)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.txt") if p.is_file())
            if not files:
                raise UserError(f"folder '{path}' has no .txt files; put each class's "
                                "sentences in <class>.txt, one per line")
            return _table_from_line_files(files, [p.stem for p in files], encoding)
        if not is_table_file(path):
            raise UserError(f"'{path}' is not a .csv/.tsv file; for one file per class (Kim's "
                            "layout) pass all the class files, e.g. rt-polarity.pos "
                            "rt-polarity.neg")
        return _table_from_frame(read_table(path, encoding), text_column, label_column,
                                 f"'{path}'", labels)
    if len(source) == 1:  # e.g. one --data option collected into a list
        return read_text_table(source[0], text_column, label_column, encoding, labels)
    files = [existing_path(p) for p in source]
    if labels.multi:
        raise _class_files_error(labels)
    if not files:
        raise UserError("no data files given; pass a CSV/TSV file, a folder or class files")
    folders = [p for p in files if p.is_dir()]
    if folders:
        raise UserError(f"'{folders[0]}' is a folder; pass either one folder of <class>.txt "
                        "files or a list of class files")
    tables = [p for p in files if is_table_file(p)]
    if tables:
        raise UserError(f"'{tables[0]}' is a table and {len(files)} --data were given; pass one "
                        "CSV/TSV (it holds every class), or one plain-text file per class")
    suffixes = [p.suffix.lstrip(".") for p in files]
    names = suffixes if len(set(suffixes)) == len(files) and all(suffixes) else \
        [p.stem for p in files]
    if len(set(names)) < len(names):
        raise UserError(f"class files {', '.join(map(str, files))} do not have distinct "
                        "names; name them <name>.<class> or <class>.txt")
    return _table_from_line_files(files, names, encoding)


def _class_files_error(labels: LabelFormat) -> UserError:
    return UserError("one file per class cannot give a text several labels (its file is its "
                     "one label); for --multi-label pass a CSV/TSV with a text column and a "
                     f"label column holding the labels joined by '{labels.sep}' (e.g. "
                     f"toxic{labels.sep}insult), or 0/1 columns named with --label-columns")


def _table_from_frame(frame: pd.DataFrame, text_column: str, label_column: str,
                      source: str, labels: LabelFormat) -> pd.DataFrame:
    require_columns(frame, {text_column: "--text-column"} if labels.columns else
                    {text_column: "--text-column", label_column: "--label-column"}, source)
    texts = frame[text_column].fillna("").astype(str).to_numpy(dtype=object)
    label = (label_strings(frame, label_column, labels, source, "texts") if labels.multi
             else as_labels(frame[label_column]))
    return pd.DataFrame({"text": texts, "label": label})


def _table_from_line_files(files: list[Path], names: list[str], encoding: str) -> pd.DataFrame:
    texts: list[str] = []
    labels: list[str] = []
    for path, name in zip(files, names, strict=True):
        # Lines end at "\n" only: str.splitlines() would also cut at characters such as
        # U+0085, which Kim's latin-1 files have inside sentences.
        lines = [line.removesuffix("\r") for line in decode_file(path, encoding).split("\n")]
        if lines[-1] == "":
            lines.pop()
        texts += lines
        labels += [name] * len(lines)
    return pd.DataFrame({"text": pd.Series(texts, dtype=object),
                         "label": pd.Series(labels, dtype=object)})


# ------------------------------------------------------------------------------- vocabulary


@dataclass
class Vocabulary:
    """Tokens by id (0 padding, 1 out-of-vocabulary), the tokenizer and the sequence length.

    Example:
        >>> vocab = build_vocabulary([["a", "b", "a"]], "kim")
        >>> vocab.tokens, vocab.encode([["b", "z"]]).tolist()
        (['', '[UNK]', 'a', 'b'], [[3, 1, 0]])
    """

    tokens: list[str]
    tokenizer: str
    max_length: int

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokenized: Sequence[Sequence[str]]) -> np.ndarray:
        """Token lists -> ids, ``(n, max_length)`` int32, truncated and right-padded with 0."""
        index = {token: i for i, token in enumerate(self.tokens)}
        ids = np.zeros((len(tokenized), self.max_length), dtype="int32")
        for row, tokens in enumerate(tokenized):
            kept = [index.get(t, 1) for t in tokens[: self.max_length]]
            ids[row, : len(kept)] = kept
        return ids

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"tokenizer": self.tokenizer, "max_length": self.max_length,
                "tokens": self.tokens}

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (never pickle)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by ``save``.

        Example:
            >>> import os, tempfile
            >>> path = os.path.join(tempfile.mkdtemp(), "vocabulary.json")
            >>> build_vocabulary([["a", "b", "a"]], "kim-cased").save(path)
            >>> Vocabulary.load(path).tokens, Vocabulary.load(path).tokenizer
            (['', '[UNK]', 'a', 'b'], 'kim-cased')
        """
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            vocab = cls(tokens=list(data["tokens"]), tokenizer=str(data["tokenizer"]),
                        max_length=int(data["max_length"]))
        except FileNotFoundError as error:
            raise UserError(f"vocabulary file '{path}' does not exist") from error
        except OSError as error:
            raise UserError(f"cannot read vocabulary file '{path}': {error.strerror}") from error
        # ValueError covers bytes that are not UTF-8 (a pickle, say) and bad JSON.
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"'{path}' is not a tlkit vocabulary file "
                            f"({shown(error)[:200]})") from error
        if vocab.tokens[:2] != [PAD_TOKEN, OOV_TOKEN] or not all(
                isinstance(token, str) for token in vocab.tokens):
            raise UserError(f"vocabulary '{path}' must be a list of strings starting with the "
                            f"padding and '{OOV_TOKEN}' tokens")
        if vocab.max_length < 1:
            raise UserError(f"vocabulary '{path}' has max_length {vocab.max_length}; it must be "
                            "at least 1")
        get_tokenizer(vocab.tokenizer)
        return vocab


def build_vocabulary(tokenized: Sequence[Sequence[str]], tokenizer: str,
                     max_length: int | None = None, min_count: int = 1,
                     max_size: int | None = None) -> Vocabulary:
    """The vocabulary of the training token lists: most frequent first, ties alphabetical.

    ``max_length`` None takes the longest training text, up to ``DEFAULT_MAX_LENGTH``
    tokens; ``max_size`` counts the two special tokens.

    Example:
        >>> build_vocabulary([["b", "a", "b"]], "lower", max_length=5).tokens
        ['', '[UNK]', 'b', 'a']
    """
    counts = Counter(t for tokens in tokenized for t in tokens)
    counts.pop(PAD_TOKEN, None)
    counts.pop(OOV_TOKEN, None)
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max(max_size - 2, 0)]
    longest = max((len(t) for t in tokenized), default=1)
    if max_length is not None and max_length < 1:
        raise UserError(f"max length must be at least 1 token, got {max_length}")
    return Vocabulary([PAD_TOKEN, OOV_TOKEN, *words], tokenizer,
                      max_length or min(max(longest, 1), DEFAULT_MAX_LENGTH))


# --------------------------------------------------------------------------------- datasets


@dataclass
class TextSplit:
    """One split after tokenising: the texts kept, their tokens, label ids and token ids.

    Example:
        >>> split = TextSplit(["a b"], [["a", "b"]], np.array([0]), np.array([[2, 3, 0]]))
        >>> split.lengths.tolist()
        [2]
    """

    texts: list[str]
    tokens: list[list[str]]
    labels: np.ndarray  # int32 class ids; multi-label: (n, classes) float32 0/1 matrix
    ids: np.ndarray  # (n, max_length) int32, right-padded with 0

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per text after truncation."""
        return (self.ids != 0).sum(axis=1).astype("int32")


@dataclass
class TextData:
    """Everything a text run trains on: classes, vocabulary, and train/dev/test splits.

    With ``label_format.multi``, each split's ``labels`` is the (n, classes) float32 0/1
    matrix of its label sets (what a sigmoid head's binary cross-entropy is fitted to).

    Example:
        >>> table = read_text_table(pd.DataFrame({"text": ["good", "", "bad"],
        ...                                       "label": ["pos", "pos", "neg"]}))
        >>> data = prepare_text_data(table, dev_fraction=0.0)
        >>> data.class_names, data.skipped, data.splits["train"].ids.tolist()
        (['neg', 'pos'], {'train': 1}, [[3], [2]])
    """

    class_names: list[str]
    vocabulary: Vocabulary
    splits: dict[str, TextSplit]
    skipped: dict[str, int] = field(default_factory=dict)  # empty texts per split
    label_format: LabelFormat = field(default_factory=LabelFormat)


def check_text_tables(train: pd.DataFrame, test: pd.DataFrame | None = None,
                      dev: pd.DataFrame | None = None, *, dev_fraction: float = DEV_FRACTION,
                      labels: LabelFormat | None = None) -> None:
    """The checks of ``prepare_text_data`` that need no tokens, so a job makes them first.

    Blank texts, too few classes, test labels never trained on, a dev split that cannot be
    held out: answered before TensorFlow loads (tokenising needs it).

    Example:
        >>> one = pd.DataFrame({"text": ["a", "b"], "label": ["x", "x"]})
        >>> check_text_tables(one)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: ...
    """
    _check_before_tokenizing({"train": train, "dev": dev, "test": test}, dict(SPLIT_WORDS),
                             dev_fraction, labels or LabelFormat())


def prepare_text_data(train: pd.DataFrame, test: pd.DataFrame | None = None,
                      dev: pd.DataFrame | None = None, *, tokenizer: str = "kim",
                      max_length: int | None = None, min_count: int = 1,
                      max_vocabulary: int | None = None, dev_fraction: float = DEV_FRACTION,
                      seed: int = 42, names: dict[str, str] | None = None,
                      labels: LabelFormat | None = None, calibration_fraction: float = 0.0
                      ) -> TextData:
    """Tokenise, drop empty texts, split a dev set off if none is given, build the vocabulary.

    Tables are ``read_text_table`` results. Without ``dev``, a stratified ``dev_fraction``
    of ``train`` is held out (0 holds out nothing). The vocabulary and the default
    ``max_length`` come from the training split alone; training texts longer than
    ``DEFAULT_MAX_LENGTH`` tokens are then cut, with a warning. ``names`` maps split names to
    what messages call them (e.g. the file names). With ``labels.multi`` the tables hold
    label-set strings (``read_text_table`` with the same ``labels``), the classes are the
    labels that occur in training, and the dev hold-out is an iterative stratification.
    ``calibration_fraction`` of what is left for training becomes the ``calibration`` split
    (``labels.calibration_holdout``), which only conformal prediction sets use.

    Example:
        >>> multi = pd.DataFrame({"text": ["sun sea", "sea", "sun", "rain"] * 3,
        ...                       "label": ["sun|sea", "sea", "sun", ""] * 3})
        >>> data = prepare_text_data(multi, dev_fraction=0.25, labels=LabelFormat(multi=True))
        >>> data.class_names, data.splits["dev"].labels.shape
        (['sea', 'sun'], (3, 2))
        >>> table = pd.DataFrame({"text": ["good film", "bad film"] * 5,
        ...                       "label": ["pos", "neg"] * 5})
        >>> data = prepare_text_data(read_text_table(table), read_text_table(table[:2]),
        ...                          dev_fraction=0.2)
        >>> sorted(data.splits), len(data.splits["dev"].labels)
        (['dev', 'test', 'train'], 2)
    """
    names = {**SPLIT_WORDS, **(names or {})}
    labels = labels or LabelFormat()
    tables = {"train": train, "dev": dev, "test": test}
    _check_before_tokenizing(tables, names, dev_fraction, labels)
    tokens, skipped = _tokenized(tables, tokenizer, names)
    # Again on the tokenised texts: texts only the tokenizer empties may have taken a class.
    class_names = _class_names({split: table["label"] for split, (table, _) in tokens.items()},
                               names, labels)
    if "dev" not in tokens and dev_fraction > 0:
        table, train_tokens = tokens["train"]
        train_rows, dev_rows = dev_split(table["label"].tolist(), dev_fraction, seed,
                                         labels.table_sep)
        tokens["dev"] = (table.iloc[dev_rows], [train_tokens[i] for i in dev_rows])
        tokens["train"] = (table.iloc[train_rows], [train_tokens[i] for i in train_rows])
    if calibration_fraction > 0:
        table, train_tokens = tokens["train"]
        train_rows, held = calibration_holdout(table["label"].tolist(), calibration_fraction,
                                               seed, labels.table_sep, what="training texts")
        if len(held):  # too few texts hold none out (calibration_holdout warned)
            tokens[CALIBRATION_SPLIT] = (table.iloc[held], [train_tokens[i] for i in held])
            tokens["train"] = (table.iloc[train_rows], [train_tokens[i] for i in train_rows])
    vocabulary = build_vocabulary(tokens["train"][1], tokenizer, max_length, min_count,
                                  max_vocabulary)
    if max_length is None:
        _warn_if_cut(tokens["train"][1], vocabulary.max_length, names["train"])
    splits = {
        split: TextSplit(texts=table["text"].tolist(), tokens=toks,
                         labels=_targets(table["label"], class_names, labels),
                         ids=vocabulary.encode(toks))
        for split, (table, toks) in tokens.items()
    }
    return TextData(class_names, vocabulary, splits, skipped, labels)


def _targets(labels: pd.Series, class_names: list[str], label_format: LabelFormat
             ) -> np.ndarray:
    """Class ids, or the float32 0/1 matrix of the label sets when multi-label."""
    if label_format.multi:
        return label_matrix(parse_label_sets(labels, TABLE_SEP), class_names).astype("float32")
    return label_ids(labels, class_names)


def _warn(message: str) -> None:
    """Tell the user something on one line of stderr (a Python warning adds its source line)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _warn_if_cut(tokenized: Sequence[Sequence[str]], max_length: int, name: str) -> None:
    lengths = [len(tokens) for tokens in tokenized]
    cut = sum(length > max_length for length in lengths)
    if cut:
        _warn(f"cut {cut} of {len(lengths)} text(s) in {name} to {max_length} tokens, the "
             f"default max_length (the longest has {max(lengths)}); to choose another cap, set "
             "max_length (--set max_length=N)")


def _check_before_tokenizing(tables: dict[str, pd.DataFrame | None], names: dict[str, str],
                             dev_fraction: float, label_format: LabelFormat) -> None:
    """The data checks that need no tokens, so no TensorFlow: answered in about a second.

    They look at the texts that are not blank (a blank text is empty under every tokenizer);
    what one tokenizer empties besides is checked once it has run.
    """
    labels: dict[str, pd.Series] = {}
    for split, table in tables.items():
        if table is None:
            continue
        if table.empty:
            raise UserError(f"{names[split]} has no texts; it needs labelled sentences")
        blank = table["text"].astype(str).str.strip() == ""
        if blank.all():
            raise UserError(f"all {len(table)} texts in {names[split]} are empty; check "
                            "--text-column")
        labels[split] = table.loc[~blank, "label"]
    _class_names(labels, names, label_format)
    if "dev" not in labels and dev_fraction > 0:
        check_split(labels["train"].tolist(), dev_fraction, label_format.table_sep, "texts",
                    DEV_FIX)


def _classes(labels: pd.Series, label_format: LabelFormat) -> list[str]:
    """The labels (of the label sets, when multi-label) of ``labels``, in class order."""
    if label_format.multi:
        return multi_label_classes(parse_label_sets(labels, TABLE_SEP))
    return class_order(labels.tolist())


def _class_names(labels: dict[str, pd.Series], names: dict[str, str],
                 label_format: LabelFormat) -> list[str]:
    """The training labels' class order; a UserError for one class, or for dev or test labels
    that training never saw."""
    class_names = _classes(labels["train"], label_format)
    if not class_names:
        raise UserError(f"{names['train']} gives no text a label (every label set is empty); "
                        "check --label-column and --label-sep")
    if len(class_names) < 2:
        raise UserError(f"{names['train']} has a single label '{shown(class_names[0])}'; a "
                        "classifier needs at least two classes: check --label-column")
    for split in ("dev", "test"):
        if split in labels:
            unseen = sorted(set(_classes(labels[split], label_format)) - set(class_names))
            if unseen:
                raise UserError(f"{names[split]} has label(s) never seen in training: "
                                f"{', '.join(map(repr, unseen[:5]))}; training labels are "
                                f"{', '.join(map(shown, class_names))}")
    return class_names


def _tokenized(tables: dict[str, pd.DataFrame | None], tokenizer: str, names: dict[str, str]
               ) -> tuple[dict[str, tuple[pd.DataFrame, list[list[str]]]], dict[str, int]]:
    """Each given split's non-empty rows and their tokens, and how many empty ones were left."""
    tokens: dict[str, tuple[pd.DataFrame, list[list[str]]]] = {}
    skipped: dict[str, int] = {}
    for split, table in tables.items():
        if table is None:
            continue
        kept, kept_tokens, empty = _drop_empty(table, tokenizer)
        if empty:
            _warn(f"skipped {empty} empty text(s) in {names[split]}")
        if kept.empty:
            raise UserError(f"all {len(table)} texts in {names[split]} are empty after "
                            f"tokenising with '{tokenizer}'; check --text-column")
        skipped[split] = empty
        tokens[split] = (kept, kept_tokens)
    return tokens, skipped


def _drop_empty(table: pd.DataFrame, tokenizer: str) -> tuple[pd.DataFrame, list[list[str]],
                                                               int]:
    tokens = tokenize(table["text"].tolist(), tokenizer)
    keep = [i for i, t in enumerate(tokens) if t]
    return table.iloc[keep].reset_index(drop=True), [tokens[i] for i in keep], \
        len(tokens) - len(keep)


def dev_split(labels: Sequence[str], fraction: float = DEV_FRACTION,
              seed: int = 42, sep: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, dev) of a stratified, seeded hold-out split; with ``sep``
    (multi-label), of label-set strings, by iterative stratification (``labels.holdout``).

    Example:
        >>> train_rows, dev_rows = dev_split(["a"] * 10 + ["b"] * 10, 0.1)
        >>> len(dev_rows)
        2
    """
    return holdout(labels, fraction, seed, sep, what="texts", fix=DEV_FIX)


def kfold_splits(labels: Sequence[str], folds: int = 10, seed: int = 42,
                 sep: str | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Row indices (train, test) of each fold of a stratified, shuffled, seeded k-fold;
    with ``sep`` (multi-label), of label-set strings (``labels.iterative_kfold``).

    Example:
        >>> [len(test) for _, test in kfold_splits(["a", "b"] * 5, folds=5)]
        [2, 2, 2, 2, 2]
    """
    if sep is not None:
        return iterative_kfold(labels, folds, seed, sep)
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise UserError(f"--cv {folds}: cross-validation needs at least 2 folds (the paper "
                        "uses 10)")
    counts = Counter(labels)
    if not counts:
        raise UserError(f"--cv {folds}: there are no texts to split into folds; check the data")
    rarest, fewest = min(counts.items(), key=lambda kv: kv[1])
    if fewest < folds:
        raise UserError(f"--cv {folds}: class '{shown(rarest)}' has only {fewest} example(s), "
                        f"fewer than the folds; use --cv {max(fewest, 2)} or fewer, or add "
                        "examples")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), list(labels)))


def text_dataset(split: TextSplit, batch_size: int = 50, shuffle: bool = False,
                 seed: int = 42, sort_window: int = 20, clock: EpochClock | None = None
                 ) -> tf.data.Dataset:
    """A ``tf.data`` stream of ``(ids, labels)`` batches, each cut to its longest text.

    With ``shuffle`` (training), texts are reshuffled every epoch, then each window of
    ``sort_window`` batches is sorted by length, cut into batches and the batches shuffled:
    batches hold texts of similar length, so few are padded far (1 turns sorting off). The
    model gives the same outputs whatever the padding. Without ``shuffle`` the order is
    kept, for evaluation and prediction. With a ``clock``, each epoch's batches are a function
    of the seed and the epoch number (``tlkit.seeds``), so a resumed run sees what the
    uninterrupted one saw.

    Example:
        >>> table = pd.DataFrame({"text": ["a good film", "bad"] * 60, "label": ["p", "n"] * 60})
        >>> data = prepare_text_data(read_text_table(table), dev_fraction=0)
        >>> ids, labels = next(iter(text_dataset(data.splits["train"])))
        >>> tuple(ids.shape)  # 50 texts, cut to the longest (3 tokens)
        (50, 3)
    """
    import tensorflow as tf

    batches = math.ceil(len(split.labels) / batch_size)
    if shuffle and clock is not None:
        # Labels are ids, or a 0/1 row per text when multi-label.
        labels = tf.TensorSpec((None, *split.labels.shape[1:]), tf.as_dtype(split.labels.dtype))
        stream = tf.data.Dataset.from_generator(
            lambda: _epoch_batches(split, batch_size, sort_window, clock),
            output_signature=(tf.TensorSpec((None, None), tf.int32), labels))
        return _counted_and_prefetched(stream, batches)
    stream = tf.data.Dataset.from_tensor_slices((split.ids, split.lengths, split.labels))
    if shuffle:
        stream = stream.shuffle(len(split.labels), seed=seed, reshuffle_each_iteration=True)
        if sort_window > 1:
            stream = stream.batch(batch_size * sort_window).map(_sorted_by_length).unbatch()
    stream = stream.batch(batch_size).map(
        lambda ids, lengths, labels: (ids[:, : tf.maximum(tf.reduce_max(lengths), 1)], labels))
    if shuffle and sort_window > 1:
        stream = stream.shuffle(sort_window, seed=seed + 1, reshuffle_each_iteration=True)
    return _counted_and_prefetched(stream, batches)


def _counted_and_prefetched(stream: tf.data.Dataset, batches: int) -> tf.data.Dataset:
    """The batch count stated, two batches prepared ahead, tf.data's autotuner off.

    Sorting and generators hide the batch count from tf.data; Keras needs it to end epochs
    cleanly. Keras makes a new iterator every epoch (and for every validation pass), and
    dropping an autotuned one waits for the autotuner's next wake-up, which grows to 5 s:
    measured here, that wait cost more than a whole TREC epoch. Two batches ahead keep the
    model fed without it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return stream.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(
        2).with_options(options)


def _epoch_batches(split: TextSplit, batch_size: int, sort_window: int, clock: EpochClock
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of length-bucketed batches, drawn from the clock's generator for the epoch.

    The same recipe as the tf.data path: shuffle, sort each window of ``sort_window`` batches
    by length, cut into batches, shuffle the batches of each window.
    """
    rng = clock.rng("batches")
    order = rng.permutation(len(split.labels))
    lengths = split.lengths
    window = batch_size * max(sort_window, 1)
    for start in range(0, len(order), window):
        rows = order[start:start + window]
        if sort_window > 1:
            rows = rows[np.argsort(lengths[rows], kind="stable")]
        cuts = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
        for k in rng.permutation(len(cuts)):
            batch = cuts[k]
            width = max(int(lengths[batch].max()), 1)
            yield split.ids[batch, :width], split.labels[batch]


def _sorted_by_length(ids: tf.Tensor, lengths: tf.Tensor,
                      labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    import tensorflow as tf

    order = tf.argsort(lengths, stable=True)
    return tf.gather(ids, order), tf.gather(lengths, order), tf.gather(labels, order)
