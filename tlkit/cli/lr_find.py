"""``tlkit lr-find``: options -> ImageRecipe -> ``tlkit.train.lr_find.lr_find``."""

from __future__ import annotations

import click

from tlkit.cli.options import label_options, recipe_option
from tlkit.recipes import SCHEDULES


@click.command("lr-find")
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
               help="Reuse (or keep) frozen-backbone features here.")
@click.option("--strict", is_flag=True, default=None,
              help="Stop on unreadable images instead of skipping them.")
@recipe_option("image", "batch_size", type=int, help="Examples per training step.")
@recipe_option("image", "seed", type=int, help="Seed of splits, initialisation, shuffling.")
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Recipe YAML; flags given here override its values.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any recipe field, dotted for nesting: --set stages.0.optimizer=sgd")
@click.option("--stage", default=0, show_default=True, help="Which stage of the recipe to sweep.")
@click.option("--start", default=1e-7, show_default=True, help="First learning rate.")
@click.option("--end", default=10.0, show_default=True, help="Last learning rate.")
@click.option("--steps", default=200, show_default=True, help="Training steps of the sweep.")
@click.option("--out", default=".", show_default=True, type=click.Path(),
              help="Folder that receives lr_find.csv and lr_find.png.")
def lr_find(recipe_path: str | None, overrides: tuple[str, ...], stage: int, start: float,
            end: float, steps: int, out: str, **flags: object) -> None:
    """Sweep the learning rate of one stage and suggest one (Smith 2017, fastai lr_find).

    Trains the stage from its initial weights while the rate grows exponentially, writes the
    loss-vs-rate figure and CSV, and prints the suggested rate. No run folder is written.

    Example: tlkit lr-find --data datasets/shapes --schedule two-stage --stage 1 --out lr
    """
    from tlkit.recipes import resolve_recipe
    from tlkit.train.lr_find import check_sweep

    recipe = resolve_recipe("image", recipe_path, flags, list(overrides))
    check_sweep(recipe, stage, start, end, steps)
    from tlkit.train.lr_find import lr_find as run_lr_find

    click.echo(run_lr_find(recipe, stage, start, end, steps, out).line())
