"""The ``tlkit`` command: a click group whose subcommands are imported only when run.

Lazy loading keeps ``tlkit --help`` instant: TensorFlow is imported by a subcommand's
module body at the earliest, never by this file.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from tlkit.errors import UserError

# One row per top-level command: name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "finetune": "tlkit.cli.finetune:finetune",
    "backbones": "tlkit.cli.backbones:backbones",
    "weights": "tlkit.cli.weights:weights",
    "inspect": "tlkit.cli.inspect:inspect",
    "textcnn": "tlkit.cli.textcnn:textcnn",
}

# One line of help per command, shown by `tlkit --help` without importing the command.
SHORT_HELP: dict[str, str] = {
    "finetune": "Fine-tune a pretrained image backbone on a folder or CSV of labelled images.",
    "backbones": "List the backbones: parameters, input sizes, blocks, offline weights.",
    "weights": "Manage pretrained weights (import a downloaded file into Keras's cache).",
    "inspect": "Per-layer shapes, parameters, receptive fields, memory and FLOPs of a model.",
    "textcnn": "Kim (2014) sentence CNN: train (or cross-validate), evaluate, predict.",
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="tlkit")
def cli() -> None:
    """tlkit: transfer learning on images and Kim (2014) text CNNs, with Keras 3."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tlkit`` console script; a UserError becomes one line and exit 2."""
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        exit_code = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except UserError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    if isinstance(exit_code, int) and exit_code:
        sys.exit(exit_code)
