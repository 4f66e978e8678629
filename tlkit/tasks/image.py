"""Image classification, one label per image: the ``image`` kind of run.

Inputs are image files (JPEG, PNG, BMP, GIF, WebP); the model takes them as RGB 0-255
squares, decoded by ``tlkit.data.images.decode_once``, the one decode path.

Example:
    >>> ImageTask().gather_inputs(None, ["datasets/shapes/circle"])[0]
    'datasets/shapes/circle/circle_000.jpg'
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.choices import TTA_LEVELS
from tlkit.errors import UserError
from tlkit.runs import SPLIT_FILE
from tlkit.tasks.base import PREDICT_BATCH, Task

if TYPE_CHECKING:
    import pandas as pd

MAX_PATH = 4096  # longer strings are never paths (PATH_MAX), only base64 data
# The side of a test-time augmentation crop, as a fraction of the image's: small enough that
# the five crops differ, large enough that each still holds most of the object.
CROP_FRACTION = 0.9


class ImageTask(Task):
    """Single-label image classification (recipe kind ``image``).

    Example:
        >>> task = ImageTask()
        >>> task.name, task.activation, task.gallery
        ('image', 'softmax', 'thumbnails')
    """

    name = "image"
    noun = "image"
    inputs_hint = "image files or folders"
    explain_methods = ("gradcam", "saliency", "smoothgrad")
    explainer = "images"
    gallery = "thumbnails"
    reference_file = SPLIT_FILE
    reference_column = "path"
    plans_memory = True
    tta_levels = tuple(TTA_LEVELS)

    def read_labelled(self, run: Any, data: Any, columns: dict[str, str | None]
                      ) -> pd.DataFrame:
        """``input, label`` rows of one folder or CSV; data naming its splits gives its test
        split (the others were trained or tuned on).

        Example:
            >>> from tlkit.recipes import ImageRecipe
            >>> from tlkit.runs import Run
            >>> run = Run(Path("r"), "image", ImageRecipe(), ["circle", "square", "triangle"], {})
            >>> ImageTask().read_labelled(run, "datasets/shapes", {}).iloc[0].to_dict()
            {'input': 'datasets/shapes/circle/circle_000.jpg', 'label': 'circle'}
        """
        import pandas as pd

        from tlkit.data.images import read_image_table
        from tlkit.data.labels import LabelFormat

        if isinstance(data, list):
            raise UserError(f"{len(data)} --data were given; an image run is evaluated on one "
                            "folder or CSV/TSV at a time")
        recipe = run.recipe
        given = {key: value for key, value in columns.items() if value is not None}
        table = read_image_table(data, given.get("path_column", recipe.path_column),
                                 given.get("label_column", recipe.label_column), min_classes=1,
                                 labels=LabelFormat.of(recipe))
        named = table["split"].dropna()
        if len(named):
            if not (named == "test").any():
                raise UserError(f"the data names its splits ({', '.join(sorted(set(named)))}) "
                                "but has no test images; pass --data the images to evaluate on")
            table = table[table["split"] == "test"]
        return pd.DataFrame({"input": table["path"], "label": table["label"]})

    def gather_inputs(self, run: Any, inputs: Sequence[str]) -> list[str]:
        """Image files, the images of folders, and the paths of CSV/TSV files' ``path``."""
        from tlkit.data.tables import is_table_file

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
                raise UserError(f"'{item}' is not an image file, a folder or a CSV of paths; "
                                "this is an image run (text goes to a text run)")
        return paths

    def file_inputs(self, run: Any, path: Path, column: str | None, encoding: str
                    ) -> list[str]:
        """The image paths of a CSV/TSV's ``column`` (default the recipe's path column)."""
        return _csv_image_paths(path, column or run.recipe.path_column)

    def batches(self, model: Any, items: Sequence[str]) -> Iterator[tuple[np.ndarray, Any]]:
        """Images decoded at the model's input size; files that do not decode are left out."""
        from tlkit.data.images import decode_once

        yield from decode_once(list(items), input_side(model), PREDICT_BATCH)

    def views(self, batch: Any, tta: str) -> Iterator[Any]:
        """The views of the decoded batch that ``tta`` names (``tta_views``)."""
        return tta_views(batch, tta)

    def failure(self, item: str) -> str:
        """Why ``item`` did not decode (the file is read again only to say this)."""
        from tlkit.data.images import unreadable_reason

        return unreadable_reason(item) or "could not be decoded as an image"

    def reference_items(self, run: Any, items: list[str], split: str) -> list[str]:
        """The run's held-out images, which must still be where the run found them."""
        missing = [p for p in items if not Path(p).is_file()]
        if missing:
            raise UserError(f"{len(missing)} {split} image(s) of the run are gone (first: "
                            f"'{missing[0]}'); the export check reads them where the run "
                            "found them")
        return items

    def exported_model(self, run: Any, fmt: str) -> tuple[Any, Any, str]:
        """The run's model itself, taking ``image`` float32 batches of its size.

        Example:
            >>> from tlkit.backbones import build_tiny_cnn
            >>> from tlkit.runs import Run
            >>> run = Run(Path("runs/shapes"), "image", None, ["circle", "square"], {},
            ...           model=build_tiny_cnn(include_top=True, classes=2))
            >>> ImageTask().exported_model(run, "onnx")[1:]
            (TensorSpec(shape=(None, 32, 32, 3), dtype=tf.float32, name='image'), 'images')
        """
        import tensorflow as tf

        size = input_side(run.model)
        return run.model, tf.TensorSpec((None, size, size, 3), tf.float32, name="image"), \
            "images"

    def export_batches(self, run: Any, items: Sequence[str], takes: str
                       ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The images as ``probabilities`` decodes them, as arrays for the exported model."""
        for rows, images in self.batches(run.model, items):
            yield rows, np.asarray(images)

    def check_explain_inputs(self, inputs: Sequence[str], data: str | Path | None,
                             method: str) -> None:
        """Images are explained one by one: ``--data`` (n-grams over a dataset) is refused.

        Example:
            >>> ImageTask().check_explain_inputs([], "texts.csv", "gradcam")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            tlkit.errors.UserError: --data (top n-grams over a dataset) is for text runs; ...
        """
        if data is not None:
            raise UserError("--data (top n-grams over a dataset) is for text runs; give an "
                            "image run image files or folders")

    def request_inputs(self, request: Any, folder: Path, allow: Path | None
                       ) -> tuple[list[str], list[str | None]]:
        """A file per input (an allowed path, or base64 data written to ``folder``) or an
        error.

        Example:
            >>> import tempfile
            >>> from tlkit.serve import Request
            >>> ImageTask().request_inputs(Request(["/etc/passwd"]), Path(tempfile.mkdtemp()),
            ...                            None)[1]  # doctest: +ELLIPSIS
            ['input 0 is not base64 image data (image paths are off on this server; ...']
        """
        paths: list[str] = []
        errors: list[str | None] = []
        for i, item in enumerate(request.inputs):
            allowed = None if i in request.encoded else allowed_file(item, allow)
            content = b"" if allowed else _base64_bytes(item)
            if allowed:
                paths.append(str(allowed))
            elif content:
                path = folder / str(i)
                path.write_bytes(content)
                paths.append(str(path))
            else:
                paths.append("")
            errors.append(None if allowed or content else _unreadable(request, i, allow))
        return paths, errors

    def request_error(self, request: Any, i: int, item: str, error: str) -> str:
        """The input named by its position: the path the model read is the server's own."""
        reason = error.replace(f" '{item}'", "").replace(item, "the file")
        return f"{request.word} {i} is not a decodable image ({reason})"


def tta_views(images: Any, level: str) -> Iterator[Any]:
    """The test-time augmentation views of a batch of square images, one at a time, in a
    fixed order: the batch, its horizontal flip, then for ``flip-crops`` the crops of
    ``CROP_FRACTION`` of the side at the top-left, top-right, bottom-left and bottom-right
    corners and the centre, each resized (bilinear) back to the batch's side.

    Example:
        >>> import tensorflow as tf
        >>> row = tf.reshape(tf.range(4, dtype=tf.float32), (1, 1, 4, 1))
        >>> images = tf.tile(row, (1, 4, 1, 3))  # one 4x4 image, columns 0 1 2 3
        >>> [view[0, 0, :, 0].numpy().tolist() for view in tta_views(images, "flip")]
        [[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]]
        >>> len(list(tta_views(images, "flip-crops")))
        7
    """
    import tensorflow as tf

    yield images
    yield tf.reverse(images, axis=[2])  # NHWC: axis 2 runs left to right
    if level != "flip-crops":
        return
    side = int(images.shape[1])
    crop = max(1, round(side * CROP_FRACTION))
    margin = side - crop
    for top, left in ((0, 0), (0, margin), (margin, 0), (margin, margin),
                      (margin // 2, margin // 2)):
        window = images[:, top:top + crop, left:left + crop, :]
        yield tf.image.resize(window, (side, side))


def input_side(model: Any) -> int:
    """The side of the square images ``model`` takes; other shapes are a UserError.

    Example:
        >>> from tlkit.backbones import build_tiny_cnn
        >>> input_side(build_tiny_cnn(include_top=True, classes=2))
        32
    """
    height, width = model.input_shape[1:3]
    if height != width:
        raise UserError(f"the model takes {height}x{width} images; tlkit classifiers are square")
    return int(height)


def folder_images(folder: Path) -> list[Path]:
    """The images under ``folder``; files in formats tlkit does not read get one warning.

    The walk and the warning (on stderr) are training's own (``tlkit.data.images``), so both
    say the same about HEIC, AVIF, ... files; a folder with no image is a UserError.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> for name in ("a.png", "b.heic"): (folder / name).touch()
        >>> [p.name for p in folder_images(folder)]  # and a warning about b.heic on stderr
        ['a.png']
    """
    from tlkit.data.images import (
        IMAGE_EXTENSIONS,
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


def _csv_image_paths(path: Path, column: str) -> list[str]:
    from tlkit.data.tables import read_table, require_columns

    frame = read_table(path)
    require_columns(frame, {column: "--column"}, f"'{path}'")
    return [str(p if Path(p).is_absolute() else path.parent / p) for p in frame[column]]


def allowed_file(item: str, allow: Path | None) -> Path | None:
    """``item`` as a file under ``allow`` (relative ones taken from it), or None.

    Symlinks and ``..`` are resolved first, so nothing outside the folder is reached, and a
    path outside it is refused before its existence is looked at.

    Example:
        >>> allowed_file("/etc/passwd", Path("/etc")), allowed_file("/etc/passwd", None)
        (PosixPath('/etc/passwd'), None)
    """
    if allow is None or not item or len(item) >= MAX_PATH:
        return None
    # Lexically outside (``/etc/shadow``, ``../x``): refused without touching the disk.
    if not Path(os.path.normpath(allow / item)).is_relative_to(allow):
        return None
    try:
        path = (allow / item).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return path if path.is_relative_to(allow) and path.is_file() else None


def _base64_bytes(item: str) -> bytes:
    """The bytes of base64 text (a ``data:...;base64,`` prefix allowed), or b"" if none."""
    data = item.split(";base64,", 1)[1] if item.startswith("data:") else item
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error
        return b""


def _unreadable(request: Any, i: int, allow: Path | None) -> str:
    """Why input ``i`` is neither an allowed file nor base64: the same for any path."""
    name = f"{request.word} {i}"
    if i in request.encoded:
        return f"{name} is not base64 data"
    if allow is None:
        return (f"{name} is not base64 image data (image paths are off on this server; its "
                "operator can allow a folder with --allow-paths)")
    return f"{name} is neither an image file under the allowed folder nor base64 image data"
