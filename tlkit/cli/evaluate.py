"""``tlkit evaluate RUN --data PATH``: any run kind -> ``tlkit.evaluate``."""

from __future__ import annotations

import click

from tlkit.cli.options import tta_option


def evaluate_options(function: click.decorators.FC) -> click.decorators.FC:
    """The options of ``tlkit evaluate`` and ``tlkit textcnn evaluate`` (one vocabulary)."""
    decorators = [
        click.argument("run", type=click.Path()),
        click.option("--data", multiple=True, required=True,
                     help="Labelled data read as the run's training data was (folder, CSV, "
                          "TSV, or Kim's class files: repeat --data)."),
        click.option("--name", help="Report folder name under RUN/reports (default: the "
                                    "data's file name)."),
        click.option("--ignore-unknown", is_flag=True,
                     help="Evaluate on the known classes only, reporting unknown labels."),
        tta_option(),
        click.option("--path-column", help="CSV column of image paths (default: the run's)."),
        click.option("--text-column", help="Text column (default: the run's)."),
        click.option("--label-column", help="Label column (default: the run's)."),
        click.option("--encoding", help="Encoding of text files (default: the run's)."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command()
@evaluate_options
def evaluate(**options: object) -> None:
    """Evaluate a finished run on labelled data.

    Writes RUN/reports/NAME/ with metrics.json, predictions.csv and report.html.

    Example: tlkit evaluate runs/shapes --data more_shapes/ --name more
    """
    run_evaluate(**options)  # type: ignore[arg-type]


def run_evaluate(run: str, data: tuple[str, ...], name: str | None, ignore_unknown: bool,
                 kind: str | None = None, tta: str | None = None, **columns: str | None
                 ) -> None:
    """Evaluate and print one line (shared by both evaluate commands)."""
    from tlkit.evaluate import evaluate, metrics_summary

    source = data[0] if len(data) == 1 else list(data)
    metrics = evaluate(run, source, name, ignore_unknown, kind, tta, **columns)
    augmented = f" with --tta {tta}" if tta else ""
    click.echo(f"{metrics_summary(metrics)}{augmented}; report: {metrics['report']}")
