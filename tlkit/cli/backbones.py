"""``tlkit backbones``: the backbone table."""

from __future__ import annotations

import click


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "csv"]),
              default="table", show_default=True)
def backbones(fmt: str) -> None:
    """List every backbone: parameters (no top), input sizes, blocks, offline weights.

    Example: tlkit backbones --format csv
    """
    from tlkit.backbones import backbone_table

    table = backbone_table()
    if fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    else:
        click.echo(table.to_string(index=False))

