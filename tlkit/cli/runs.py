"""``tlkit runs [FOLDER]``: the run folders under FOLDER, finished and unfinished."""

from __future__ import annotations

import click


@click.command()
@click.argument("folder", default="runs", type=click.Path())
@click.option("--remove-unfinished", is_flag=True,
              help="Delete the unfinished runs (left by a kill or an interrupt).")
def runs(folder: str, remove_unfinished: bool) -> None:
    """List the runs in FOLDER; unfinished ones can be resumed or removed.

    Example: tlkit runs runs/ --remove-unfinished
    """
    from tlkit.runs import list_runs
    from tlkit.runs import remove_unfinished as remove

    if remove_unfinished:
        for path in remove(folder):
            click.echo(f"removed {path}")
        return
    table = list_runs(folder)
    if table.empty:
        click.echo(f"no runs in '{folder}'")
        return
    shown = table.drop(columns="path").astype(object)
    click.echo(shown.where(shown.notna(), "-").to_string(index=False))
    if (table["status"] == "unfinished").any():
        click.echo("unfinished runs continue with `tlkit finetune --resume FOLDER/NAME` (or "
                   "`tlkit textcnn train --resume`), or go with --remove-unfinished")
