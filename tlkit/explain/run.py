"""Explain what a finished run looks at: heatmaps for image runs, n-grams for text runs.

``explain_run`` opens the run folder, lets the recipe's kind pick the methods, checks the
inputs before any model loads, and returns a table. Image methods write, per image, an
overlay PNG (what the model saw | the heatmap over it) and the raw heatmap as ``.npy``
(float32 at the model's input resolution, non-negative, summing to 1).

Example:
    >>> table = explain_run("runs/flowers", ["daisy.jpg"], out="expl")  # doctest: +SKIP
    >>> table.columns.tolist()  # doctest: +SKIP
    ['path', 'class', 'probability', 'png', 'npy']
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import UserError
from tlkit.files import write_bytes, write_text

if TYPE_CHECKING:
    import keras
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from tlkit.backbones import Backbone

IMAGE_BATCH = 16
TOP_PER_SENTENCE = 5
TOP_PER_CLASS = 10


def explain_run(run_path: str | Path, inputs: Sequence[str], method: str | None = None,
                class_name: str | None = None, out: str | Path | None = None,
                data: str | Path | None = None, top: int | None = None) -> pd.DataFrame:
    """Explain ``inputs`` with a run: image files/folders, or sentences for a text run.

    ``method`` None takes the kind's default (gradcam, ngrams); ``class_name`` explains that
    class instead of the predicted one. Image runs write into ``out`` (default
    ``RUN/explanations``) and return ``path, class, probability, png, npy``. Text runs return
    the ``top`` n-grams per sentence (``explain_sentences``), token saliency
    (``token_saliency``) or, with ``data`` (CSV/TSV or one sentence per line), the ``top``
    n-grams per class over it (``top_ngrams``); with ``out`` the table is also written there.

    Example:
        >>> explain_run("runs/trec", ["How far is the moon ?"])  # doctest: +SKIP
    """
    from tlkit.predict import gather_inputs, open_run
    from tlkit.runs import read_run
    from tlkit.tasks import task_of

    run = read_run(run_path)
    task = task_of(run)  # the kind's methods and input checks, all before the model loads
    method = task.check_method(method)
    class_index = None if class_name is None else _class_index(run.class_names, class_name)
    if top is not None and top < 1:
        raise UserError(f"--top {top}: give 1 or more n-grams to show")
    if not inputs and data is None:
        raise UserError(f"no inputs to explain; give {task.inputs_hint}")
    task.check_explain_inputs(inputs, data, method)
    items = gather_inputs(run, inputs, data, encoding=getattr(run.recipe, "encoding", "utf-8"))
    run = open_run(run)
    return EXPLAINERS[task.explainer](run, items, method, class_index, out, data, top)


def _class_index(class_names: list[str], class_name: str) -> int:
    if class_name not in class_names:
        shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
        raise UserError(f"unknown --class '{class_name}'; this run's classes are: {shown}")
    return class_names.index(class_name)


def _run_images(run: Any, paths: list[str], method: str, class_index: int | None,
                out: str | Path | None, data: str | Path | None, top: int | None
                ) -> pd.DataFrame:
    from tlkit.backbones import get_backbone

    return explain_images(run.model, get_backbone(run.recipe.backbone), paths, method,
                          class_index, Path(out) if out else run.path / "explanations",
                          class_names=run.class_names)


def _run_sentences(run: Any, texts: list[str], method: str, class_index: int | None,
                   out: str | Path | None, data: str | Path | None, top: int | None
                   ) -> pd.DataFrame:
    from tlkit.explain.text import explain_sentences, token_saliency, top_ngrams

    if data is not None:
        table = top_ngrams(run, texts, top or TOP_PER_CLASS)
    elif method == "saliency":
        table = token_saliency(run, texts, class_index)
    else:
        table = explain_sentences(run, texts, top or TOP_PER_SENTENCE, class_index)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / f"{'top_ngrams' if data else method}.csv", table.to_csv(index=False))
    return table


# What explains each kind of run: a task's ``explainer`` names its row.
EXPLAINERS = {"images": _run_images, "sentences": _run_sentences}


def explain_images(model: keras.Model, row: Backbone | None, paths: Sequence[str | Path],
                   method: str = "gradcam", class_index: int | None = None,
                   out_dir: str | Path = "explanations",
                   class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Heatmaps of ``paths`` with an image classifier, written as PNG overlays and ``.npy``.

    Grad-CAM taps ``row.last_conv`` (the backbone table's last convolution), or the model's
    last feature map when there is no row or the row names none. Files are
    ``OUT/<image stem>.<method>.png`` and ``.npy``. Returns one row per image: ``path``,
    ``class`` (explained), ``probability`` (of that class), ``png``, ``npy``. Files that do
    not decode, or are in formats tlkit does not read (HEIC, ...), are skipped with a
    warning; when none is left, that is the error.

    Example:
        >>> explain_images(model, get_backbone("vgg16"), ["cat.jpg"], "gradcam")  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    from tlkit.data.images import OTHER_IMAGE_EXTENSIONS
    from tlkit.explain.gradcam import default_layer, gradcam_maps
    from tlkit.explain.saliency import (
        class_indices,
        gradient_maps,
        predict_logits,
        score_model,
        smoothgrad_maps,
    )
    from tlkit.tasks.image import input_side

    maps_of = {"gradcam": gradcam_maps, "saliency": gradient_maps, "smoothgrad": smoothgrad_maps}
    if method not in maps_of:
        raise UserError(f"unknown image method '{method}'; choose one of: {', '.join(maps_of)}")
    side = input_side(model)
    layer = ((row.last_conv if row else None) or default_layer(model)) \
        if method == "gradcam" else None
    scores = score_model(model, layer)
    out_dir = Path(out_dir)
    others = [str(p) for p in paths if Path(p).suffix.lower() in OTHER_IMAGE_EXTENSIONS]
    kept = [str(p) for p in paths if Path(p).suffix.lower() not in OTHER_IMAGE_EXTENSIONS]
    stems = dict(zip(kept, _unique_stems([Path(p) for p in kept]), strict=True))
    rows: list[dict[str, Any]] = []
    unreadable: list[tuple[str, str]] = []
    for start in range(0, len(kept), IMAGE_BATCH):
        chunk, images = _decode(kept[start:start + IMAGE_BATCH], side, unreadable)
        if not chunk:
            continue
        logits = predict_logits(scores, images)
        # The model's own outputs: a softmax over the logits would misstate a sigmoid head's.
        probabilities = np.asarray(model.predict_on_batch(images))
        classes = class_indices(logits, class_index)
        heatmaps = maps_of[method](scores, images, classes)
        for i, path in enumerate(chunk):
            name = class_names[classes[i]] if class_names else str(classes[i])
            rows.append(_write_explanation(path, out_dir / f"{stems[path]}.{method}", images[i],
                                           heatmaps[i], method, name,
                                           float(probabilities[i, classes[i]])))
    _skipped(others, unreadable, explained=len(rows))
    return pd.DataFrame(rows)


def _decode(paths: list[str], side: int, unreadable: list[tuple[str, str]]
            ) -> tuple[list[str], np.ndarray]:
    """The paths that decode and their images; the others join ``unreadable`` with why."""
    import numpy as np

    from tlkit.data.images import decode_once, unreadable_reason

    images = np.zeros((len(paths), side, side, 3), dtype="float32")
    decoded = np.zeros(len(paths), dtype=bool)
    for rows, batch in decode_once(paths, side, max(len(paths), 1)):
        images[rows], decoded[rows] = batch.numpy(), True
    # TensorFlow's own message misnames the formats it reads; Pillow's reason is the plain one.
    unreadable += [(path, unreadable_reason(path) or "could not be decoded as an image")
                   for path, ok in zip(paths, decoded, strict=True) if not ok]
    return [path for path, ok in zip(paths, decoded, strict=True) if ok], images[decoded]


def _skipped(others: list[str], unreadable: list[tuple[str, str]], explained: int) -> None:
    """One warning per kind of skipped file (as training gives), or the error if none is left."""
    from tlkit.data.images import _warn_other_formats

    if not explained:
        why = [(path, f"{Path(path).suffix.lower()} is a format tlkit does not read") for path
               in others] + unreadable
        path, reason = why[0]
        head = (f"cannot read image '{path}'" if len(why) == 1 else
                f"none of the {len(why)} images can be read, e.g. '{path}'")
        raise UserError(f"{head}: {reason}; give JPEG, PNG, BMP, GIF or WebP images")
    _warn_other_formats([Path(path) for path in others])
    if unreadable:
        listing = "; ".join(f"{path} ({reason})" for path, reason in unreadable)
        print(f"warning: skipping {len(unreadable)} unreadable image(s): {listing}",
              file=sys.stderr, flush=True)


def _write_explanation(path: str, base: Path, image: np.ndarray, heatmap: np.ndarray,
                       method: str, name: str, probability: float) -> dict[str, Any]:
    """Write ``BASE.png`` (the overlay) and ``BASE.npy`` (the heatmap), each renamed into place."""
    import numpy as np

    png, npy = base.with_name(f"{base.name}.png"), base.with_name(f"{base.name}.npy")
    png.parent.mkdir(parents=True, exist_ok=True)
    heatmap_bytes, overlay = io.BytesIO(), io.BytesIO()
    np.save(heatmap_bytes, heatmap)
    overlay_figure(image, heatmap, f"{method}: {name} ({probability:.2f})").savefig(
        overlay, format="png")
    write_bytes(npy, heatmap_bytes.getvalue())
    write_bytes(png, overlay.getvalue())
    return {"path": path, "class": name, "probability": probability, "png": str(png),
            "npy": str(npy)}


def _unique_stems(paths: list[Path]) -> list[str]:
    """File stems, numbered where two inputs share one (``cat``, ``cat-2``)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image as the run's model takes it: RGB float32 0-255, decoded as predict does.

    Example:
        >>> load_image("datasets/shapes/circle/circle_000.jpg", (32, 32)).shape
        (32, 32, 3)
    """
    if size[0] != size[1]:
        raise UserError(f"the model takes {size[0]}x{size[1]} images; tlkit classifiers are "
                        "square")
    unreadable: list[tuple[str, str]] = []
    decoded, images = _decode([str(path)], size[0], unreadable)
    if not decoded:
        raise UserError(f"cannot read image '{path}': {unreadable[0][1]}")
    return images[0]


def overlay_figure(image: np.ndarray, heatmap: np.ndarray, title: str = "") -> Figure:
    """A figure of ``image`` (RGB 0-255) beside it with ``heatmap`` over it; never shown.

    Example:
        >>> import numpy as np
        >>> figure = overlay_figure(np.zeros((8, 8, 3)), np.ones((8, 8)) / 64, "demo")
        >>> len(figure.axes)
        2
    """
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.4), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    picture = np.clip(image, 0, 255).astype("uint8")
    left.imshow(picture)
    left.set_title("input (as the model sees it)", fontsize=9)
    right.imshow(picture)
    # Gradient maps are sparse: scaled to their maximum, one pixel would be all that shows.
    peak = float(np.percentile(heatmap, 99)) or float(heatmap.max()) or 1.0
    right.imshow(np.minimum(heatmap / peak, 1.0), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    right.set_title(title, fontsize=9)
    for axis in (left, right):
        axis.set_axis_off()
    return figure
