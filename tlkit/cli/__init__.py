"""The ``tlkit`` command: a click group whose subcommands are imported only when run.

Command modules import no TensorFlow at module level, so ``tlkit --help`` (which reads each
command's own one-line help) and every mistake that needs no model answer at once. A
``UserError`` from any command becomes ``Error: <one line>`` and exit code 2 inside the
group, so click's own test runner sees what a user sees.

TensorFlow's start-up lines (absl's "before InitializeLog" warnings, "Could not find cuda
drivers", "failed call to cuInit") read as failures on a machine without a GPU, where tlkit
is meant to run: they are hidden unless ``--verbose`` (or ``TLKIT_VERBOSE=1``) is given, and
tlkit says "no GPU: training on CPU" itself.

Progress (``tlkit.progress``) goes to stderr, so stdout holds only the data a command prints;
``--quiet`` (or ``TLKIT_QUIET=1``) silences it. Output to a file or pipe is line-buffered, so
a killed run leaves its last lines in the log.
"""

from __future__ import annotations

import _thread
import importlib
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import click

from tlkit.errors import UserError
from tlkit.files import disk_full_error, is_disk_full
from tlkit.progress import QUIET_ENV

# One row per top-level command: name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "finetune": "tlkit.cli.finetune:finetune",
    "lr-find": "tlkit.cli.lr_find:lr_find",
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


# Lines TensorFlow's C++ start-up writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says: absl's
# own warning and its INFO/WARNING lines (oneDNN, no CUDA drivers) logged before absl is set up.
_START_UP_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|"
                             r"[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")


@contextmanager
def _start_up_lines_hidden() -> Iterator[None]:
    """Send file descriptor 2 (C++ writes there, not to sys.stderr) to a file meanwhile,
    then write out every line of it but TensorFlow's start-up noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _START_UP_NOISE.match(line)))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader with its start-up lines hidden, then steps aside."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # TensorFlow loads once: neither the finder nor this wrapper is needed after this
        sys.meta_path[:] = [finder for finder in sys.meta_path
                            if not isinstance(finder, _QuietTensorFlowImport)]
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with _start_up_lines_hidden():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the loader of ``tensorflow``, wherever it is first imported from (tlkit, Keras)."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # the other finders answer
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _hide_tensorflow_start_up() -> None:
    # Level 3 also drops TensorFlow's C++ ERROR lines, among them cuInit's "UNKNOWN ERROR
    # (303)" when no GPU is there; a level the user set stays.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or any(isinstance(finder, _QuietTensorFlowImport)
                                          for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())


class _EchoHandler(logging.Handler):
    """tlkit's own notes (``logging.getLogger("tlkit")``) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


def _show_tlkit_notes() -> None:
    logger = logging.getLogger("tlkit")
    if not any(isinstance(handler, _EchoHandler) for handler in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


@click.group(cls=LazyGroup)
@click.version_option(package_name="tlkit")
@click.option("--verbose", is_flag=True, envvar="TLKIT_VERBOSE",
              help="Show TensorFlow's own start-up and log lines (also TLKIT_VERBOSE=1).")
@click.option("--quiet", is_flag=True, envvar=QUIET_ENV,
              help=f"Show no progress (phases, bars, epoch lines) on stderr (also {QUIET_ENV}=1).")
def cli(verbose: bool, quiet: bool) -> None:
    """tlkit: transfer learning on images and Kim (2014) text CNNs, with Keras 3."""
    if not verbose:
        _hide_tensorflow_start_up()
    if quiet:  # read by tlkit.progress wherever progress is shown, in this process
        os.environ[QUIET_ENV] = "1"


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


def line_buffered_output() -> None:
    """A file or pipe gets each line of stdout and stderr as it is written (Python buffers
    stdout there in blocks), so a killed run leaves its last lines in the log."""
    for stream in (sys.stdout, sys.stderr):
        if not stream.isatty() and hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tlkit`` console script."""
    # Notes such as "no GPU: training on CPU" are the program's, not the library's: scripts
    # (and click's test runner) see them only if they configure logging.
    _show_tlkit_notes()
    line_buffered_output()
    # SIGTERM (kill, job schedulers) stops a run like Ctrl-C: its folder is kept to resume.
    signal.signal(signal.SIGTERM, _interrupt)
    # A Ctrl-C is never lost in a callback (it was, in about 1 of 40 `tlkit report`s).
    sys.unraisablehook = _interrupt_again
    if not any(thread.name == "tlkit-interrupts" for thread in threading.enumerate()):
        threading.Thread(target=_raise_swallowed, name="tlkit-interrupts", daemon=True).start()
    cli.main(args=argv, prog_name="tlkit")
