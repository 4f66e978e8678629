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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import UserError

if TYPE_CHECKING:
    import keras
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from tlkit.backbones import Backbone

# Per run kind: its methods, the default first.
METHODS: dict[str, tuple[str, ...]] = {
    "image": ("gradcam", "saliency", "smoothgrad"),
    "textcnn": ("ngrams", "saliency"),
}
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
    from tlkit.backbones import get_backbone
    from tlkit.predict import gather_inputs, open_run
    from tlkit.runs import load_run

    run = load_run(run_path, model=False)
    method = _check_method(run.kind, method)
    class_index = None if class_name is None else _class_index(run.class_names, class_name)
    _check_inputs(run.kind, inputs, data, method, top)
    items = gather_inputs(run, inputs, data, encoding=getattr(run.recipe, "encoding", "utf-8"))
    run = open_run(run)
    if run.kind == "image":
        return explain_images(run.model, get_backbone(run.recipe.backbone), items, method,
                              class_index, Path(out) if out else run.path / "explanations",
                              class_names=run.class_names)
    table = _explain_texts(run, items, method, class_index, data is not None, top)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / f"{'top_ngrams' if data else method}.csv", index=False)
    return table


def _check_method(kind: str, method: str | None) -> str:
    choices = METHODS[kind]
    if method is None:
        return choices[0]
    if method not in choices:
        other = next(k for k in METHODS if k != kind)
        where = f" ({_a(other)} method)" if method in METHODS[other] else ""
        raise UserError(f"method '{method}' does not fit {_a(kind)} run{where}; choose one "
                        f"of: {', '.join(choices)}")
    return method


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _class_index(class_names: list[str], class_name: str) -> int:
    if class_name not in class_names:
        shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
        raise UserError(f"unknown --class '{class_name}'; this run's classes are: {shown}")
    return class_names.index(class_name)


def _check_inputs(kind: str, inputs: Sequence[str], data: str | Path | None, method: str,
                  top: int | None = None) -> None:
    if top is not None and top < 1:
        raise UserError(f"--top {top}: give 1 or more n-grams to show")
    what = "image files or folders" if kind == "image" else "sentences in quotes, or --data FILE"
    if not inputs and data is None:
        raise UserError(f"no inputs to explain; give {what}")
    if kind == "textcnn":
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
    if kind == "image":
        raise UserError("--data (top n-grams over a dataset) is for text runs; give an image "
                        "run image files or folders")
    if inputs:
        raise UserError("give sentences or --data FILE, not both")
    if method != "ngrams":
        raise UserError("--data ranks n-grams per class over a dataset (method ngrams); "
                        f"explain single sentences with --method {method}")


def _explain_texts(run: Any, texts: list[str], method: str, class_index: int | None,
                   over_dataset: bool, top: int | None) -> pd.DataFrame:
    from tlkit.explain.text import explain_sentences, token_saliency, top_ngrams

    if over_dataset:
        return top_ngrams(run, texts, top or TOP_PER_CLASS)
    if method == "saliency":
        return token_saliency(run, texts, class_index)
    return explain_sentences(run, texts, top or TOP_PER_SENTENCE, class_index)


def explain_images(model: keras.Model, row: Backbone | None, paths: Sequence[str | Path],
                   method: str = "gradcam", class_index: int | None = None,
                   out_dir: str | Path = "explanations",
                   class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Heatmaps of ``paths`` with an image classifier, written as PNG overlays and ``.npy``.

    Grad-CAM taps ``row.last_conv`` (the backbone table's last convolution), or the model's
    last feature map when there is no row or the row names none. Files are
    ``OUT/<image stem>.<method>.png`` and ``.npy``. Returns one row per image: ``path``,
    ``class`` (explained), ``probability`` (of that class), ``png``, ``npy``.

    Example:
        >>> explain_images(model, get_backbone("vgg16"), ["cat.jpg"], "gradcam")  # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd

    from tlkit.explain.gradcam import default_layer, gradcam_maps
    from tlkit.explain.saliency import (
        class_indices,
        gradient_maps,
        predict_logits,
        score_model,
        smoothgrad_maps,
    )

    maps_of = {"gradcam": gradcam_maps, "saliency": gradient_maps, "smoothgrad": smoothgrad_maps}
    if method not in maps_of:
        raise UserError(f"unknown image method '{method}'; choose one of: {', '.join(maps_of)}")
    layer = ((row.last_conv if row else None) or default_layer(model)) \
        if method == "gradcam" else None
    scores = score_model(model, layer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stems = _unique_stems([Path(p) for p in paths])
    rows = []
    for start in range(0, len(paths), IMAGE_BATCH):
        chunk = list(paths[start:start + IMAGE_BATCH])
        images = np.stack([load_image(p, model.input_shape[1:3]) for p in chunk])
        logits = predict_logits(scores, images)
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        classes = class_indices(logits, class_index)
        heatmaps = maps_of[method](scores, images, classes)
        for i, path in enumerate(chunk):
            name = class_names[classes[i]] if class_names else str(classes[i])
            probability = float(probabilities[i, classes[i]])
            png, npy = (out_dir / f"{stems[start + i]}.{method}.{kind}" for kind in ("png", "npy"))
            np.save(npy, heatmaps[i])
            overlay_figure(images[i], heatmaps[i], f"{method}: {name} ({probability:.2f})"
                           ).savefig(png)
            rows.append({"path": str(path), "class": name, "probability": probability,
                         "png": str(png), "npy": str(npy)})
    return pd.DataFrame(rows)


def _unique_stems(paths: list[Path]) -> list[str]:
    """File stems, numbered where two inputs share one (``cat``, ``cat-2``)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}-{seen[path.stem]}")
    return stems


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image as the run's model takes it: RGB float32 0-255, resized like in training.

    Example:
        >>> load_image("cat.jpg", (224, 224)).shape  # doctest: +SKIP
        (224, 224, 3)
    """
    import tensorflow as tf

    from tlkit.data.images import decode_image

    if size[0] != size[1]:
        raise UserError(f"the model takes {size[0]}x{size[1]} images; tlkit classifiers are "
                        "square")
    try:
        return decode_image(tf.constant(str(path)), size[0]).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        reason = str(error.message).strip().splitlines()[0]
        raise UserError(f"cannot read image '{path}': {reason}") from error


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
