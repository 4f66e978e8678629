"""``tlkit export RUN --format F``: options -> one ``export_run`` call -> a short printout."""

from __future__ import annotations

from typing import Any

import click

from tlkit.choices import EXPORT_FORMATS as FORMATS
from tlkit.choices import EXPORT_QUANTIZATIONS as QUANTIZATIONS


@click.command(short_help="Export a run as SavedModel, TFLite or ONNX, checked against it.")
@click.argument("run", type=click.Path())
@click.option("--format", "fmt", required=True, type=click.Choice(FORMATS),
              help="savedmodel (TF Serving), tflite or onnx.")
@click.option("--quantize", type=click.Choice(QUANTIZATIONS),
              help="tflite and onnx: int8 weights; reports the test accuracy change.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Export folder (default: RUN/exports/FORMAT, FORMAT-dynamic if quantised).")
def export(run: str, fmt: str, quantize: str | None, out: str | None) -> None:
    """Export a finished RUN; the export's probabilities are checked against model.keras.

    Images go in as RGB 0-255 floats. Text runs take raw strings as a SavedModel; as TFLite
    and ONNX they take token ids, and vocabulary.json is written beside the model.

    Examples:

      tlkit export runs/flowers --format savedmodel

      tlkit export runs/trec --format tflite --quantize dynamic
    """
    from tlkit.export import export_run

    click.echo("\n".join(summary_lines(export_run(run, fmt, out, quantize))))


def summary_lines(result: dict[str, Any]) -> list[str]:
    """What an export wrote and how close it is to the run's model, in a few lines.

    Example:
        >>> print("\\n".join(summary_lines({
        ...     "format": "onnx", "path": "r/exports/onnx/model.onnx", "size_bytes": 2048,
        ...     "input_name": "image", "input_dtype": "float32", "input_shape": [None, 32, 32, 3],
        ...     "inputs": "images", "parity": 6e-08, "parity_split": "test",
        ...     "parity_examples": 4, "tolerance": 0.001})))
        exported onnx: r/exports/onnx/model.onnx (2.0 KiB)
        input 'image': float32 (batch, 32, 32, 3), RGB 0-255 images
        parity with model.keras on 4 test inputs: max abs difference 6.0e-08 (limit 1e-03)
    """
    shape = ", ".join("batch" if d is None else str(d) for d in result["input_shape"])
    what = {"images": "RGB 0-255 images", "text": "raw strings",
            "token_ids": f"token ids from {result.get('vocabulary')} (beside the model)"}
    limit = result["tolerance"]
    lines = [
        f"exported {result['format']}: {result['path']} ({_size(result['size_bytes'])})",
        f"input '{result['input_name']}': {result['input_dtype']} ({shape}), "
        f"{what[result['inputs']]}",
        f"parity with model.keras on {result['parity_examples']} {result['parity_split']} "
        f"inputs: max abs difference {result['parity']:.1e}"
        + (f" (limit {limit:.0e})" if limit is not None else " (quantised: no limit)"),
    ]
    if "accuracy_change" in result:
        lines.append(
            f"{result['parity_split']} accuracy on {result['accuracy_examples']} inputs: "
            f"{result['accuracy_keras']:.4f} -> {result['accuracy_exported']:.4f} "
            f"({result['accuracy_change']:+.4f}); same label on "
            f"{result['label_agreement']:.1%}")
    return lines


def _size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} B"
    kib = size_bytes / 1024
    return f"{kib:.1f} KiB" if kib < 1024 else f"{kib / 1024:.1f} MiB"
