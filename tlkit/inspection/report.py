"""Render inspection tables, totals and batch plans for ``tlkit inspect``.

Example:
    >>> print(conv_report("7x7", filters=1, kernel=3, stride=2))  # doctest: +ELLIPSIS
    input 7x7x1, 1 filters 3x3, stride 2, pad 0
    output side (7 - 3 + 2*0) / 2 + 1 = 3 -> 3x3x1 = 9 units
    ...
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import UserError
from tlkit.files import write_text
from tlkit.inspection.layers import conv_arithmetic
from tlkit.inspection.memory import BatchPlan, format_bytes, parse_memory, plan_batch

if TYPE_CHECKING:
    import pandas as pd

# The CLI builds its choices from this module, so it imports neither pandas nor the model
# table at load time: `tlkit inspect --help` stays instant.
FORMATS = ("table", "csv", "json", "markdown")
# Columns shown by the text and markdown formats; csv and json carry every column.
_SHOWN = {"type": "type", "output_shape": "output", "params": "params",
          "trainable_params": "trainable", "rf": "rf", "jump": "jump", "rf_centre": "centre",
          "activations": "activations", "macs": "MACs", "note": "note"}


_NO_PLAN = ("--memory plans the batches of tlkit finetune, which trains on images; {} does "
            "not take images: leave out --memory")


def inspection_report(target: Any, input_size: int | None = None, include_top: bool = False,
                      dtype: str = "float32", fmt: str = "table",
                      output: str | Path | None = None, memory: str | None = None,
                      stages: tuple[str, ...] = ("head", "full"), optimizer: str = "adam",
                      classes: int = 10, weights: str = "imagenet",
                      batchnorm: str = "auto") -> str:
    """Inspect ``target`` and return what ``tlkit inspect`` prints; write the table to ``output``.

    With ``memory`` (e.g. "8GB") the report adds a batch plan per stage, for ``optimizer``
    and the BatchNorm policy that ``weights`` and ``batchnorm`` put in force, as in
    ``tlkit finetune``. A backbone name is planned as the classifier ``tlkit finetune``
    builds around it (``classes`` outputs); a saved model as it is.

    Example:
        >>> text = inspection_report("tiny_cnn", memory="1GB")
        >>> "largest batch" in text
        True
    """
    from tlkit.inspection.table import (
        check_target,
        inspect_model,
        inspection_totals,
        is_backbone_name,
    )
    from tlkit.recipes import ImageRecipe

    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    # Mistakes that need no model answer before Keras (and pandas) load.
    budget = None if memory is None else parse_memory(memory)
    if output is not None:
        _check_output(Path(output))
    check_target(target, input_size)
    if budget is not None and isinstance(target, str | Path) and not is_backbone_name(target):
        from tlkit.runs import run_kind
        from tlkit.tasks import TASKS

        task = TASKS.get(run_kind(target))  # None: a model file, or a folder of no run
        if task is not None and not task.plans_memory:
            raise UserError(_NO_PLAN.format(target))
    batchnorm = ImageRecipe(weights=weights, batchnorm=batchnorm).batchnorm_policy
    table = inspect_model(target, input_size=input_size, include_top=include_top, dtype=dtype)
    totals = inspection_totals(table, optimizer, batchnorm)
    plans: list[BatchPlan] = []
    if budget is not None:
        if table.attrs["unit"] != "image":
            raise UserError(_NO_PLAN.format(table.attrs["model"]))
        planned = table
        if not include_top and is_backbone_name(target):
            planned = inspect_model(target, input_size=input_size, dtype=dtype, classes=classes)
        plans = [plan_batch(planned, budget, stage, optimizer, batchnorm) for stage in stages]
    rendered = _render(table, fmt, totals, plans)
    summary = render_totals(table, totals)
    if plans:
        summary += "\n" + render_plans(plans, planned.attrs["model"])
    if output is not None:
        # Beside its name, then renamed: a full disk keeps the previous file, in one line.
        write_text(output, rendered + ("" if rendered.endswith("\n") else "\n"))
        return f"{summary}\nwrote {output} ({len(table)} layers, {fmt})"
    if fmt in ("json", "csv"):
        return rendered.rstrip("\n")
    return f"{rendered}\n\n{summary}"


def _check_output(output: Path) -> None:
    """A UserError, before any model loads, when ``output``'s folder cannot take the file."""
    import os

    folder = output.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --output '{output}': '{folder}' is not a writable folder")


def _render(table: pd.DataFrame, fmt: str, totals: dict[str, Any],
            plans: list[BatchPlan]) -> str:
    """The table in ``fmt``; json also carries the totals and the plans."""
    if fmt == "json":
        return json.dumps({"model": table.attrs["model"], "dtype": table.attrs["dtype"],
                           "layers": _records(table), "totals": totals,
                           "plans": [_plan_record(plan) for plan in plans]}, indent=1)
    if fmt == "csv":
        return _cells(table, full=True).to_csv()
    return _grid(_cells(table, full=False), markdown=fmt == "markdown")


def render_totals(table: pd.DataFrame, totals: dict[str, Any]) -> str:
    """The totals as a few lines of text.

    Example:
        >>> from tlkit.inspection.table import inspect_model, inspection_totals
        >>> table = inspect_model("tiny_cnn")
        >>> print(render_totals(table, inspection_totals(table)))  # doctest: +ELLIPSIS
        tiny_cnn: 12 layers, input 32x32x3, activations in float32
        parameters        6,200 (trainable 6,088, frozen 112), 24.80 kB
        ...
    """
    first, unit = table.iloc[0], table.attrs.get("unit", "image")
    lines = [f"{table.attrs['model']}: {totals['layers']} layers, input "
             f"{_dims(first['output_shape']) or unit}, activations in {table.attrs['dtype']}",
             f"parameters        {totals['params']:,} (trainable {totals['trainable_params']:,},"
             f" frozen {totals['frozen_params']:,}), {format_bytes(totals['param_bytes'])}"]
    if totals["activations"] is not None:
        lines.append(f"activations       {totals['activations']:,} per {unit}, forward only: "
                     f"{format_bytes(totals['activation_bytes'])}")
    lines.append(f"MACs              {_si(totals['macs'])} per {unit} "
                 f"(FLOPs {_si(totals['flops'])})")
    if "full_training_fixed_bytes" in totals:
        lines.append("training memory   " + "; ".join(
            f"{label}: {format_bytes(totals[f'{stage}_training_fixed_bytes'])} + "
            f"{format_bytes(totals[f'{stage}_training_bytes_per_image'])} per image"
            for stage, label in (("full", "full fine-tuning"), ("head", "head only")))
            + f" ({totals['optimizer']}, BatchNorm {totals['batchnorm']})")
    if totals["unknown_layers"]:
        lines.append(f"unknown layers    {', '.join(totals['unknown_layers'])} (parameters and "
                     "outputs counted; receptive field and MACs not)")
    return "\n".join(lines)


def render_plans(plans: list[BatchPlan], model: str) -> str:
    """The batch plans as a small table.

    Example:
        >>> from tlkit.inspection.memory import TrainingMemory
        >>> memory = TrainingMemory("full", "adam", "frozen", runtime=700, weights=100,
        ...                         gradients=50, optimizer_state=100, activations=8, pipeline=2)
        >>> print(render_plans([BatchPlan(1300, 35, memory)], "tiny_cnn"))  # doctest: +ELLIPSIS
        batch plan for 1.30 kB (tiny_cnn, adam, BatchNorm frozen when the backbone trains):
          stage  largest batch    estimate       fixed   per image
          full              35     1.30 kB       950 B        10 B
          estimate: peak resident memory of `tlkit finetune` at that batch ...
    """
    memory = plans[0].memory
    lines = [f"batch plan for {format_bytes(plans[0].budget)} ({model}, {memory.optimizer}, "
             f"BatchNorm {memory.batchnorm} when the backbone trains):",
             f"  {'stage':<6} {'largest batch':>13} {'estimate':>11} {'fixed':>11} "
             f"{'per image':>11}"]
    for plan in plans:
        batch = str(plan.batch) if plan.batch else "none fits"
        lines.append(f"  {plan.memory.stage:<6} {batch:>13} {format_bytes(plan.estimate):>11} "
                     f"{format_bytes(plan.memory.fixed):>11} "
                     f"{format_bytes(plan.memory.per_image):>11}")
    lines.append("  estimate: peak resident memory of `tlkit finetune` at that batch (runtime, "
                 "model, data pipeline and evaluation included); docs/inspection.md")
    return "\n".join(lines)


def _plan_record(plan: BatchPlan) -> dict[str, Any]:
    return {"stage": plan.memory.stage, "optimizer": plan.memory.optimizer,
            "batchnorm": plan.memory.batchnorm, "budget_bytes": plan.budget,
            "batch": plan.batch, "estimate_bytes": plan.estimate,
            "fixed_bytes": plan.memory.fixed, "per_image_bytes": plan.memory.per_image}


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for name, row in table.iterrows():
        record: dict[str, Any] = {"name": name}
        for column, value in row.items():
            record[column] = None if _missing(value) else (
                list(value) if isinstance(value, tuple) else
                value.item() if hasattr(value, "item") else value)
        records.append(record)
    return records


def _dims(value: Any, square: bool = False) -> str:
    """``(224, 224, 64)`` -> ``224x224x64``; with ``square``, ``(3, 3)`` -> ``3``."""
    if _missing(value):
        return ""
    if value and isinstance(value[0], tuple):
        return " + ".join(_dims(part) for part in value)
    if square and len(set(value)) == 1:
        value = value[:1]
    return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


def _cells(table: pd.DataFrame, full: bool) -> pd.DataFrame:
    """The table as strings: every column for csv, the readable ones otherwise."""
    import pandas as pd

    columns = list(table.columns) if full else list(_SHOWN)
    cells = pd.DataFrame(index=table.index)
    for column in columns:
        values = table[column]
        if column in ("output_shape", "rf", "jump", "rf_centre"):
            cells[column] = [_dims(v, square=not full and column != "output_shape")
                             for v in values]
        elif column == "inputs":
            cells[column] = [" ".join(v) for v in values]
        elif column == "macs" and not full:
            cells[column] = ["" if _missing(v) else _si(int(v)) for v in values]
        elif values.dtype.kind in "iu" or str(values.dtype) == "Int64":
            cells[column] = ["" if _missing(v) else (str(v) if full else f"{v:,}")
                             for v in values]
        else:
            cells[column] = values.astype(str)
    return cells if full else cells.rename(columns=_SHOWN)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA


def _si(count: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def _grid(cells: pd.DataFrame, markdown: bool) -> str:
    """Aligned text columns, or a markdown table."""
    header = ["name", *cells.columns]
    rows = [[str(name), *row] for name, row in zip(cells.index, cells.values.tolist(),
                                                    strict=True)]
    if markdown:
        escape = [[cell.replace("|", "\\|") for cell in row] for row in rows]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in escape])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            for row in [header, *rows]]
    return "\n".join(line.rstrip() for line in text)


def conv_report(input_shape: str, filters: int, kernel: int, stride: int = 1,
                pad: int = 0) -> str:
    """``tlkit inspect conv``: the arithmetic of one convolution layer, step by step.

    ``input_shape`` is written ``HxW`` or ``HxWxD``, e.g. ``32x32x3``.

    Example:
        >>> print(conv_report("32x32x3", filters=10, kernel=5, pad=2))
        input 32x32x3, 10 filters 5x5, stride 1, pad 2
        output side (32 - 5 + 2*2) / 1 + 1 = 32 -> 32x32x10 = 10,240 units
        parameters 5*5*3*10 + 10 = 760 (750 weights + 10 biases)
        MACs 768,000 per image; receptive field 5
    """
    if not re.fullmatch(r"\d+(x\d+){1,2}", input_shape.strip().lower()):
        raise UserError(f"cannot read input shape '{input_shape}'; write HxWxD, e.g. 32x32x3")
    shape = tuple(int(side) for side in input_shape.strip().lower().split("x"))
    layer = conv_arithmetic(shape, filters, kernel, stride, pad)
    height, width, depth = (*shape, 1)[:3]
    out_h, out_w, _ = layer.output_shape
    sides = f"{height}" if height == width else f"{height}x{width}"
    return "\n".join([
        f"input {height}x{width}x{depth}, {filters} filters {kernel}x{kernel}, stride {stride}, "
        f"pad {pad}",
        f"output side ({sides} - {kernel} + 2*{pad}) / {stride} + 1 = "
        f"{out_h if out_h == out_w else f'{out_h}x{out_w}'} -> "
        f"{_dims(layer.output_shape)} = {layer.units:,} units",
        f"parameters {kernel}*{kernel}*{depth}*{filters} + {filters} = {layer.params:,} "
        f"({layer.weights:,} weights + {layer.biases:,} biases)",
        f"MACs {layer.macs:,} per image; receptive field {kernel}",
    ])
