"""The ``tlkit`` command: a click group whose subcommands are imported only when run.

Command modules import no TensorFlow at module level, so ``tlkit --help`` (which reads each
command's own one-line help) and every mistake that needs no model answer at once. A
``UserError`` from any command becomes ``Error: <one line>`` and exit code 2 inside the
group, so click's own test runner sees what a user sees.
"""

from __future__ import annotations

import _thread
import importlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from tlkit.errors import UserError
from tlkit.files import disk_full_error, is_disk_full

# One row per top-level command: name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "finetune": "tlkit.cli.finetune:finetune",
    "textcnn": "tlkit.cli.textcnn:textcnn",
    "evaluate": "tlkit.cli.evaluate:evaluate",
    "predict": "tlkit.cli.predict:predict",
    "explain": "tlkit.cli.explain:explain",
    "report": "tlkit.cli.report:report",
    "runs": "tlkit.cli.runs:runs",
    "devices": "tlkit.cli.devices:devices",
    "export": "tlkit.cli.export:export",
    "serve": "tlkit.cli.serve:serve",
    "inspect": "tlkit.cli.inspect:inspect",
    "backbones": "tlkit.cli.backbones:backbones",
    "weights": "tlkit.cli.weights:weights",
    "datasets": "tlkit.cli.datasets:datasets",
}

USER_ERROR_EXIT_CODE = 2


class UserErrorExit(click.ClickException):
    """A UserError on its way out: click prints ``Error: message`` and exits with code 2."""

    exit_code = USER_ERROR_EXIT_CODE


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as error:
            raise UserErrorExit(str(error)) from error
        except Exception as error:
            if not is_disk_full(error):
                raise
            # a full disk met outside a write tlkit guards (TensorFlow, h5py, a library)
            where = Path(getattr(error, "filename", None) or os.getcwd())
            raise UserErrorExit(str(disk_full_error(where))) from error


@click.group(cls=LazyGroup)
@click.version_option(package_name="tlkit")
def cli() -> None:
    """tlkit: transfer learning on images and Kim (2014) text CNNs, with Keras 3."""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# Set when a Ctrl-C was swallowed by a callback: ``_raise_swallowed`` raises it again.
_SWALLOWED = threading.Event()


def _interrupt_again(unraisable: Any) -> None:
    """A Ctrl-C that landed in a finalizer or weakref callback (importlib's module locks
    have one), where Python prints "Exception ignored" and goes on, is raised again."""
    if unraisable.exc_type is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    try:
        _SWALLOWED.set()
    except KeyboardInterrupt:  # raised again before this hook returned: once more
        _SWALLOWED.set()


def _raise_swallowed() -> None:
    while True:
        _SWALLOWED.wait()
        _SWALLOWED.clear()
        time.sleep(0.005)  # out of the callback first: raised inside it, it is lost again
        _thread.interrupt_main()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tlkit`` console script."""
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # SIGTERM (kill, job schedulers) stops a run like Ctrl-C: its folder is kept to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    # A Ctrl-C is never lost in a callback (it was, in about 1 of 40 `tlkit report`s).
    sys.unraisablehook = _interrupt_again
    if not any(thread.name == "tlkit-interrupts" for thread in threading.enumerate()):
        threading.Thread(target=_raise_swallowed, name="tlkit-interrupts", daemon=True).start()
    cli.main(args=argv, prog_name="tlkit")
