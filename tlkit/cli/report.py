"""``tlkit report RUN``: (re)build a run's report from its folder."""

from __future__ import annotations

import click


@click.command()
@click.argument("run", type=click.Path())
@click.option("--split", help="Which split's predictions to report (default: test, else val).")
def report(run: str, split: str | None) -> None:
    """Rebuild report.html (and .md, .json) of a finished run.

    Example: tlkit report runs/shapes
    """
    from tlkit.evaluation.report import build_run_report

    click.echo(f"report: {build_run_report(run, split=split)}")
