"""``inspect_model``: the per-layer table of a backbone, a saved tlkit model or any Keras model.

Example:
    >>> row = inspect_model("tiny_cnn").loc["block3_conv"]
    >>> row.output_shape, int(row.params), row.rf
    ((8, 8, 32), 4608, (18, 18))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.backbones import BACKBONES, build_backbone, check_input_size, get_backbone
from tlkit.errors import UserError
from tlkit.inspection import memory
from tlkit.inspection.layers import Step, block_names, shapes_only, walk_model
from tlkit.inspection.memory import training_memory

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("type", "kind", "activation", "output_shape", "params", "trainable_params",
           "frozen_params", "param_bytes", "rf", "jump", "rf_centre", "activations",
           "activation_bytes", "macs", "block", "head", "inputs", "note")


def inspect_model(model_or_name: Any, input_size: int | None = None, include_top: bool = False,
                  dtype: str = "float32", classes: int | None = None) -> pd.DataFrame:
    """One row per layer call: shapes, parameters, receptive field, activations and MACs.

    ``model_or_name`` is a backbone name (built without allocating weights), a run folder
    holding ``model.keras``, a ``.keras`` file, or a Keras functional/Sequential model; nested
    models are expanded into ``outer/inner`` rows. ``input_size`` sets the side (or sequence
    length) of a backbone or of a model built with unspecified sizes; ``include_top`` adds a
    backbone's ImageNet classifier; ``classes`` instead wraps the backbone into the classifier
    ``tlkit finetune`` trains (preprocessing, backbone, head); ``dtype`` sizes the activations.
    Totals: ``inspection_totals(table)``; columns: docs/inspection.md.

    Example:
        >>> table = inspect_model("vgg16", include_top=True)
        >>> int(table["params"].sum()), int(table["activations"].sum())
        (138357544, 15237608)
    """
    import pandas as pd

    value_bytes = memory.dtype_bytes(dtype)
    model, blocks = _resolve(model_or_name, input_size, include_top, classes)
    # A backbone name was built at input_size already; a given model may still need it.
    sized = None if is_backbone_name(model_or_name) else input_size
    steps = walk_model(model, blocks, input_size=sized)
    rows = [_row(step, value_bytes) for step in steps]
    table = pd.DataFrame(rows, index=pd.Index([s.name for s in steps], name="name"))
    table["head"] = _head_rows(steps)
    for column in ("activations", "activation_bytes", "macs"):
        table[column] = table[column].astype("Int64")
    table = table[list(COLUMNS)]
    table.attrs.update(model=model.name, dtype=dtype, unit=_example_unit(model))
    return table


def _example_unit(model: Any) -> str:
    """What one example of ``model`` is: an image (4-d input), a sentence (strings or token
    ids) or, for anything else, an example."""
    spec = model.inputs[0]
    if len(spec.shape) == 4:
        return "image"
    return "sentence" if spec.dtype == "string" or "int" in str(spec.dtype) else "example"


def is_backbone_name(value: Any) -> bool:
    """True for a string naming a row of the backbone table (any case, ``-`` for ``_``).

    Example:
        >>> is_backbone_name("Tiny-CNN"), is_backbone_name("runs/flowers")
        (True, False)
    """
    return isinstance(value, str) and value.lower().replace("-", "_") in BACKBONES


def check_target(target: Any, input_size: int | None = None) -> None:
    """Raise the UserError ``inspect_model`` would raise for ``target``, before any model loads.

    Needs neither Keras nor pandas, so a mistyped name answers at once.

    Example:
        >>> check_target("vgg61")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tlkit.errors.UserError: unknown backbone 'vgg61'; choose one of: ...
    """
    if is_backbone_name(target):
        row = get_backbone(target)
        check_input_size(row, input_size or row.default_size)
    elif isinstance(target, str | Path):
        saved_model_file(target)


def _resolve(target: Any, input_size: int | None, include_top: bool, classes: int | None
             ) -> tuple[Any, dict[str, str] | None]:
    """The model to walk and, for a bare backbone name, its layers' block names."""
    if classes is not None and (include_top or not is_backbone_name(target)):
        raise UserError("classes wraps a backbone name into a tlkit classifier; it does not go "
                        "with include_top or with a model")
    check_target(target, input_size)
    if is_backbone_name(target):
        row = get_backbone(target)
        with shapes_only():
            model = build_backbone(row.name, input_size, include_top=include_top)
            if classes is not None:
                from tlkit.models.image import build_classifier

                return build_classifier(row, model, classes), None
        return model, block_names(model, row)
    if isinstance(target, str | Path):
        return load_saved_model(target), None
    if not hasattr(target, "layers"):
        raise UserError(f"cannot inspect {type(target).__name__}; pass a backbone name, a run "
                        "folder, a .keras file or a Keras model")
    return target, None


def saved_model_file(path: str | Path) -> Path:
    """The ``.keras`` file of a run folder or a path, or a UserError saying what would work.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> saved_model_file(folder)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: '...' is a folder without model.keras; give a backbone name ...
        >>> (folder / "model.keras").touch(); saved_model_file(folder).name
        'model.keras'
    """
    path = Path(path)
    from tlkit.runs import MODEL_FILE  # the run folder reads pandas: not for --help

    file = path / MODEL_FILE if path.is_dir() else path
    if not file.is_file() or file.suffix != ".keras":
        if "/" not in str(path) and path.suffix != ".keras" and not path.exists():
            get_backbone(str(path))  # a bare word: most likely a mistyped backbone name
        what = "folder without model.keras" if path.is_dir() else (
            "file that is not .keras" if path.exists() else "path that does not exist")
        raise UserError(f"'{path}' is a {what}; give a backbone name (see `tlkit backbones`), "
                        "a run folder holding model.keras, or a .keras file")
    return file


def load_saved_model(path: str | Path) -> Any:
    """Load a run folder's ``model.keras`` or a ``.keras`` file, or explain what would work.

    Example:
        >>> import keras, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "small.keras"
        >>> keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
        >>> load_saved_model(path).output_shape
        (None, 2)
    """
    from tlkit.models.saved import load_keras_file

    return load_keras_file(saved_model_file(path))


def _row(step: Step, value_bytes: int) -> dict[str, Any]:
    field = step.field
    acts = memory.activations(step)
    return {
        "type": type(step.layer).__name__,
        "kind": step.kind,
        "activation": _activation_name(step.layer),
        "output_shape": step.output_shape,
        "params": step.params,
        "trainable_params": step.trainable_params,
        "frozen_params": step.params - step.trainable_params,
        "param_bytes": step.param_bytes,
        "rf": None if field is None else field.size,
        "jump": None if field is None else field.jump,
        "rf_centre": None if field is None else field.centre,
        "activations": acts,
        "activation_bytes": None if acts is None else acts * value_bytes,
        "macs": memory.macs(step),
        "block": step.block,
        "inputs": tuple(step.inputs),
        "note": "; ".join(step.notes),
    }


def _activation_name(layer: Any) -> str:
    """The activation a layer applies ("relu", "linear", ...), "" for layers without one."""
    function = getattr(layer, "activation", None)
    if function is None:
        return "relu" if type(layer).__name__ == "ReLU" else ""
    return getattr(function, "__name__", type(function).__name__)


def _head_rows(steps: list[Step]) -> list[bool]:
    """True for layers after the last spatial feature map: nothing downstream is spatial."""
    def spatial(step: Step) -> bool:
        if step.field is not None:
            return step.field.spatial
        return len(step.output_shapes[0]) >= 3

    children: dict[str, list[str]] = {s.name: [] for s in steps}
    for step in steps:
        for parent in step.inputs:
            children[parent].append(step.name)
    feeds_map: dict[str, bool] = {}
    by_name = {s.name: s for s in steps}
    for step in reversed(steps):
        feeds_map[step.name] = any(spatial(by_name[c]) or feeds_map[c]
                                   for c in children[step.name])
    return [not spatial(s) and not feeds_map[s.name] for s in steps]


def inspection_totals(table: pd.DataFrame, optimizer: str = "adam",
                      batchnorm: str = "frozen") -> dict[str, Any]:
    """Totals of an ``inspect_model`` table: parameters, activations, MACs, training memory.

    Sums are over the rows, so they always agree with the table. Training memory (bytes,
    ``training_memory`` with ``optimizer`` and the ``batchnorm`` policy) is given for full
    fine-tuning and for training the head only, as fixed bytes plus bytes per image (left
    out when some output size is unknown, and for models that do not take images);
    ``unknown_layers`` lists the rows whose MACs and
    receptive fields could not be computed.

    Example:
        >>> totals = inspection_totals(inspect_model("vgg16", include_top=True))
        >>> totals["params"], totals["activations"], round(totals["macs"] / 1e9, 2)
        (138357544, 15237608, 15.47)
    """
    totals: dict[str, Any] = {
        "layers": len(table),
        "params": int(table["params"].sum()),
        "trainable_params": int(table["trainable_params"].sum()),
        "frozen_params": int(table["frozen_params"].sum()),
        "param_bytes": int(table["param_bytes"].sum()),
        "activations": None, "activation_bytes": None,
        "macs": int(table["macs"].sum()),
        "flops": 2 * int(table["macs"].sum()),
        "unknown_layers": table.index[table["kind"] == "unknown"].tolist(),
        "optimizer": optimizer, "batchnorm": batchnorm,
    }
    if not table["activations"].isna().any():
        totals["activations"] = int(table["activations"].sum())
        totals["activation_bytes"] = int(table["activation_bytes"].sum())
        # The training-memory model is tlkit finetune's, for image classifiers.
        for stage in ("full", "head") if table.attrs.get("unit", "image") == "image" else ():
            estimate = training_memory(table, stage, optimizer, batchnorm)
            totals[f"{stage}_training_fixed_bytes"] = estimate.fixed
            totals[f"{stage}_training_bytes_per_image"] = estimate.per_image
    return totals
