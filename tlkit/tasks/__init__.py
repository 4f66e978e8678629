"""One task object per kind of run, in one table: ``TASKS`` (name -> task).

A run's task is found from its recipe's ``kind`` (``image``, ``textcnn``), so every run
folder ever written keeps its kind. Adding a kind of run is one more ``Task`` subclass and
one more row here. Importing this package loads no TensorFlow.

Example:
    >>> from tlkit.recipes import TextCNNRecipe
    >>> task_of(TextCNNRecipe()).name, sorted(TASKS)
    ('textcnn', ['image', 'image-multilabel', 'textcnn', 'textcnn-multilabel'])
"""

from __future__ import annotations

from typing import Any

from tlkit.errors import UserError
from tlkit.tasks.base import PREDICT_BATCH, Scored, Task, _a
from tlkit.tasks.image import ImageTask
from tlkit.tasks.multilabel import SUFFIX, ImageMultiLabelTask, TextMultiLabelTask
from tlkit.tasks.text import TextTask

TASKS: dict[str, Task] = {task.name: task for task in (
    ImageTask(), TextTask(), ImageMultiLabelTask(), TextMultiLabelTask())}

__all__ = ["PREDICT_BATCH", "TASKS", "ImageMultiLabelTask", "ImageTask", "Scored", "Task",
           "TextMultiLabelTask", "TextTask", "get_task", "require_task", "task_of"]


def get_task(name: str) -> Task:
    """The task registered as ``name``; an unknown name is a UserError listing the known.

    Example:
        >>> get_task("audio")
        Traceback (most recent call last):
        ... # doctest: +ELLIPSIS
        tlkit.errors.UserError: unknown kind of run 'audio'; tlkit knows: image, textcnn, ...
    """
    if name not in TASKS:
        raise UserError(f"unknown kind of run '{name}'; tlkit knows: {', '.join(TASKS)}")
    return TASKS[name]


def task_of(run_or_recipe: Any) -> Task:
    """The task of a run (its ``kind``), a recipe (its class's kind) or a task's name; a
    recipe with ``labels: multi`` (a run of one) gets its kind's multi-label task.

    Example:
        >>> from pathlib import Path
        >>> from tlkit.recipes import ImageRecipe
        >>> from tlkit.runs import Run
        >>> task_of(Run(Path("r"), "image", None, ["a", "b"], {})).name
        'image'
        >>> task_of(ImageRecipe(labels="multi")).name
        'image-multilabel'
    """
    if isinstance(run_or_recipe, str):
        return get_task(run_or_recipe)
    kind = getattr(run_or_recipe, "kind", None)
    recipe = run_or_recipe
    if isinstance(kind, str):  # a Run
        recipe = getattr(run_or_recipe, "recipe", None)
    else:
        from tlkit.recipes import kind_of

        kind = kind_of(run_or_recipe)
    multi = getattr(recipe, "labels", "single") == "multi"
    return get_task(kind + SUFFIX if multi else kind)


def require_task(run: Any, expected: str | None) -> Task:
    """The run's task, which must be ``expected`` when given (a command for one kind).

    Example:
        >>> from pathlib import Path
        >>> from tlkit.runs import Run
        >>> require_task(Run(Path("runs/shapes"), "image", None, ["a", "b"], {}), "textcnn")
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        tlkit.errors.UserError: 'runs/shapes' is an image run, not a textcnn run; use a folder ...
    """
    if expected is not None and run.kind != get_task(expected).name:
        raise UserError(f"'{run.path}' is {_a(run.kind)} run, not {_a(expected)} run; use a "
                        "folder from the matching training command")
    return task_of(run)

