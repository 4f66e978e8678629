"""Labelled tables, shared by the image and text jobs: reading, class order, ids, hold-outs.

One rule for each of the things both jobs need, so that an image run and a text run read a
CSV, order their classes and hold out a split the same way:

- **Reading.** ``.csv`` is comma-separated, ``.tsv``/``.tab`` tab-separated (quotes in a TSV
  are part of the text); every cell is read as a string, so a label ``007`` stays ``007``;
  a UTF-8 byte-order mark is stripped; bytes that do not decode name the file and the line.
- **Class order.** Natural order: digit runs compare as numbers, the rest as text, so
  ``2 < 10`` and ``img2 < img10``. Class ``i`` of a model is ``class_order(labels)[i]``.
- **Hold-outs.** Stratified and seeded (scikit-learn); the held-out count is
  ``ceil(fraction * n)``, and at least one example per class.
- **Split names.** ``train``, ``val`` (also ``dev``, ``valid``, ``validation``) and ``test``,
  for an image folder's split subfolders, an image CSV's ``split`` column and a text folder's
  split tables (``SPLIT_NAMES``).

Example:
    >>> class_order(["10", "2", "b", "a", "007"])
    ['2', '007', '10', 'a', 'b']
    >>> label_ids(["b", "a", "b"], ["a", "b"]).tolist()
    [1, 0, 1]
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tlkit.errors import UserError

SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
SPLIT_NAMES = {"train": "train", "val": "val", "dev": "val", "valid": "val", "validation": "val",
               "test": "test"}


def decode_file(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of ``path``; a byte-order mark (UTF-8, UTF-16 or UTF-32) decides how it is
    read, whatever ``encoding`` says, and is dropped.

    Spreadsheet programs save "Unicode text" as UTF-16 with a mark: such a file is read as
    it is, with no ``--encoding`` to find.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp(), "t.csv")
        >>> _ = path.write_bytes("text,label\\ncafé,1\\n".encode("utf-16"))
        >>> decode_file(path)
        'text,label\\ncafé,1\\n'
    """
    path = existing_path(path)
    data = path.read_bytes()
    utf8 = encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    codec = _marked_codec(data) or ("utf-8-sig" if utf8 else encoding)
    try:
        return data.decode(codec)
    except LookupError as error:
        raise UserError(f"unknown encoding '{encoding}'; use e.g. utf-8 or latin-1") from error
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path}, line {line}: bytes that are not {encoding} "
                        f"({data[error.start:error.end]!r}); pass the file's encoding, "
                        "e.g. --encoding latin-1") from error


# Byte-order marks and the codecs that read them (and drop them); UTF-32 LE starts with the
# UTF-16 LE mark, so it is looked for first.
_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
          (codecs.BOM_UTF16_BE, "utf-16"))


def _marked_codec(data: bytes) -> str | None:
    """The codec a byte-order mark at the start of ``data`` names, or None without one.

    Example:
        >>> _marked_codec(codecs.BOM_UTF16_BE + "a".encode("utf-16-be")), _marked_codec(b"a")
        ('utf-16', None)
    """
    return next((codec for mark, codec in _MARKS if data.startswith(mark)), None)


def existing_path(path: str | Path) -> Path:
    """``path`` as a Path, or a UserError naming it when it does not exist.

    Example:
        >>> existing_path("no/such/folder")
        Traceback (most recent call last):
        tlkit.errors.UserError: data path 'no/such/folder' does not exist; check the path
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"data path '{path}' does not exist; check the path")
    return path


def shown(value: object) -> str:
    """``value`` as text for a one-line message: line breaks and other controls escaped.

    Example:
        >>> print(shown("two\\nlines\\t"))
        two\\nlines\\t
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def is_table_file(path: str | Path) -> bool:
    """True for the suffixes read as tables (``.csv``, ``.tsv``, ``.tab``).

    Example:
        >>> is_table_file("train.TSV"), is_table_file("labels.xlsx")
        (True, False)
    """
    return Path(path).suffix.lower() in SEPARATORS


def split_tables(folder: str | Path) -> dict[str, Path]:
    """The split tables a folder holds (``train.csv``, ``dev.tsv``, ...), by split name.

    Example:
        >>> split_tables(".")  # a folder without split tables
        {}
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        split = SPLIT_NAMES.get(path.stem.lower())
        if split is None or not path.is_file() or not is_table_file(path):
            continue
        if split in found:
            raise UserError(f"folder '{folder}' holds two {split} tables, {found[split].name} "
                            f"and {path.name}; keep one")
        found[split] = path
    return found


def read_table(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a CSV/TSV file with every cell as a string (empty cells are ``""``).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp(), "labels.xlsx")
        >>> path.touch()
        >>> read_table(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: '.../labels.xlsx' is not a table file; use .csv or .tsv (...)
    """
    path = existing_path(path)
    if not is_table_file(path):
        raise UserError(f"'{path}' is not a table file; use .csv or .tsv "
                        f"({', '.join(SEPARATORS)})")
    separator = SEPARATORS[path.suffix.lower()]
    quoting = csv.QUOTE_NONE if separator == "\t" else csv.QUOTE_MINIMAL
    try:
        frame = pd.read_csv(io.StringIO(decode_file(path, encoding)), sep=separator,
                            dtype=str, keep_default_na=False, quoting=quoting)
    except pd.errors.EmptyDataError as error:
        raise UserError(f"'{path}' is empty; it needs a header row and data rows") from error
    except pd.errors.ParserError as error:
        raise UserError(f"cannot read '{path}' as a table: "
                        f"{str(error).strip().splitlines()[0]}") from error
    if frame.empty:
        raise UserError(f"'{path}' has a header but no data rows; add rows below the header")
    return frame


def require_columns(frame: pd.DataFrame, columns: dict[str, str | None], source: str) -> None:
    """Check that ``frame`` has each column; ``columns`` maps a name to the flag that sets it.

    A file tlkit wrote itself has no flag: pass ``None``, and the fix is to write it again.

    Example:
        >>> require_columns(pd.DataFrame({"text": []}), {"label": "--label-column"}, "'a.csv'")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: 'a.csv' has no column 'label' (columns: text); name the ...
    """
    for column, flag in columns.items():
        if column not in frame.columns:
            fix = (f"name the right one with {flag}" if flag else
                   "tlkit wrote this file with it: it was changed by hand, train the run again")
            raise UserError(f"{source} has no column '{column}' (columns: "
                            f"{', '.join(map(shown, frame.columns))}); {fix}")


def as_labels(values: Sequence[object] | pd.Series) -> np.ndarray:
    """Labels as stripped strings (an object array), whatever type the source gave.

    Example:
        >>> as_labels([7, " cat ", 2.5]).tolist()
        ['7', 'cat', '2.5']
    """
    return pd.Series(values, dtype=object).map(lambda v: str(v).strip()).to_numpy(dtype=object)


def _natural_key(name: str) -> tuple[tuple[object, ...], str]:
    parts = re.split(r"(\d+)", name)
    # Odd positions hold digit runs, even positions text, so items always compare like
    # with like; the name itself breaks ties such as "7" and "007".
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def class_order(labels: Sequence[str] | np.ndarray) -> list[str]:
    """The distinct labels in natural order: the class names of a model, index = class id.

    Example:
        >>> class_order(["img10", "img2", "img2"])
        ['img2', 'img10']
    """
    return sorted({str(label) for label in labels}, key=_natural_key)


def label_ids(labels: Sequence[str] | np.ndarray | pd.Series,
              class_names: Sequence[str]) -> np.ndarray:
    """Class ids (int32) of ``labels``; a label outside ``class_names`` is a UserError.

    Example:
        >>> label_ids(["x"], ["a", "b"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: label(s) the model does not know: 'x' (1 example(s)); ...
    """
    index = {name: i for i, name in enumerate(class_names)}
    unknown = Counter(str(label) for label in labels if str(label) not in index)
    if unknown:
        listed = ", ".join(f"'{shown(name)}' ({count} example(s))"
                           for name, count in unknown.most_common(5))
        raise UserError(f"label(s) the model does not know: {listed}; its classes are "
                        f"{', '.join(map(shown, class_names))}")
    return np.array([index[str(label)] for label in labels], dtype="int32")


def held_out_count(n: int, fraction: float, n_classes: int) -> int:
    """How many of ``n`` examples a stratified hold-out of ``fraction`` keeps back.

    Example:
        >>> held_out_count(100, 0.15, 3), held_out_count(10, 0.1, 3)
        (15, 3)
    """
    # The small tolerance keeps 0.25 / 0.75 * 6 (1.9999999999999998) at 2, not 3.
    return max(math.ceil(fraction * n - 1e-9), n_classes)


def check_holdout(labels: Sequence[str], fraction: float, what: str = "examples",
                  fix: str = "add examples") -> int:
    """How many of ``labels`` a stratified hold-out of ``fraction`` keeps back, or a UserError
    saying why it cannot (``stratified_holdout`` without the split, and without scikit-learn).

    Example:
        >>> check_holdout(["a", "a", "b"], 0.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: cannot hold out a stratified 50% of 3 examples in 2 classes: ...
    """
    if not 0 < fraction < 1:
        raise UserError(f"a hold-out fraction must be between 0 and 1, got {fraction}")
    if not labels:
        raise UserError(f"cannot hold out {fraction:.0%} of no {what}; {fix}")
    counts = Counter(str(label) for label in labels)
    rarest, fewest = min(counts.items(), key=lambda item: (item[1], item[0]))
    n_held = held_out_count(len(labels), fraction, len(counts))
    held = f"a stratified {fraction:.0%} of {len(labels)} {what} in {len(counts)} classes"
    if fewest < 2:
        raise UserError(f"cannot hold out {held}: stratifying needs at least 2 per class and "
                        f"class '{shown(rarest)}' has {fewest}; {fix}")
    if len(labels) - n_held < len(counts):
        raise UserError(f"cannot hold out {held}: too few would be left to train on; {fix}")
    return n_held


def stratified_holdout(labels: Sequence[str], fraction: float, seed: int,
                       what: str = "examples", fix: str = "add examples"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions ``(kept, held_out)`` of a stratified, seeded hold-out of ``fraction``.

    Example:
        >>> kept, held = stratified_holdout(["a"] * 10 + ["b"] * 10, 0.1, seed=0)
        >>> len(kept), len(held)
        (18, 2)
    """
    labels = [str(label) for label in labels]
    n_held = check_holdout(labels, fraction, what, fix)
    # Imported only now: a hold-out that cannot be made is refused without scikit-learn.
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    kept, held = train_test_split(positions, test_size=n_held, random_state=seed,
                                  stratify=labels)
    return np.sort(kept), np.sort(held)
