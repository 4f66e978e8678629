"""tlkit: transfer learning on images and Kim (2014) text CNNs with Keras 3.

The public API is imported lazily so that ``import tlkit`` (and ``tlkit --help``) stays
fast and does not load TensorFlow until a function that needs it is called.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS: dict[str, str] = {
    "finetune": "tlkit.train.image",
    "train_textcnn": "tlkit.train.text",
    "TextCNNRecipe": "tlkit.recipes",
    "predict": "tlkit.predict",
    "evaluate": "tlkit.evaluate",
    "explain_run": "tlkit.explain.run",
    "load_run": "tlkit.runs",
    "resolve_recipe": "tlkit.recipes",
    "ImageRecipe": "tlkit.recipes",
    "Stage": "tlkit.recipes",
    "load_recipe": "tlkit.recipes",
    "inspect_model": "tlkit.inspection",
    "fetch_dataset": "tlkit.datasets",
    "UserError": "tlkit.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")
