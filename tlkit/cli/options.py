"""The CLI's one vocabulary: options that mean the same thing in every command.

=================  ===============================================================
``--data PATH``    labelled data: what a run trains on, or what ``evaluate`` scores
``--recipe FILE``  a recipe YAML; flags given with it override its values
``--set K=V``      any recipe field, dotted for nesting (``--set stages.1.lr=1e-5``)
``--epochs N``     epochs of every stage (a text CNN has one stage)
``--out DIR``      a folder that receives several files (run folders, explanations)
``--output FILE``  one file (a table of predictions, an inspection table)
``--input FILE``   a file of inputs to predict on (CSV, or one text per line)
``--name NAME``    the run folder's name under ``--out``
``--multi-label``  each example has a set of labels (``--label-sep``, ``--label-columns``)
``--coverage P``   answer with a conformal set at coverage P (``--abstain-below P``:
                   ``unsure`` when the top probability is under P)
=================  ===============================================================

Defaults that come from a recipe are shown in ``--help`` as ``recipe: VALUE``.

Example:
    >>> recipe_default("image", "backbone")
    'efficientnet_lite0'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from tlkit.choices import CONFORMAL_SCORES, TTA_LEVELS
from tlkit.recipes import RECIPE_KINDS

F = Callable[..., Any]


def recipe_default(kind: str, name: str) -> Any:
    """The default of field ``name`` of the ``kind`` recipe, as ``--help`` shows it."""
    for item in dataclasses.fields(RECIPE_KINDS[kind]):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            return item.default_factory()  # type: ignore[misc]
    raise KeyError(name)


def recipe_option(kind: str, field_name: str, *decls: str, **kwargs: Any) -> Callable[[F], F]:
    """An option that sets recipe field ``field_name``; its help shows the recipe's default.

    The option's own default stays None so that a value from ``--recipe`` is kept unless
    the flag is given.
    """
    default = recipe_default(kind, field_name)
    shown = "none" if default is None else default
    flag = decls or (f"--{field_name.replace('_', '-')}",)
    return click.option(*flag, field_name, default=None, show_default=f"recipe: {shown}",
                        **kwargs)


def _column_list(ctx: click.Context, param: click.Parameter, value: str | None
                 ) -> list[str] | None:
    """``a,b,c`` as ``["a", "b", "c"]`` (None when the option is not given).

    Example:
        >>> _column_list(None, None, " beach, sunset ,")  # type: ignore[arg-type]
        ['beach', 'sunset']
    """
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def tta_option() -> Callable[[F], F]:
    """``--tta LEVEL`` of evaluate and predict: average each image's probabilities over a
    fixed set of views (off by default)."""
    levels = "; ".join(f"{name}: {views}" for name, views in TTA_LEVELS.items())
    return click.option("--tta", type=click.Choice(list(TTA_LEVELS)), default=None,
                        help=f"Test-time augmentation for image runs: average the "
                             f"probabilities of {levels}. Default: off.")


def uncertainty_options(function: F) -> F:
    """``--coverage``, ``--conformal-score`` and ``--abstain-below`` of predict and serve:
    when an answer is ``unsure`` and which classes it hesitates between
    (docs/calibration.md). Ranges are checked by ``tasks.base.check_uncertainty``, so a
    mistake is tlkit's one line."""
    decorators = [
        click.option("--coverage", type=float, default=None, metavar="P",
                     help="Answer each input with the smallest set of classes that holds the "
                          "true one with probability P (split conformal, calibrated on the "
                          "run's calibration split); a set of more than one class answers "
                          "unsure."),
        click.option("--conformal-score", type=click.Choice(list(CONFORMAL_SCORES)),
                     default=None, help="The score of --coverage's sets: aps (adaptive, the "
                                        "default) or lac (smallest sets on average; the "
                                        "default for two-class runs)."),
        click.option("--abstain-below", type=float, default=None, metavar="P",
                     help="Answer unsure, with the candidate classes, when the top "
                          "probability is below P."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def image_data_options(function: F) -> F:
    """What an image job trains on and with: ``--data``, ``--backbone``, ``--weights``,
    ``--schedule``, ``--input-size``, the CSV's columns and labels, ``--encoding`` and
    ``--strict``; one set for ``finetune`` and ``lr-find``."""
    from tlkit.recipes import SCHEDULES, default_schedule

    decorators = [
        click.option("--data", help="Folder of class subfolders (or train/val/test), or a CSV."),
        recipe_option("image", "backbone", help="Backbone name (see `tlkit backbones`)."),
        recipe_option("image", "weights",
                      help="imagenet, none, or a path to a no-top weights file."),
        click.option("--schedule", type=click.Choice(list(SCHEDULES)),
                     help="A named stage schedule instead of the recipe's stages.",
                     show_default=f"recipe: {default_schedule()}"),
        recipe_option("image", "input_size", type=int,
                      help="Square input side in pixels (none: the backbone's default)."),
        recipe_option("image", "path_column", help="CSV column with image paths."),
        recipe_option("image", "label_column", help="CSV column with labels."),
        label_options("image"),
        recipe_option("image", "encoding", help="Encoding of a CSV given as --data."),
        click.option("--strict", is_flag=True, default=None,
                     help="Stop on unreadable images instead of skipping them."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def label_options(kind: str) -> Callable[[F], F]:
    """``--multi-label``, ``--label-sep`` and ``--label-columns``: how the data labels each
    example, the same for images and text (recipe fields ``labels``, ``label_sep``,
    ``label_columns``)."""
    decorators = [
        click.option("--multi-label", "labels", flag_value="multi", default=None,
                     show_default="recipe: single",
                     help="Each example has a set of labels, possibly empty (a CSV/TSV, not "
                          "folders): one sigmoid output per label."),
        recipe_option(kind, "label_sep", metavar="SEP",
                      help="With --multi-label: what joins a set's labels in the label "
                           "column, e.g. beach|sunset."),
        recipe_option(kind, "label_columns", metavar="A,B,...", callback=_column_list,
                      help="With --multi-label: 0/1 columns, one per label, instead of the "
                           "label column."),
    ]

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def run_options(kind: str) -> Callable[[F], F]:
    """The options every training command shares: recipe, set, seed, batch, epochs, out, name."""
    epochs_help = ("Epochs of every stage." if kind == "image"
                   else "Training epochs (a text CNN has one stage).")
    shown_epochs = "per stage" if kind == "image" else recipe_default(kind, "epochs")
    decorators = [
        click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
                     help="Recipe YAML; flags given here override its values."),
        click.option("--epochs", type=int, help=epochs_help,
                     show_default=f"recipe: {shown_epochs}"),
        recipe_option(kind, "batch_size", type=int, help="Examples per training step."),
        recipe_option(kind, "seed", type=int, help="Seed of splits, initialisation, shuffling."),
        recipe_option(kind, "gpus", help="GPUs to train on, e.g. 0,1 (memory growth on).",
                      metavar="LIST"),
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Any recipe field, dotted for nesting: --set stages.1.lr=1e-5"),
        click.option("--out", default="runs", show_default=True, type=click.Path(),
                     help="Folder that receives the run folder."),
        click.option("--name", help="Run folder name under --out (default: KIND-DATE-TIME)."),
        click.option("--resume", type=click.Path(),
                     help="Continue the unfinished run OUT/NAME (killed or interrupted) from "
                          "its last completed epoch, with its own recipe."),
    ]

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def run_recipe(kind: str, recipe_path: str | None, flags: dict[str, Any],
               overrides: tuple[str, ...], out: str, name: str | None, resume: str | None
               ) -> tuple[Any, str, str | None]:
    """(recipe, out, name) of a training command: resolved from the options, or read back
    from the unfinished run that ``--resume`` names."""
    from tlkit.errors import UserError
    from tlkit.recipes import resolve_recipe
    from tlkit.train.workers import unfinished_run

    if not resume:
        return resolve_recipe(kind, recipe_path, flags, list(overrides)), out, name
    given = [key for key, value in flags.items() if value not in (None, (), [])]
    if recipe_path or overrides or given or name:
        raise UserError("--resume continues a run with the recipe it started with; leave out "
                        f"the other options ({', '.join(given) or 'recipe, set, name'})")
    recipe, folder, run = unfinished_run(resume, kind)
    return recipe, str(folder), run


def summary_line(run: Any) -> str:
    """``run folder: PATH (val accuracy 0.981, test accuracy 0.967)`` for any finished run."""
    from tlkit.tasks import task_of

    metrics, headline = run.metrics, task_of(run).headline  # accuracy, or a multi-label mAP
    if "cv" in metrics:
        cv = metrics["cv"]
        scores = (f"{cv['folds']}-fold accuracy {cv['accuracy_mean']:.4f} "
                  f"± {cv['accuracy_std']:.4f}")
    else:
        scores = ", ".join("{} {} {:.3f}".format(split, *headline(metrics[split]))
                           for split in ("val", "test") if split in metrics)
    lines = [f"run folder: {run.path} ({scores})"]
    probe = metrics.get("probe") or {}
    split = "test" if probe.get("test") is not None and "test" in metrics else "val"
    if probe.get(split) is not None and split in metrics:
        name, value = headline(metrics[split])
        lines.append(f"linear probe on the same features: {split} {name} {probe[split]:.3f}")
        if value < probe[split]:
            lines.append(f"note: this run ends below its linear probe on {split} "
                         f"({value:.3f} < {probe[split]:.3f})")
    if len(stages := metrics.get("stages") or []) > 1:
        lines.append(stages_line(stages))
    return "\n".join(lines)


def stages_line(stages: list[dict[str, Any]]) -> str:
    """What each stage offered (``metrics.json: stages``) and which offer the run kept.

    Example:
        >>> stages_line([{"stage": "head", "keep": "best", "epoch": 42, "monitor": "val_loss",
        ...               "value": 0.0948, "kept": True},
        ...              {"stage": "fine-tune", "keep": "last", "epoch": 62,
        ...               "monitor": "val_loss", "value": 0.1109, "kept": False}])
        'stages (val_loss): head 0.0948 (best, epoch 43, kept); fine-tune 0.1109 (last, epoch 63)'
    """
    offers = [f"{s['stage']} {s['value']:.4f} ({s['keep']}, epoch {s['epoch'] + 1}"
              f"{', kept' if s['kept'] else ''})" for s in stages]
    return f"stages ({stages[0]['monitor']}): " + "; ".join(offers)
