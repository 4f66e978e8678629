"""``tlkit devices``: what TensorFlow sees on this machine."""

from __future__ import annotations

import click


@click.command()
def devices() -> None:
    """List the CPUs and GPUs TensorFlow sees: memory, GPU model and compute capability.

    Example: tlkit devices
    """
    from tlkit.devices import describe_devices, precision_policy, use_gpus

    use_gpus(None)  # memory growth first: looking at a GPU must not reserve all of it
    click.echo(describe_devices().to_string(index=False, na_rep="-"))
    click.echo(f"mixed_precision auto here: {precision_policy('auto') or 'off (float32)'}")
