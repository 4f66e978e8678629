"""``tlkit inspect``: options -> ``inspection_report`` (or ``conv_report`` for ``conv``)."""

from __future__ import annotations

import click

from tlkit.errors import UserError

_CONV_ONLY = ("input_shape", "filters", "kernel", "stride", "pad")


@click.command()
@click.argument("target")
@click.option("--input-size", type=int, help="Input side (or sequence length).")
@click.option("--include-top", is_flag=True, help="Add the backbone's ImageNet classifier.")
@click.option("--dtype", default="float32", show_default=True,
              type=click.Choice(["float16", "bfloat16", "float32", "float64"]),
              help="Activation dtype.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "csv", "json", "markdown"]))
@click.option("--out", type=click.Path(dir_okay=False), help="Write the table to this file.")
@click.option("--plan", is_flag=True, help="Plan the largest batch that fits in --memory.")
@click.option("--memory", help="Memory for --plan: 8GB, 1.5G (powers of 1000), 512MiB (1024).")
@click.option("--stage", type=click.Choice(["full", "head", "both"]), default="both",
              show_default=True, help="Plan full fine-tuning, a frozen-backbone head, or both.")
@click.option("--optimizer", default="adam", show_default=True,
              type=click.Choice(["sgd", "momentum", "rmsprop", "adam", "adamw"]))
@click.option("--classes", type=int, default=10, show_default=True,
              help="Classes of the head a backbone name is planned with.")
@click.option("--input", "input_shape", help="conv: input shape HxWxD, e.g. 32x32x3.")
@click.option("--filters", type=int, help="conv: number of filters K.")
@click.option("--kernel", type=int, help="conv: filter side F.")
@click.option("--stride", type=int, help="conv: stride S (default 1).")
@click.option("--pad", type=int, help="conv: zero padding P (default 0).")
def inspect(target: str, input_size: int | None, include_top: bool, dtype: str, fmt: str,
            out: str | None, plan: bool, memory: str | None, stage: str, optimizer: str,
            classes: int, input_shape: str | None, filters: int | None, kernel: int | None,
            stride: int | None, pad: int | None) -> None:
    """Per-layer shapes, parameters, receptive fields, memory and MACs of TARGET.

    TARGET is a backbone name, a run folder, a .keras file, or `conv` for the arithmetic
    of one convolution layer (use ./conv for a folder of that name).

    Examples: tlkit inspect vgg16 --include-top;
    tlkit inspect vgg16 --plan --memory 8GB --stage full;
    tlkit inspect conv --input 32x32x3 --filters 10 --kernel 5 --stride 1 --pad 2
    """
    from tlkit.inspection.report import conv_report, inspection_report

    if target == "conv":
        if input_shape is None or filters is None or kernel is None:
            raise UserError("tlkit inspect conv needs --input HxWxD, --filters and --kernel")
        click.echo(conv_report(input_shape, filters, kernel, stride or 1, pad or 0))
        return
    given = [name for name, value in zip(_CONV_ONLY, (input_shape, filters, kernel, stride, pad),
                                         strict=True) if value is not None]
    if given:
        raise UserError(f"--{given[0].replace('_shape', '')} belongs to `tlkit inspect conv`; "
                        f"for a model, use --input-size")
    if plan and memory is None:
        raise UserError("--plan needs --memory, e.g. --memory 8GB")
    stages = ("head", "full") if stage == "both" else (stage,)
    click.echo(inspection_report(target, input_size=input_size, include_top=include_top,
                                 dtype=dtype, fmt=fmt, out=out, memory=memory, stages=stages,
                                 optimizer=optimizer, classes=classes))
