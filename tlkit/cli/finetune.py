"""``tlkit finetune``: options -> ImageRecipe -> ``tlkit.finetune``."""

from __future__ import annotations

import click

from tlkit.cli.options import label_options, recipe_option, run_options, run_recipe, summary_line
from tlkit.recipes import SCHEDULES


@click.command()
@click.option("--data", help="Folder of class subfolders (or train/val/test), or a CSV.")
@recipe_option("image", "backbone", help="Backbone name (see `tlkit backbones`).")
@recipe_option("image", "weights", help="imagenet, none, or a path to a no-top weights file.")
@click.option("--schedule", type=click.Choice(list(SCHEDULES)),
              help="A named stage schedule instead of the recipe's stages.",
              show_default="recipe: feature-extraction")
@recipe_option("image", "input_size", type=int,
               help="Square input side in pixels (none: the backbone's default).")
@recipe_option("image", "path_column", help="CSV column with image paths.")
@recipe_option("image", "label_column", help="CSV column with labels.")
@label_options("image")
@recipe_option("image", "encoding", help="Encoding of a CSV given as --data.")
@recipe_option("image", "cache_dir", type=click.Path(file_okay=False),
               help="Keep frozen-backbone features here to reuse across runs "
                    "(none: in the run folder, removed at the end).")
@click.option("--strict", is_flag=True, default=None,
              help="Stop on unreadable images instead of skipping them.")
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
