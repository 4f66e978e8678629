"""Labelled images from folders, CSV files or DataFrames, into tf.data pipelines.

Every source becomes one table with the columns ``path``, ``label`` and ``split`` (train,
val, test or empty), so splitting, checking and loading are written once.

Example:
    >>> table = read_image_table("datasets/shapes")
    >>> sorted(table.columns)
    ['label', 'path', 'split']
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tlkit.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf

    from tlkit.recipes import Augment, ImageRecipe

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}


@dataclass
class ImageData:
    """The checked, split table of one run, and its class names (index = label id)."""

    table: pd.DataFrame
    class_names: list[str]
    skipped: list[tuple[str, str]]

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``, ``val`` or ``test``)."""
        return self.table[self.table["split"] == name]

    def label_ids(self, frame: pd.DataFrame) -> np.ndarray:
        """Integer label ids of ``frame``'s rows."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return frame["label"].map(index).to_numpy(dtype="int32")


def read_image_table(source: str | Path | pd.DataFrame, path_column: str = "path",
                     label_column: str = "label") -> pd.DataFrame:
    """Read a folder, a CSV file or a DataFrame into a ``path, label, split`` table.

    Folders: one subfolder per class, or ``train``/``val``/``test`` subfolders holding the
    class subfolders. CSV paths are relative to the CSV's folder unless absolute.

    Example:
        >>> read_image_table(pd.DataFrame({"path": ["a.png"], "label": ["cat"]}))["split"].tolist()
        [None]
    """
    if isinstance(source, pd.DataFrame):
        return _table_from_frame(source, path_column, label_column, Path.cwd(), "DataFrame")
    path = Path(source)
    if not path.exists():
        raise UserError(f"data path '{path}' does not exist; pass a folder of class subfolders "
                        "or a CSV file")
    if path.is_file():
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        try:
            frame = pd.read_csv(path, sep=sep)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise UserError(f"cannot read '{path}' as CSV: {str(error).splitlines()[0]}") from error
        return _table_from_frame(frame, path_column, label_column, path.parent, str(path))
    return _table_from_folder(path)


def _table_from_frame(frame: pd.DataFrame, path_column: str, label_column: str, base: Path,
                      source: str) -> pd.DataFrame:
    missing = [c for c in (path_column, label_column) if c not in frame.columns]
    if missing:
        raise UserError(f"{source} has no column '{missing[0]}' (columns: "
                        f"{', '.join(map(str, frame.columns))}); name the right one with "
                        f"--{'path' if missing[0] == path_column else 'label'}-column")
    given = map(Path, frame[path_column].astype(str))
    paths = [str(p if p.is_absolute() else base / p) for p in given]
    absent = [p for p in paths if not Path(p).is_file()]
    if absent:
        raise UserError(f"{len(absent)} image paths in {source} do not exist, e.g. '{absent[0]}'")
    split = frame["split"].map(lambda s: SPLIT_FOLDERS.get(str(s).lower())) \
        if "split" in frame.columns else None
    table = pd.DataFrame({"path": paths, "label": frame[label_column].astype(str).to_numpy(),
                          "split": split})
    return _check_classes(table, source)


def _table_from_folder(folder: Path) -> pd.DataFrame:
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise UserError(f"folder '{folder}' has no class subfolders; put each class's images in "
                        "a subfolder named after the class")
    split_dirs = {SPLIT_FOLDERS[p.name.lower()]: p for p in subfolders
                  if p.name.lower() in SPLIT_FOLDERS}
    if split_dirs and "train" not in split_dirs:
        raise UserError(f"folder '{folder}' has split folders but no 'train' folder")
    parts = split_dirs.items() if split_dirs else [(None, folder)]
    rows = []
    for split, root in parts:
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise UserError(f"folder '{root}' has no class subfolders")
        for class_dir in class_dirs:
            images = sorted(p for p in class_dir.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise UserError(f"class folder '{class_dir}' has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove it")
            rows += [(str(p), class_dir.name, split) for p in images]
    return _check_classes(pd.DataFrame(rows, columns=["path", "label", "split"]), str(folder))


def _check_classes(table: pd.DataFrame, source: str) -> pd.DataFrame:
    if table.empty:
        raise UserError(f"{source} holds no images")
    labels = table["label"].unique()
    if len(labels) < 2:
        raise UserError(f"{source} has a single class ('{labels[0]}'); a classifier needs at "
                        "least two")
    return table


def find_unreadable(paths: list[str], workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for each file that does not fully decode as an image.

    Decoding the whole file (not just its header) is what finds truncated JPEGs.

    Example:
        >>> find_unreadable([])
        []
    """
    from PIL import Image

    def problem(path: str) -> str | None:
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as error:  # PIL raises many types for broken files
            return str(error).splitlines()[0] if str(error) else type(error).__name__
        return None

    with ThreadPoolExecutor(workers) as pool:
        reasons = list(pool.map(problem, paths))
    return [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]


def split_table(table: pd.DataFrame, val_fraction: float, test_fraction: float,
                seed: int) -> pd.DataFrame:
    """Fill in missing splits with stratified, seeded hold-outs (scikit-learn).

    Rows that already have a split keep it; validation is carved out of the training rows
    when only train (and maybe test) is given.

    Example:
        >>> frame = pd.DataFrame({"path": list("abcdefgh"), "label": list("xxxxyyyy"),
        ...                       "split": None})
        >>> split_table(frame, 0.25, 0.25, seed=0)["split"].value_counts().to_dict()
        {'train': 4, 'val': 2, 'test': 2}
    """
    from sklearn.model_selection import train_test_split

    table = table.copy()
    unsplit = table["split"].isna()
    if unsplit.all():
        pool = table.index
        if test_fraction > 0:
            rest, test = _stratified(train_test_split, table, pool, test_fraction, seed)
            table.loc[test, "split"] = "test"
            pool = rest
        if val_fraction > 0:
            fraction = val_fraction / (1 - test_fraction)
            rest, val = _stratified(train_test_split, table, pool, fraction, seed)
            table.loc[val, "split"] = "val"
            pool = rest
        table.loc[pool, "split"] = "train"
    elif not (table["split"] == "val").any() and val_fraction > 0:
        train = table.index[table["split"] == "train"]
        _, val = _stratified(train_test_split, table, train, val_fraction, seed)
        table.loc[val, "split"] = "val"
    table["split"] = table["split"].fillna("train")
    return table


def _stratified(train_test_split: Any, table: pd.DataFrame, index: pd.Index, fraction: float,
                seed: int) -> tuple[pd.Index, pd.Index]:
    labels = table.loc[index, "label"]
    counts = labels.value_counts()
    if counts.min() < 2:
        raise UserError(f"class '{counts.idxmin()}' has {counts.min()} image(s); stratified "
                        "splitting needs at least 2 per class (add images or give a split)")
    n_classes = len(counts)
    n_held = max(int(round(fraction * len(index))), n_classes)
    if len(index) - n_held < n_classes:
        raise UserError(f"too few images ({len(index)}) to hold out {fraction:.0%} per split for "
                        f"{n_classes} classes; add images or lower val/test fractions")
    return train_test_split(index, test_size=n_held, stratify=labels, random_state=seed)


def load_image_data(recipe: ImageRecipe, data: str | Path | pd.DataFrame | None = None
                    ) -> ImageData:
    """Read, check and split the recipe's images; broken files are skipped or, strict, an error.

    Example:
        >>> from tlkit.recipes import ImageRecipe
        >>> load_image_data(ImageRecipe(data="datasets/shapes")).class_names  # doctest: +SKIP
        ['circle', 'square', 'triangle']
    """
    source = data if data is not None else recipe.data
    if source is None:
        raise UserError("no data given; pass --data a folder or CSV of labelled images")
    table = read_image_table(source, recipe.path_column, recipe.label_column)
    skipped = find_unreadable(table["path"].tolist())
    if skipped:
        listing = "; ".join(f"{path} ({reason})" for path, reason in skipped)
        if recipe.strict:
            raise UserError(f"{len(skipped)} unreadable image(s): {listing}")
        warnings.warn(f"skipping {len(skipped)} unreadable image(s): {listing}", stacklevel=2)
        table = table[~table["path"].isin({p for p, _ in skipped})]
        table = _check_classes(table.reset_index(drop=True), str(source))
    table = split_table(table, recipe.val_fraction, recipe.test_fraction, recipe.seed)
    class_names = sorted(table.loc[table["split"] == "train", "label"].unique())
    unseen = sorted(set(table["label"]) - set(class_names))
    if unseen:
        raise UserError(f"class '{unseen[0]}' appears in val/test but has no training images")
    if len(class_names) < 2:
        raise UserError("the training split has a single class; a classifier needs two")
    return ImageData(table.reset_index(drop=True), class_names, skipped)


def decode_image(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read any JPEG/PNG/BMP/GIF as RGB float32 in 0-255, resized to a square."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    # channels=3 turns grayscale and RGBA into RGB; expand_animations=False keeps GIF frame 1.
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, (image_size, image_size))


def augmentation_layers(augment: Augment, seed: int) -> list[Any]:
    """Keras preprocessing layers for the recipe's augmentation (training stream only)."""
    import keras

    layers: list[Any] = []
    if augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if augment.rotation:
        layers.append(keras.layers.RandomRotation(augment.rotation, fill_mode="reflect", seed=seed))
    if augment.zoom:
        layers.append(keras.layers.RandomZoom(augment.zoom, fill_mode="reflect", seed=seed))
    if augment.contrast:
        layers.append(keras.layers.RandomContrast(augment.contrast, value_range=(0, 255),
                                                  seed=seed))
    return layers


def make_dataset(paths: list[str], labels: np.ndarray, image_size: int, batch_size: int, *,
                 training: bool = False, augment: Augment | None = None, cache: bool = False,
                 seed: int = 0) -> tf.data.Dataset:
    """A batched tf.data pipeline of (image, label): parallel decode, optional cache, prefetch.

    Example:
        >>> ds = make_dataset(["a.png"], np.array([0]), 32, 8)  # doctest: +SKIP
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, "int32")))
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda p, y: (decode_image(p, image_size), y),
                          num_parallel_calls=autotune, deterministic=not training)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.batch(batch_size)
    if training and augment is not None:
        layers = augmentation_layers(augment, seed)
        if layers:
            def apply(images: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                for layer in layers:
                    images = layer(images, training=True)
                return images, y

            dataset = dataset.map(apply, num_parallel_calls=autotune)
    return dataset.prefetch(autotune)


def balanced_class_weight(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights: n_samples / (n_classes * count of the class)."""
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.arange(n_classes)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}
