"""``tlkit predict RUN INPUTS...``: any run kind -> ``tlkit.predict``."""

from __future__ import annotations

import click

from tlkit.cli.options import tta_option, uncertainty_options


def predict_options(function: click.decorators.FC) -> click.decorators.FC:
    """The options of ``tlkit predict`` and ``tlkit textcnn predict`` (one vocabulary)."""
    decorators = [
        click.argument("run", type=click.Path()),
        click.argument("inputs", nargs=-1),
        click.option("--input", "input_file", type=click.Path(dir_okay=False),
                     help="A CSV/TSV of inputs (see --column), or for text runs a file with "
                          "one sentence per line."),
        click.option("--column", help="Column of --input (default: the run's path or text "
                                      "column)."),
        click.option("--encoding", default="utf-8", show_default=True,
                     help="Encoding of --input."),
        click.option("--top-k", default=1, show_default=True, type=int,
                     help="Labels per input, most probable first."),
        tta_option(),
        uncertainty_options,
        click.option("--output", type=click.Path(dir_okay=False),
                     help="Write the predictions CSV here (default: print it)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def run_predict(run: str, inputs: tuple[str, ...], input_file: str | None, column: str | None,
                encoding: str, top_k: int, output: str | None, kind: str | None = None,
                tta: str | None = None, coverage: float | None = None,
                conformal_score: str | None = None, abstain_below: float | None = None
                ) -> None:
    """Predict and print or write the table (shared by both predict commands)."""
    from pathlib import Path

    from tlkit.errors import UserError

    if output is not None:
        target = Path(output).absolute().parent
        if not target.is_dir() or not _writable(target):
            raise UserError(f"cannot write --output '{output}': '{target}' is not a writable "
                            "folder")
    from tlkit.predict import predict as run_model

    table = run_model(run, inputs, top_k, input_file, column, encoding, kind, tta, coverage,
                      conformal_score, abstain_below)
    failed = int((table["error"] != "").sum())
    if failed:
        click.echo(f"warning: {failed} input(s) could not be predicted; see the error column",
                   err=True)
    if output:
        from tlkit.files import write_text

        # Beside its name, then renamed: a full disk or Ctrl-C keeps the previous file whole.
        write_text(output, table.to_csv(index=False))
        click.echo(f"wrote {len(table)} predictions to {output}")
    else:
        click.echo(table.to_csv(index=False), nl=False)


def _writable(folder: object) -> bool:
    import os

    return os.access(str(folder), os.W_OK | os.X_OK)


@click.command()
@predict_options
def predict(**options: object) -> None:
    """Predict labels with a finished run (images or sentences).

    Images: files, folders and CSVs of paths; text: sentences, .txt or CSV. An input that
    cannot be read becomes a row with an error.

    Example: tlkit predict runs/shapes datasets/shapes/circle --top-k 2 --output preds.csv

    With --coverage 0.9 or --abstain-below 0.8, each row also says its answer (a label, or
    unsure) and the candidate classes.
    """
    run_predict(**options)  # type: ignore[arg-type]
