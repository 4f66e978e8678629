"""``tlkit finetune``: options -> ImageRecipe -> ``tlkit.finetune``."""

from __future__ import annotations

import click


@click.command()
@click.option("--recipe", "recipe_path", type=click.Path(dir_okay=False),
              help="Recipe YAML; flags given here override its values.")
@click.option("--data", help="Folder of class subfolders (or train/val/test), or a CSV.")
@click.option("--backbone", help="Backbone name (see `tlkit backbones`).")
@click.option("--weights", help="imagenet, none, or a path to a no-top weights file.")
@click.option("--schedule", type=click.Choice(["feature-extraction", "two-stage",
                                               "gradual-unfreezing", "discriminative", "full"]),
              help="A named stage schedule instead of the recipe's stages.")
@click.option("--epochs", type=int, help="Epochs of every stage.")
@click.option("--batch-size", type=int)
@click.option("--input-size", type=int, help="Square input side (default: the backbone's).")
@click.option("--path-column", help="CSV column with image paths (default: path).")
@click.option("--label-column", help="CSV column with labels (default: label).")
@click.option("--seed", type=int)
@click.option("--strict", is_flag=True, default=None,
              help="Stop on unreadable images instead of skipping them.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any recipe field, dotted for nesting: --set stages.1.lr=1e-5")
@click.option("--out", default="runs", show_default=True, help="Folder for run folders.")
@click.option("--name", help="Run folder name (default: BACKBONE-DATE-TIME).")
def finetune(recipe_path: str | None, data: str | None, backbone: str | None,
             weights: str | None, schedule: str | None, epochs: int | None,
             batch_size: int | None, input_size: int | None, path_column: str | None,
             label_column: str | None, seed: int | None, strict: bool | None,
             overrides: tuple[str, ...], out: str, name: str | None) -> None:
    """Fine-tune a pretrained image backbone on labelled images; write a run folder.

    Example: tlkit finetune --backbone efficientnet_lite0 --data datasets/shapes --epochs 3
    """
    from tlkit.recipes import ImageRecipe, build_recipe, load_recipe, recipe_to_dict
    from tlkit.train.run import finetune as run_finetune

    flags = {"data": data, "backbone": backbone, "weights": weights, "batch_size": batch_size,
             "input_size": input_size, "path_column": path_column,
             "label_column": label_column, "seed": seed, "strict": strict}
    base = load_recipe(recipe_path) if recipe_path else ImageRecipe()
    values = recipe_to_dict(base)
    values.update({key: value for key, value in flags.items() if value is not None})
    if schedule:
        from tlkit.recipes import SCHEDULES

        values["stages"] = recipe_to_dict(ImageRecipe(stages=SCHEDULES[schedule]()))["stages"]
    if epochs:
        for stage in values["stages"]:
            stage["epochs"] = epochs
    recipe = build_recipe(ImageRecipe, values, list(overrides), source="options")
    run = run_finetune(recipe, out=out, name=name)
    summary = ", ".join(f"{split} accuracy {run.metrics[split]['accuracy']:.3f}"
                        for split in ("val", "test") if split in run.metrics)
    click.echo(f"run folder: {run.path} ({summary})")
