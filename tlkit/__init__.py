"""tlkit: transfer learning on images and Kim (2014) text CNNs with Keras 3.

The public API is imported lazily so that ``import tlkit`` (and ``tlkit --help``) stays
fast and does not load TensorFlow until a function that needs it is called.

``tlkit.predict`` and ``tlkit.evaluate`` are functions, however they are reached
(``import tlkit``, ``from tlkit import predict``, after ``import tlkit.predict``), although
modules of the same names define them: reach those modules' other names with
``from tlkit.predict import open_run``.

Example:
    >>> import tlkit.predict
    >>> from tlkit import predict
    >>> predict is tlkit.predict, callable(predict), "tensorflow" in tlkit.__all__
    (True, True, False)
"""

from __future__ import annotations

import importlib
import sys
import types
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
    "load_run": "tlkit.models.saved",
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
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # looked up once; later reads do not come here
        return value
    raise AttributeError(f"module 'tlkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """The ``tlkit`` module, whose public names are not replaced by same-named submodules.

    Importing ``tlkit.predict`` (which any code may do first) ends with Python setting the
    package's attribute ``predict`` to that module; refusing it keeps the function's name.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
