"""Model inspection from first principles: shapes, parameters, receptive fields, memory, FLOPs.

Modules: ``layers`` walks the layer graph (shapes, parameters, the one-layer arithmetic),
``receptive_field`` moves receptive fields through it, ``memory`` counts activations, MACs
and training memory and plans batches, ``table`` assembles the per-layer DataFrame and its
totals, ``report`` renders them for ``tlkit inspect``.

Example:
    >>> from tlkit.inspection import inspect_model, inspection_totals
    >>> inspection_totals(inspect_model("vgg16"))["params"]
    14714688
"""

from tlkit.inspection.layers import ConvArithmetic, conv_arithmetic
from tlkit.inspection.memory import (
    BatchPlan,
    TrainingMemory,
    parse_memory,
    plan_batch,
    training_memory,
)
from tlkit.inspection.table import inspect_model, inspection_totals

__all__ = ["BatchPlan", "ConvArithmetic", "TrainingMemory", "conv_arithmetic", "inspect_model",
           "inspection_totals", "parse_memory", "plan_batch", "training_memory"]
