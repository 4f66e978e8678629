"""``tlkit explain RUN [INPUTS...]``: options -> one ``explain_run`` call -> a short printout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


@click.command(short_help="What a run looks at: heatmaps for images, winning n-grams for text.")
@click.argument("run", type=click.Path())
@click.argument("inputs", nargs=-1)
@click.option("--method", help="Image runs: gradcam (default), saliency, smoothgrad. "
              "Text runs: ngrams (default), saliency.")
@click.option("--class", "class_name", metavar="NAME",
              help="Explain this class instead of the predicted one.")
@click.option("--data", type=click.Path(dir_okay=False),
              help="Text runs: a CSV/TSV (the recipe's text column) or one sentence per line; "
                   "ranks the top n-grams per predicted class over it.")
@click.option("--top", type=click.IntRange(min=1),
              help="N-grams per sentence (default 5), or per class with --data (default 10).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the files: image overlays and heatmaps (default "
                   "RUN/explanations), or the text table as CSV.")
def explain(run: str, inputs: tuple[str, ...], method: str | None, class_name: str | None,
            data: str | None, top: int | None, out: str | None) -> None:
    """Explain INPUTS (image files or folders; sentences for a text run) with a finished RUN.

    Examples:

      tlkit explain runs/flowers daisy.jpg photos/ --method gradcam --out expl/

      tlkit explain runs/trec "How far is the moon ?"

      tlkit explain runs/trec --data trec/test.csv --top 10
    """
    from tlkit.explain.run import explain_run

    table = explain_run(run, list(inputs), method, class_name, out, data, top)
    if "png" in table.columns:
        for row in table.to_dict("records"):
            click.echo(f"{row['path']}: {row['class']} ({row['probability']:.3f}) -> {row['png']}")
        folder = Path(table["png"].iloc[0]).parent
        plural = "" if len(table) == 1 else "s"
        click.echo(f"wrote {len(table)} overlay{plural} (.png) and heatmap{plural} (.npy) "
                   f"to {folder}")
        return
    _echo_text_table(table)
    if out:
        click.echo(f"wrote the table to {out}")


def _echo_text_table(table: Any) -> None:
    """Per sentence: the text, its explained class, then its n-grams or tokens."""
    if "sentence" not in table.columns:
        click.echo(table.to_string(index=False, float_format="{:.3f}".format))
        return
    for _, rows in table.groupby("sentence", sort=True):
        first = rows.iloc[0]
        click.echo(f"{first['text']!r} -> {first['class']} ({first['probability']:.3f})")
        shown = rows.drop(columns=["sentence", "text", "class", "probability"])
        click.echo(shown.to_string(index=False, float_format="{:.3f}".format))
        click.echo("")
