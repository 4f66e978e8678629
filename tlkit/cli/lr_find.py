"""``tlkit lr-find``: options -> ImageRecipe -> ``tlkit.train.lr_find.lr_find``."""

from __future__ import annotations

import click

from tlkit.cli.options import image_data_options, recipe_option


@click.command("lr-find")
@image_data_options
@recipe_option("image", "cache_dir", type=click.Path(file_okay=False),
               help="Reuse (or keep) frozen-backbone features here.")
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
