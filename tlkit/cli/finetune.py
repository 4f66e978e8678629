"""``tlkit finetune``: options -> ImageRecipe -> ``tlkit.finetune``."""

from __future__ import annotations

import click

from tlkit.cli.options import (
    image_data_options,
    recipe_option,
    run_options,
    run_recipe,
    summary_line,
)


@click.command()
@image_data_options
@recipe_option("image", "cache_dir", type=click.Path(file_okay=False),
               help="Keep frozen-backbone features here to reuse across runs "
                    "(none: in the run folder, removed at the end).")
@run_options("image")
def finetune(recipe_path: str | None, overrides: tuple[str, ...], out: str, name: str | None,
             resume: str | None, **flags: object) -> None:
    """Fine-tune an image backbone on labelled images.

    Trains a new head on a pretrained backbone with the recipe's stage schedule and writes
    a run folder (model, history, metrics, report).

    Example: tlkit finetune --backbone efficientnet_lite0 --data datasets/shapes --epochs 3
    """
    recipe, out, name = run_recipe("image", recipe_path, flags, overrides, out, name, resume)
    from tlkit.train.image import finetune as run_finetune

    click.echo(summary_line(run_finetune(recipe, out=out, name=name, resume=bool(resume))))
