"""Model inspection from first principles: shapes, parameters, receptive fields, memory, FLOPs.

Modules: ``layers`` walks the layer graph (shapes, parameters, the one-layer arithmetic),
``receptive_field`` moves receptive fields through it, ``memory`` counts activations, MACs
and training memory and plans batches, ``table`` assembles the per-layer DataFrame and its
totals, ``report`` renders them for ``tlkit inspect``. The names below are imported on first
use, so the CLI reads the choices in ``memory`` and ``report`` without loading pandas.

Example:
    >>> from tlkit.inspection import inspect_model, inspection_totals
    >>> inspection_totals(inspect_model("vgg16"))["params"]
    14714688
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names, by the module of this package that defines them.
_MODULES: dict[str, tuple[str, ...]] = {
    "layers": ("ConvArithmetic", "conv_arithmetic"),
    "memory": ("BatchPlan", "TrainingMemory", "parse_memory", "plan_batch", "training_memory"),
    "table": ("inspect_model", "inspection_totals"),
}
__all__ = sorted(name for names in _MODULES.values() for name in names)


def __getattr__(name: str) -> Any:
    module = next((module for module, names in _MODULES.items() if name in names), None)
    if module is None:
        raise AttributeError(f"module 'tlkit.inspection' has no attribute '{name}'")
    return getattr(importlib.import_module(f"tlkit.inspection.{module}"), name)
