"""Labelled images from folders, CSV files or DataFrames, into tf.data pipelines.

Every source becomes one table with the columns ``path``, ``label`` and ``split`` (train,
val, test or empty), so splitting, checking and loading are written once.

Example:
    >>> table = read_image_table("datasets/shapes")
    >>> sorted(table.columns)
    ['label', 'path', 'split']
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tlkit.data.labels import (
    CALIBRATION_SPLIT,
    TABLE_SEP,
    LabelFormat,
    calibration_holdout,
    holdout,
    label_matrix,
    label_strings,
    multi_label_classes,
    parse_label_sets,
)
from tlkit.data.tables import (
    SPLIT_NAMES,
    as_labels,
    class_order,
    label_ids,
    read_table,
    shown,
)
from tlkit.errors import UserError
from tlkit.progress import advance, phase

if TYPE_CHECKING:
    import tensorflow as tf

    from tlkit.recipes import Augment, ImageRecipe
    from tlkit.seeds import EpochClock

# What tf.io.decode_image reads (WebP in the TensorFlow tlkit is tested with; an older one
# that cannot skips such files as unreadable, with the reason).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Image formats a class folder may hold that TensorFlow's decoder does not read: skipped, said.
OTHER_IMAGE_EXTENSIONS = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2")
# A URL (http://, s3://, file://, ...): a scheme of two letters or more, so a Windows drive
# (C:/) is a path.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


@dataclass
class ImageData:
    """The checked, split table of one run, and its class names (index = label id).

    Multi-label (``label_format.multi``): each ``label`` cell is a label set joined by
    ``labels.TABLE_SEP`` (``"beach|sunset"``, ``""`` for none), and ``targets`` is the
    ``(n, len(class_names))`` 0/1 matrix instead of the ids.

    Example:
        >>> data = ImageData(pd.DataFrame({"path": ["a.png", "b.png"], "label": ["dog", "cat"],
        ...                                "split": ["train", "val"]}), ["cat", "dog"], [])
        >>> data.split("train")["path"].tolist(), data.label_ids(data.table).tolist()
        (['a.png'], [1, 0])
        >>> multi = ImageData(data.table.assign(label=["cat|dog", ""]), ["cat", "dog"], [],
        ...                   LabelFormat(multi=True))
        >>> multi.targets(multi.table).tolist()
        [[1, 1], [0, 0]]
    """

    table: pd.DataFrame
    class_names: list[str]
    skipped: list[tuple[str, str]]
    label_format: LabelFormat = field(default_factory=LabelFormat)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``, ``val`` or ``test``)."""
        return self.table[self.table["split"] == name]

    def label_ids(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer label ids of ``frame``'s rows (single-label)."""
        return label_ids(frame["label"], self.class_names)

    def label_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The uint8 ``(rows, classes)`` indicator matrix of ``frame``'s label sets."""
        return label_matrix(parse_label_sets(frame["label"], TABLE_SEP), self.class_names)

    def targets(self, frame: pd.DataFrame) -> np.ndarray:
        """What the model is fitted to: ``label_matrix`` when multi-label, else ``label_ids``."""
        return self.label_matrix(frame) if self.label_format.multi else self.label_ids(frame)


def read_image_table(source: str | Path | pd.DataFrame, path_column: str = "path",
                     label_column: str = "label", min_classes: int = 2,
                     encoding: str = "utf-8", labels: LabelFormat | None = None
                     ) -> pd.DataFrame:
    """Read a folder, a CSV file or a DataFrame into a ``path, label, split`` table.

    Folders: one subfolder per class, or ``train``/``val``/``test`` subfolders holding the
    class subfolders. CSV paths are relative to the CSV's folder unless absolute; a CSV is
    read in ``encoding`` unless it starts with a byte-order mark. Training needs two classes;
    evaluating a run may look at one (``min_classes=1``).

    Multi-label (``labels.multi``, ``LabelFormat.of(recipe)``): a CSV or DataFrame only (a
    class folder is one label); each ``label`` cell becomes the row's label set joined by
    ``labels.TABLE_SEP`` in class order (``labels.label_strings``), an empty set allowed.

    Example:
        >>> read_image_table(pd.DataFrame({"path": ["/no/cat.png"], "label": ["cat"]}))
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: 1 of 1 image paths in the DataFrame (1 row) do not exist, ...
        >>> read_image_table(pd.DataFrame({"path": ["datasets/shapes/circle/circle_000.jpg"],
        ...                                "label": ["square;circle"]}), min_classes=1,
        ...                  labels=LabelFormat(multi=True, sep=";"))["label"].tolist()
        ['circle|square']
    """
    labels = labels or LabelFormat()
    if isinstance(source, pd.DataFrame):
        table = _table_from_frame(source, path_column, label_column, Path.cwd(),
                                  describe_source(source), "the working folder", labels)
        return _check_classes(table, describe_source(source), min_classes, labels)
    path = Path(source)
    if not path.exists():
        raise UserError(f"data path '{path}' does not exist; pass a folder of class subfolders "
                        "or a CSV file")
    if path.is_file():
        table = _table_from_frame(read_table(path, encoding), path_column, label_column,
                                  path.parent, describe_source(path),
                                  f"the CSV's folder, {path.parent}", labels)
        return _check_classes(table, describe_source(path), min_classes, labels)
    if labels.multi:
        raise UserError(f"data folder '{path}' cannot give an image several labels (its class "
                        "subfolder is its one label); for --multi-label pass a CSV with a path "
                        f"column and a label column holding the labels joined by "
                        f"'{labels.sep}' (e.g. beach{labels.sep}sunset), or 0/1 columns named "
                        "with --label-columns")
    return _table_from_folder(path, min_classes)


def describe_source(source: str | Path | pd.DataFrame) -> str:
    """A one-line name for a data source, for messages (a DataFrame prints as many lines).

    Example:
        >>> describe_source("labels.csv"), describe_source(pd.DataFrame({"path": ["a.png"]}))
        ("'labels.csv'", 'the DataFrame (1 row)')
    """
    if isinstance(source, pd.DataFrame):
        return f"the DataFrame ({len(source)} row{'' if len(source) == 1 else 's'})"
    return f"'{source}'"


def _table_from_frame(frame: pd.DataFrame, path_column: str, label_column: str, base: Path,
                      source: str, base_name: str, labels: LabelFormat) -> pd.DataFrame:
    # Multi-label: 0/1 columns replace the label column, and an empty label set is allowed.
    needed = (path_column,) if labels.columns else (path_column, label_column)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise UserError(f"{source} has no column '{missing[0]}' (columns: "
                        f"{', '.join(map(shown, frame.columns))}); name the right one with "
                        f"--{'path' if missing[0] == path_column else 'label'}-column")
    for column in needed if not labels.multi else (path_column,):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            first = int(np.flatnonzero(empty.to_numpy())[0]) + 1
            raise UserError(f"{source} has {int(empty.sum())} row(s) with no {column}, the "
                            f"first is data row {first}; fill them in or drop them")
    refuse_urls(frame[path_column].astype(str).tolist(), source)
    given = (Path(p).expanduser() for p in frame[path_column].astype(str))
    paths = [str(p if p.is_absolute() else base / p) for p in given]
    absent = [p for p in paths if not Path(p).is_file()]
    if absent:
        raise UserError(f"{len(absent)} of {len(paths)} image paths in {source} do not exist, "
                        f"e.g. '{shown(absent[0])}' (relative paths are read from {base_name})")
    split: Any = None
    if "split" in frame.columns:
        # a calibration split too: a run's own split.csv holds one
        names = {**SPLIT_NAMES, CALIBRATION_SPLIT: CALIBRATION_SPLIT}
        split = [None if pd.isna(s) or not str(s).strip() else names.get(str(s).lower())
                 for s in frame["split"]]
        unknown = sorted({str(s) for s, v in zip(frame["split"], split, strict=True)
                          if v is None and not pd.isna(s) and str(s).strip()})
        if unknown:
            raise UserError(f"{source} has unknown split value '{shown(unknown[0])}'; use "
                            "train, val (or dev) or test, or leave it empty to split automatically")
    label = (label_strings(frame, label_column, labels, source, "images") if labels.multi
             else as_labels(frame[label_column]))
    return pd.DataFrame({"path": paths, "label": label, "split": split})


def refuse_urls(paths: list[str], source: str) -> None:
    """A one-line UserError, URL shown whole, when image paths are URLs (Path() mangles them).

    Example:
        >>> refuse_urls(["https://example.com/a.jpg"], "'urls.csv'")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: 1 of 1 image paths in 'urls.csv' are URLs, e.g. 'https://...
    """
    urls = [p for p in paths if _URL.match(p.strip())]
    if urls:
        raise UserError(f"{len(urls)} of {len(paths)} image paths in {source} are URLs, e.g. "
                        f"'{shown(urls[0].strip())}'; tlkit reads local files: download the "
                        "images first and list their local paths")


def _hidden(name: str) -> bool:
    # Dot files and macOS zip debris (__MACOSX/, ._name.jpg) are never images of a class.
    return name.startswith(".") or name == "__MACOSX"


def _subfolders(folder: Path) -> list[Path]:
    # os.scandir and sorting names: pathlib's is_dir and Path ordering take seconds over
    # ten thousand class folders.
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not _hidden(e.name))
    return [folder / name for name in names]


def images_in(folder: Path) -> list[Path]:
    """Image files under ``folder`` (any depth), hidden files and folders left out.

    Symbolic links named as images are kept even when broken or looping, so that the scan
    (``find_unreadable``) reports them instead of their vanishing without a word.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.PNG", ".b.jpg", "notes.txt"): (folder / name).touch()
        >>> [p.name for p in images_in(folder)]
        ['a.PNG']
    """
    return _with_suffixes(_visible_files(folder), IMAGE_EXTENSIONS)


def _visible_files(folder: Path) -> list[Path]:
    """Files (and symbolic links that are not folders) under ``folder``, none hidden, sorted.

    Like ``Path.rglob``, linked folders are not entered and unreadable folders are passed
    over; sorted by path parts, as Paths sort.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    pending: list[tuple[str, tuple[str, ...]]] = [(str(folder), ())]
    while pending:
        directory, parts = pending.pop()
        try:
            with os.scandir(directory) as scan:
                entries = [e for e in scan if not _hidden(e.name)]
        except PermissionError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, (*parts, entry.name)))
            elif _file_or_link(entry):
                found.append(((*parts, entry.name), entry.path))
    return [Path(path) for _, path in sorted(found)]


def _file_or_link(entry: os.DirEntry[str]) -> bool:
    """A regular file, or a link that does not lead to a folder (broken and looping included)."""
    if not entry.is_symlink():
        return entry.is_file()
    try:
        return not entry.is_dir()
    except OSError:  # a link loop
        return True


def _with_suffixes(files: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    return [p for p in files if p.suffix.lower() in suffixes]


def _table_from_folder(folder: Path, min_classes: int = 2) -> pd.DataFrame:
    subfolders = _subfolders(folder)
    if not subfolders:
        what = ("has images but no class subfolders" if images_in(folder)
                else "is empty" if not any(folder.iterdir()) else "has no class subfolders")
        raise UserError(f"data folder '{folder}' {what}; put each class's images in a subfolder "
                        "named after the class")
    split_dirs = {SPLIT_NAMES[p.name.lower()]: p for p in subfolders
                  if p.name.lower() in SPLIT_NAMES}
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"folder '{folder}' has split folders but no 'train' folder")
    stray = [p.name for p in subfolders if p.name.lower() not in SPLIT_NAMES]
    if split_dirs and stray:
        raise UserError(f"folder '{folder}' mixes split folders ({', '.join(split_dirs)}) with "
                        f"other folders ({', '.join(stray)}); move those classes into train/")
    parts = split_dirs.items() if split_dirs else [(None, folder)]
    rows, others = [], []
    for split, root in parts:
        class_dirs = _subfolders(root)
        if not class_dirs:
            raise UserError(f"folder '{root}' has no class subfolders; put each class's images "
                            "in a subfolder named after the class")
        for class_dir in class_dirs:
            files = _visible_files(class_dir)  # one walk for both kinds of file
            images = _with_suffixes(files, IMAGE_EXTENSIONS)
            if not images:
                raise UserError(f"class folder '{class_dir}' has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove it")
            rows += [(str(p), class_dir.name, split) for p in images]
            advance(len(images))  # the scan's count so far
            others += _with_suffixes(files, OTHER_IMAGE_EXTENSIONS)
    _warn_other_formats(others)
    return _check_classes(pd.DataFrame(rows, columns=["path", "label", "split"]),
                          describe_source(folder), min_classes)


def _warn_other_formats(files: list[Path]) -> None:
    """One warning line for image files in formats that are skipped, counted by suffix."""
    if files:
        counts = Counter(p.suffix.lower() for p in files)
        listing = ", ".join(f"{suffix}: {n}" for suffix, n in sorted(counts.items()))
        print(f"warning: skipping {len(files)} image file(s) in formats tlkit does not read "
              f"({listing}); convert them to .jpg or .png to use them", file=sys.stderr,
              flush=True)


def _check_classes(table: pd.DataFrame, source: str, min_classes: int = 2,
                   labels: LabelFormat | None = None) -> pd.DataFrame:
    if table.empty:
        raise UserError(f"{source} holds no images")
    if labels is not None and labels.multi:
        names = classes_of(table["label"], labels)
        if not names and min_classes:
            raise UserError(f"{source} gives no image a label (every label set is empty); "
                            "check --label-column and --label-sep")
        if len(names) < min_classes:
            raise UserError(f"{source} has a single label ('{shown(names[0])}'); a multi-label "
                            "classifier needs at least two")
        return table
    unique = table["label"].unique()
    if len(unique) < min_classes:
        raise UserError(f"{source} has a single class ('{shown(unique[0])}'); a classifier "
                        "needs at least two")
    return table


def classes_of(labels: pd.Series | list[str], label_format: LabelFormat) -> list[str]:
    """The class names a reader's ``label`` column holds, in class order: its labels, or the
    labels of its label sets when ``label_format.multi``.

    Example:
        >>> classes_of(["b|a", "", "c"], LabelFormat(multi=True))
        ['a', 'b', 'c']
    """
    if label_format.multi:
        return multi_label_classes(parse_label_sets(list(labels), TABLE_SEP))
    return class_order(list(labels))


def find_unreadable(paths: list[str], workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for each file that does not fully decode as an image.

    Each file goes through ``unreadable_reason``, in threads (the decoders release the GIL).

    Example:
        >>> find_unreadable([])
        []
    """
    if not paths:
        return []
    reasons = []
    with ThreadPoolExecutor(workers) as pool:
        for reason in pool.map(unreadable_reason, paths):
            reasons.append(reason)
            advance()  # into the caller's phase, if one is open
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def unreadable_reason(path: str) -> str | None:
    """Why ``path`` does not fully decode as an image (one line), or None when it does.

    Decoding the whole file (not just its header) is what finds truncated JPEGs. A file
    Pillow reads must also pass TensorFlow's decoder, the one training uses: Pillow reads
    formats that TensorFlow does not (TIFF renamed to .jpg, 1-bit BMP).

    Example:
        >>> unreadable_reason("/no/such/image.jpg")
        'cannot be opened: No such file or directory'
    """
    unreachable = _unreachable(path)
    if unreachable:
        return unreachable
    import tensorflow as tf
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            kind = f"{image.format} ({image.mode})"
    except Exception as error:  # PIL raises many types for broken files
        return _first_line(error)
    try:
        decode_image(tf.constant(path), 8)
    except Exception as error:  # tf.errors.InvalidArgumentError and friends
        return f"{kind} image that TensorFlow cannot decode ({_first_line(error)})"
    return None


def decode_once(paths: list[str], image_size: int, batch_size: int
                ) -> Iterator[tuple[np.ndarray, tf.Tensor]]:
    """(row numbers in ``paths``, images) batches of the files that decode, each decoded once.

    For prediction: a file that fails to decode is left out of the batches instead of
    stopping them, so the images are not scanned beforehand (which decoded each twice); the
    caller asks ``unreadable_reason`` about the rows that never came. Decoding runs in
    parallel and ahead of the consumer (prefetch), overlapped with the model.

    Example:
        >>> [rows for rows, _ in decode_once(["/no/such.jpg"], 32, 8)]
        []
    """
    import tensorflow as tf

    # Paths that lead to no regular file never reach the reader: a FIFO would block it.
    reachable = [i for i, path in enumerate(paths) if _unreachable(path) is None]
    if not reachable:
        return
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.asarray(reachable, "int64"), [paths[i] for i in reachable]))
    dataset = dataset.map(lambda i, path: (i, decode_image(path, image_size)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = dataset.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    for rows, images in batches:
        yield rows.numpy(), images


def _unreachable(path: str) -> str | None:
    """Why ``path`` leads to no image file (a broken link, a link loop, a FIFO), or None."""
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: following it never reaches a file"
        if os.path.islink(path):
            return (f"broken symbolic link: its target '{shown(os.readlink(path))}' does not "
                    "exist")
        return f"cannot be opened: {error.strerror or error}"
    # A FIFO named .jpg would block the decoder for ever.
    return None if regular else "not a regular file"


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    # TensorFlow prefixes op errors with "{{function_node ...}} "; the reason follows it.
    text = text.split("}} ", 1)[-1].strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def split_table(table: pd.DataFrame, val_fraction: float, test_fraction: float,
                seed: int, sep: str | None = None, calibration_fraction: float = 0.0
                ) -> pd.DataFrame:
    """Fill in missing splits with stratified, seeded hold-outs (``labels.holdout``).

    Rows that already have a split keep it; validation is carved out of the training rows
    when only train (and maybe test) is given. ``sep`` (multi-label: the labels' separator)
    makes the hold-outs iterative stratifications of the label sets. Then
    ``calibration_fraction`` of the training rows becomes the ``calibration`` split (unless
    the table has one), which only conformal prediction sets use.

    Example:
        >>> frame = pd.DataFrame({"path": list("abcdefgh"), "label": list("xxxxyyyy"),
        ...                       "split": None})
        >>> sorted(split_table(frame, 0.25, 0.25, seed=0)["split"].value_counts().items())
        [('test', 2), ('train', 4), ('val', 2)]
    """
    table = table.copy()
    if table["split"].isna().all():
        pool = table.index
        if test_fraction > 0:
            pool, test = _hold_out(table, pool, test_fraction, seed, sep)
            table.loc[test, "split"] = "test"
        if val_fraction > 0:
            pool, val = _hold_out(table, pool, val_fraction / (1 - test_fraction), seed, sep)
            table.loc[val, "split"] = "val"
    elif not (table["split"] == "val").any() and val_fraction > 0:
        table["split"] = table["split"].fillna("train")  # rows without a split are training rows
        if not (table["split"] == "train").any():
            raise UserError("no image is in the train split (every row is 'test'); give some "
                            "rows the split train, or leave their split empty")
        _, val = _hold_out(table, table.index[table["split"] == "train"], val_fraction, seed,
                           sep)
        table.loc[val, "split"] = "val"
    table["split"] = table["split"].fillna("train")
    if calibration_fraction > 0 and not (table["split"] == CALIBRATION_SPLIT).any():
        pool = table.index[table["split"] == "train"]
        _, held = calibration_holdout(table.loc[pool, "label"].tolist(), calibration_fraction,
                                      seed, sep, what="training images")
        table.loc[pool[held], "split"] = CALIBRATION_SPLIT
    return table


def _hold_out(table: pd.DataFrame, pool: pd.Index, fraction: float, seed: int,
              sep: str | None) -> tuple[pd.Index, pd.Index]:
    kept, held = holdout(table.loc[pool, "label"].tolist(), fraction, seed, sep, what="images",
                         fix="add images, lower the val/test fractions or give a split")
    return pool[kept], pool[held]


def load_image_data(recipe: ImageRecipe, data: str | Path | pd.DataFrame | None = None
                    ) -> ImageData:
    """Read, check and split the recipe's images; broken files are skipped or, strict, an error.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> load_image_data(ImageRecipe(data="datasets/shapes")).class_names
        ['circle', 'square', 'triangle']
    """
    return check_images(recipe, read_recipe_table(recipe, data))


def read_recipe_table(recipe: ImageRecipe, data: str | Path | pd.DataFrame | None = None
                      ) -> pd.DataFrame:
    """The recipe's image table (``data`` overrides ``recipe.data``), read without TensorFlow.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> read_recipe_table(ImageRecipe())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: no data given; pass --data (or data=) a folder or CSV of ...
    """
    source = data if data is not None else recipe.data
    if source is None:
        raise UserError("no data given; pass --data (or data=) a folder or CSV of labelled images")
    # announced only if it takes a while: its mistakes (before TensorFlow) stay one line
    with phase("scan", unit="image", detail=f"finding images in {describe_source(source)}",
               announce=False):
        table = read_image_table(source, recipe.path_column, recipe.label_column,
                                 encoding=recipe.encoding, labels=LabelFormat.of(recipe))
        table.attrs["source"] = describe_source(source)
        # The split, made here on every file, refuses at once what the split of the readable
        # files (``check_images``, after the scan that needs TensorFlow) would refuse after a
        # minute.
        split_checked(recipe, table)
    return table


def check_images(recipe: ImageRecipe, table: pd.DataFrame) -> ImageData:
    """Skip (or, strict, refuse) unreadable files, split, and fix the class order.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> data = check_images(ImageRecipe(), read_image_table("datasets/shapes"))
        >>> data.split("val")["label"].value_counts().sort_index().to_dict()
        {'circle': 6, 'square': 6, 'triangle': 6}
    """
    source, labels = table.attrs.get("source", "the data"), LabelFormat.of(recipe)
    with phase("check", len(table), unit="image", detail="decoding every image once"):
        skipped = find_unreadable(table["path"].tolist())
    if skipped:
        listing = "; ".join(f"{shown(path)} ({reason})" for path, reason in skipped)
        if recipe.strict:
            raise UserError(f"{len(skipped)} unreadable image(s): {listing}; fix or remove them, "
                            "or leave out --strict to skip them")
        print(f"warning: skipping {len(skipped)} unreadable image(s): {listing}",
              file=sys.stderr, flush=True)
        kept = table[~table["path"].isin({p for p, _ in skipped})].reset_index(drop=True)
        lost = sorted(set(classes_of(table["label"], labels)) -
                      set(classes_of(kept["label"], labels)))
        if lost:
            raise UserError(f"class '{shown(lost[0])}' has no readable images (all were skipped as "
                            "unreadable); add readable images or remove the class")
        table = _check_classes(kept, source, labels=labels)
    with phase("split", detail="images into train, val and test") as splitting:
        table, class_names = split_checked(recipe, table)
        splitting.result = split_sizes(table, labels)
    return ImageData(table.reset_index(drop=True), class_names, skipped, labels)


def split_sizes(table: pd.DataFrame, labels: LabelFormat) -> str:
    """Images per split and, for one label per image, the smallest and largest class in each.

    Example:
        >>> frame = pd.DataFrame({"label": list("aaabbcc"), "split": ["train"] * 6 + ["val"]})
        >>> split_sizes(frame, LabelFormat())
        'train 6, val 1 images; images per class: train 1-3, val 0-1'
    """
    present = table["split"].unique().tolist()
    order = [name for name in ("train", "val", "test") if name in present]
    order += sorted(set(present) - set(order))  # any other hold-out, by name
    sizes = ", ".join(f"{name} {(table['split'] == name).sum()}" for name in order)
    if labels.multi:
        return f"{sizes} images"
    counts = pd.crosstab(table["label"], table["split"])
    ranges = ", ".join(f"{name} {counts[name].min()}-{counts[name].max()}" for name in order)
    return f"{sizes} images; images per class: {ranges}"


def split_checked(recipe: ImageRecipe, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``table`` split by the recipe, and its class names, once the split can train a run.

    Training needs two classes, each class in it, and val or test images to evaluate on.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> recipe = ImageRecipe(val_fraction=0.0, test_fraction=0.0)
        >>> split_checked(recipe, read_image_table("datasets/shapes"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: val_fraction and test_fraction are both 0, so no image is left ...
    """
    given, source = table["split"].notna().any(), table.attrs.get("source", "the data")
    labels = LabelFormat.of(recipe)
    table = split_table(table, recipe.val_fraction, recipe.test_fraction, recipe.seed,
                        labels.table_sep, recipe.calibration_fraction)
    class_names = classes_of(table.loc[table["split"] == "train", "label"], labels)
    unseen = sorted(set(classes_of(table["label"], labels)) - set(class_names))
    if unseen:
        raise UserError(f"class '{shown(unseen[0])}' appears in val/test but has no training "
                        "images")
    if len(class_names) < 2:
        raise UserError("the training split has a single class; a classifier needs two")
    if not table["split"].isin(("val", "test")).any():
        # A run's metrics and report are of its val and test images: training would end in
        # an error (or, earlier, in nothing to evaluate).
        if given:
            raise UserError(f"{source} gives only train images "
                            "and val_fraction is 0, so no image is left to evaluate the run on; "
                            "give some images the split val or test, or set val_fraction above "
                            "0 (e.g. --set val_fraction=0.15)")
        raise UserError("val_fraction and test_fraction are both 0, so no image is left to "
                        "evaluate the run on (val and test would be empty); set one above 0, "
                        "e.g. --set test_fraction=0.15")
    return table, class_names


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read any JPEG/PNG/BMP/GIF/WebP as RGB float32 in 0-255, resized to a square.

    Example:
        >>> import tensorflow as tf
        >>> decode_image(tf.constant("datasets/shapes/circle/circle_000.jpg"), 32).shape
        TensorShape([32, 32, 3])
    """
    import tensorflow as tf

    data = tf.io.read_file(path)
    # channels=3 turns grayscale and RGBA into RGB; expand_animations=False keeps GIF frame 1.
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (image_size, image_size))


def augmentation_layers(augment: Augment, seed: int) -> list[Any]:
    """Keras preprocessing layers for the recipe's augmentation (training stream only).

    Example:
        >>> from tlkit.recipes import Augment
        >>> layers = augmentation_layers(Augment(rotation=0.1, zoom=0, contrast=0), seed=0)
        >>> [type(layer).__name__ for layer in layers]
        ['RandomFlip', 'RandomRotation']
    """
    import keras

    # One seed per layer: layers seeded alike draw the same random numbers, so every flipped
    # image would also get the same (low) contrast change, and so on.
    layers: list[Any] = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, fill_mode="reflect",
                                                  seed=seed + 1))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, fill_mode="reflect", seed=seed + 2))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255),
                                                  seed=seed + 3))
    if augment.randaugment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed + 4))
    return layers


def soft_label_stream(dataset: tf.data.Dataset, num_classes: int, augment: Augment | None,
                      seed: int = 0, multi_label: bool = False, label_smoothing: float = 0.0
                      ) -> tf.data.Dataset:
    """``dataset``'s batches with float targets (one-hot class ids, or label sets as they
    are), smoothed by ``label_smoothing`` and mixed by the recipe's MixUp or CutMix when
    ``augment`` asks for one: what a training stream with soft targets feeds the loss.

    Smoothing the training targets, rather than the loss, leaves validation loss the plain
    cross-entropy, so epochs with and without smoothing compete for the kept checkpoint on
    the same scale. Validation streams pass ``augment=None`` and no smoothing.

    Example:
        >>> import tensorflow as tf
        >>> batches = tf.data.Dataset.from_tensor_slices((tf.zeros((2, 8, 8, 3)), [0, 1])).batch(2)
        >>> targets = next(iter(soft_label_stream(batches, 2, None, label_smoothing=0.2)))[1]
        >>> targets.numpy().astype(float).round(3).tolist()
        [[0.9, 0.1], [0.1, 0.9]]
    """
    import keras
    import tensorflow as tf

    # Keras's label_smoothing: each class gets smoothing / classes (a label: smoothing / 2)
    share = label_smoothing / (2 if multi_label else num_classes)

    def targets(images: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        soft = tf.cast(y, "float32") if multi_label else tf.one_hot(y, num_classes)
        return images, soft * (1 - label_smoothing) + share

    dataset = dataset.map(targets)
    if augment is None or not (augment.mixup or augment.cutmix):
        return dataset
    layer = (keras.layers.MixUp(alpha=augment.mixup, seed=seed + 5) if augment.mixup
             else keras.layers.CutMix(factor=augment.cutmix, seed=seed + 5))

    def mix(images: tf.Tensor, soft: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mixed = layer({"images": images, "labels": soft}, training=True)
        return mixed["images"], mixed["labels"]

    return dataset.map(mix)


def make_dataset(paths: list[str], labels: np.ndarray, image_size: int, batch_size: int, *,
                 training: bool = False, augment: Augment | None = None, cache: bool = False,
                 seed: int = 0, clock: EpochClock | None = None) -> tf.data.Dataset:
    """A batched tf.data pipeline of (image, label): parallel decode, optional cache, prefetch.

    With a ``clock`` (training), each epoch's order and augmentation draws are functions of
    the seed and the epoch number (``tlkit.seeds``), so a resumed run sees what the
    uninterrupted one saw.

    Example:
        >>> ds = make_dataset(["datasets/shapes/circle/circle_000.jpg"], np.array([0]), 32, 8)
        >>> [tuple(part.shape) for part in next(iter(ds))]
        [(1, 32, 32, 3), (1,)]
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    layers = augmentation_layers(augment, seed) if training and augment is not None else []
    if training and clock is not None and not cache:
        dataset = _epoch_ordered(paths, labels, image_size, clock, layers)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, "int32")))
        if training and not cache:
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.map(lambda p, y: (decode_image(p, image_size), y),
                              num_parallel_calls=autotune, deterministic=True)
    if cache:
        dataset = dataset.cache()
        if training:
            # After the cache: shuffled before it, the cache would replay the first epoch's
            # order in every epoch. The buffer shares the cached tensors, it does not copy them.
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if layers:
        def apply(images: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            for layer in layers:
                images = layer(images, training=True)
            return images, y

        # One batch at a time: the layers' random draws then follow the batch order.
        dataset = dataset.map(apply)
    return dataset.prefetch(autotune)


def _epoch_ordered(paths: list[str], labels: np.ndarray, image_size: int, clock: EpochClock,
                   layers: list[Any]) -> tf.data.Dataset:
    """Decoded images in the clock's order for the current epoch (read when it starts)."""
    import tensorflow as tf

    from tlkit.seeds import reseed, seed_states

    path_table = tf.constant(list(paths))
    label_table = tf.constant(np.asarray(labels, "int32"))
    states = seed_states([v for layer in layers for v in layer.variables])

    def order() -> Any:
        # A new iterator per epoch calls this after the clock moved to that epoch.
        reseed(states, clock, "augment")
        yield from clock.rng("order").permutation(len(paths))

    indices = tf.data.Dataset.from_generator(
        order, output_signature=tf.TensorSpec((), tf.int64))
    indices = indices.apply(tf.data.experimental.assert_cardinality(len(paths)))
    return indices.map(lambda i: (decode_image(tf.gather(path_table, i), image_size),
                                  tf.gather(label_table, i)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def balanced_class_weight(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count of the class).

    Example:
        >>> balanced_class_weight(np.array([0, 0, 0, 1]), n_classes=2)
        {0: 0.6666666666666666, 1: 2.0}
    """
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(n_classes)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}
