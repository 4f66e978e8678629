"""``tlkit weights``: put a downloaded ImageNet weights file where Keras looks for it."""

from __future__ import annotations

import click


@click.group()
def weights() -> None:
    """Manage pretrained weights."""


@weights.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backbone", required=True, help="The backbone the file is for.")
@click.option("--input-size", type=int,
              help="For families with one file per size (MobileNet, MobileNetV2).")
def import_command(file: str, backbone: str, input_size: int | None) -> None:
    """Check FILE against the backbone and copy it into Keras's cache.

    Example: tlkit weights import vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 --backbone vgg16
    """
    from tlkit.weights import import_weights

    click.echo(f"imported: {import_weights(file, backbone, input_size)}")
