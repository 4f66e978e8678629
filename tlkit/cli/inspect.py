"""``tlkit inspect``: a model's table and batch plan (``model``), one layer's arithmetic (``conv``).

``tlkit inspect vgg16 ...`` is short for ``tlkit inspect model vgg16 ...``: a first argument
that names no subcommand is a model target. The choices come from the library's tables, and
nothing here imports TensorFlow, so help and the errors that need no model stay fast.
"""

from __future__ import annotations

import click

from tlkit.inspection.memory import DTYPE_BYTES
from tlkit.inspection.report import FORMATS
from tlkit.optimizers import OPTIMIZERS
from tlkit.recipes import BATCHNORM_POLICIES, ImageRecipe, Stage

DEFAULT_COMMAND = "model"


class TargetFirstGroup(click.Group):
    """A group whose first argument goes to ``model`` unless it names a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


@click.group(cls=TargetFirstGroup, options_metavar="",
             subcommand_metavar="TARGET [OPTIONS] | conv [OPTIONS]")
def inspect() -> None:
    """Per-layer shapes, parameters, receptive fields, memory and MACs of a model.

    TARGET is a backbone name (see `tlkit backbones`), a run folder or a .keras file;
    `tlkit inspect TARGET --help` lists its options. `tlkit inspect conv` works out one
    convolution layer by hand.
    """


@inspect.command(DEFAULT_COMMAND, short_help="Table, totals and batch plan of TARGET (default).")
@click.argument("target")
@click.option("--input-size", type=int,
              help="Input side in pixels (or sequence length)  [default: the backbone's]")
@click.option("--include-top", is_flag=True, help="Add the backbone's ImageNet classifier.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPE_BYTES),
              help="Dtype the activations are sized in.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(FORMATS), help="How the per-layer table is written.")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Write the table to this file instead of printing it.")
@click.option("--plan", is_flag=True, help="Plan the largest batch that trains within --memory.")
@click.option("--memory", help="Memory the training process may use (implies --plan): 8GB, "
                               "1.5G (powers of 1000) or 512MiB (powers of 1024).")
@click.option("--stage", type=click.Choice(["full", "head", "both"]), default="both",
              show_default=True,
              help="Plan full fine-tuning (schedule full), the head alone (feature-extraction), "
                   "or both.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=Stage().optimizer,
              show_default=True, help="The optimizer training runs with (its slots count).")
@click.option("--weights", type=click.Choice(["imagenet", "none"]),
              default=ImageRecipe.weights, show_default=True,
              help="The weights training starts from, as in `tlkit finetune`; with "
                   "--batchnorm auto they decide whether BatchNorm trains.")
@click.option("--batchnorm", type=click.Choice(BATCHNORM_POLICIES),
              default=ImageRecipe.batchnorm, show_default=True,
              help="BatchNorm policy, as in `tlkit finetune`: auto freezes it over pretrained "
                   "weights and trains it with --weights none.")
@click.option("--classes", type=int, default=10, show_default=True,
              help="Outputs of the head a backbone name is planned with.")
def model(target: str, input_size: int | None, include_top: bool, dtype: str, fmt: str,
          output: str | None, plan: bool, memory: str | None, stage: str, optimizer: str,
          weights: str, batchnorm: str, classes: int) -> None:
    """Per-layer table, totals and batch plan of TARGET.

    TARGET is a backbone name, a run folder or a .keras file (write ./conv or ./model for
    a folder of that name).

    Examples: tlkit inspect vgg16 --include-top;
    tlkit inspect resnet50 --plan --memory 2GB --weights none --stage full;
    tlkit inspect runs/my-run --format csv --output layers.csv
    """
    from tlkit.errors import UserError
    from tlkit.inspection.report import inspection_report

    if plan and memory is None:
        raise UserError("--plan needs --memory, e.g. --memory 8GB")
    stages = ("head", "full") if stage == "both" else (stage,)
    click.echo(inspection_report(
        target, input_size=input_size, include_top=include_top, dtype=dtype, fmt=fmt,
        output=output, memory=memory, stages=stages, optimizer=optimizer, classes=classes,
        weights=weights, batchnorm=batchnorm))


@inspect.command(short_help="One convolution layer worked out by hand.")
@click.option("--input-shape", required=True, help="Input shape HxWxD (or HxW), e.g. 32x32x3.")
@click.option("--filters", type=int, required=True, help="Number of filters K.")
@click.option("--kernel", type=int, required=True, help="Filter side F.")
@click.option("--stride", type=int, default=1, show_default=True, help="Stride S.")
@click.option("--pad", type=int, default=0, show_default=True, help="Zero padding P per side.")
def conv(input_shape: str, filters: int, kernel: int, stride: int, pad: int) -> None:
    """The arithmetic of one convolution layer: output size, parameters, MACs.

    Example: tlkit inspect conv --input-shape 32x32x3 --filters 10 --kernel 5 --pad 2
    """
    from tlkit.inspection.report import conv_report

    click.echo(conv_report(input_shape, filters, kernel, stride, pad))
