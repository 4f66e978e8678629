"""``tlkit datasets``: the named public datasets, and fetching one as tlkit CSVs."""

from __future__ import annotations

import click

from tlkit.datasets import DATASETS


@click.group()
def datasets() -> None:
    """List and fetch public datasets (Kim 2014's sentence sets)."""


@datasets.command("list")
def list_command() -> None:
    """One line per dataset: name, what it is, how Kim evaluated it.

    Example: tlkit datasets list
    """
    from tlkit.datasets import dataset_table

    click.echo(dataset_table().to_string(index=False))


@datasets.command()
@click.argument("name", type=click.Choice(list(DATASETS)))
@click.option("--out", default="data", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives the dataset folder NAME.")
@click.option("--source", help="Base URL of a mirror, or file:///folder holding the same "
              "paths (default: the pinned source repository).")
def fetch(name: str, out: str, source: str | None) -> None:
    """Download NAME, check every file's sha256, write OUT/NAME/<split>.csv.

    Example: tlkit datasets fetch trec --out data
    """
    from tlkit.datasets import fetch_dataset, get_dataset

    folder = fetch_dataset(name, out, source)
    click.echo(f"dataset folder: {folder}")
    click.echo("train with: " + get_dataset(name).train_command.format(folder=folder))
