"""What long work is doing, on stderr: a live bar in a terminal, flushed lines in a log file.

A run is a sequence of phases (finding images, each feature-cache pass, the probe, each
stage, scoring, the report, ...). ``phase`` announces one when it starts, shows its progress
while it runs and says when it ended and how long it took; ``recording`` collects those wall
times, which a training run writes into ``metrics.json`` (``"phases"``).

In a terminal (stderr is a tty) a phase draws a live bar with ``rich`` (a pulsing one with
the time so far when its size is unknown), which Keras already depends on and which, unlike
Keras's ``Progbar``, writes to any stream (stdout carries the data a command prints) and
shows the rate. In a file or a pipe each phase writes plain lines: one when it starts, one
after its first count (rate and ETA at once), then one per ``LINE_INTERVAL`` seconds (done
/ total, rate, ETA; a phase that counts nothing, such as a probe's fit, says how long it has
run) and one when it ends; never a bar's control characters. ``TLKIT_QUIET=1`` (the
``--quiet`` option) silences all of it; times are still recorded.

Example:
    >>> with recording() as times:
    ...     with phase("demo", total=3, unit="image") as demo:
    ...         demo.advance(3)
    >>> list(times)
    ['demo']
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

QUIET_ENV = "TLKIT_QUIET"
LINE_INTERVAL = 10.0  # seconds between two progress lines in a file (at most one per interval)

# Read through the module so a test can put a fake clock in.
_clock = time.monotonic
_records: list[dict[str, float]] = []
_open: list[Phase] = []


def quiet() -> bool:
    """True when progress is silenced (``TLKIT_QUIET`` set to anything but ``""``/``0``).

    Example:
        >>> os.environ[QUIET_ENV] = "1"; quiet()
        True
        >>> del os.environ[QUIET_ENV]
    """
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


def interactive() -> bool:
    """True when progress goes to a terminal (stderr is a tty): bars instead of lines.

    Example:
        >>> interactive()  # a doctest's stderr is not a terminal
        False
    """
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def duration(seconds: float) -> str:
    """``seconds`` as a person reads them.

    Example:
        >>> duration(4.26), duration(192), duration(4000)
        ('4.3s', '3m 12s', '1h 06m')
    """
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    minutes, whole = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {whole:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def plural(unit: str) -> str:
    """The plural of a unit's name.

    Example:
        >>> plural("image"), plural("batch")
        ('images', 'batches')
    """
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


def say(text: str) -> None:
    """One flushed line on stderr, unless quiet.

    Example:
        >>> say("split: train 6, val 2, test 2")  # on stderr
    """
    if not quiet():  # one write: a line from the watching thread never splits it
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class Phase:
    """One announced piece of work: count what is done with ``advance``; ``result`` (what it
    found) joins the line that ends it. Made by ``phase``.

    Example:
        >>> with phase("count", total=2) as counting:
        ...     counting.advance(2)
        >>> counting.done, counting.seconds >= 0
        (2, True)
    """

    def __init__(self, name: str, total: int | None, unit: str) -> None:
        self.name, self.total, self.unit = name, total, unit
        self.done, self.seconds, self.result = 0, 0.0, ""
        self.start = _clock()
        self._last_line: float | None = None  # the first count says the rate and ETA at once
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lines = False  # plain lines (a file or pipe), set when it is shown

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done: the bar moves, or a line is due (after the first
        count, then at most one per LINE_INTERVAL; the end has a line of its own)."""
        self.done += n
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, completed=self.done, status=self.status())
            return
        with self._lock:
            now, finished = _clock(), self.total is not None and self.done >= self.total
            due = self._last_line is None or now - self._last_line >= LINE_INTERVAL
            if due and not finished and self._lines and not quiet():
                self._last_line = now
                say(f"{self.name}: {self.status()}")

    def _watch(self) -> None:
        """A line when none came for LINE_INTERVAL (a fit that counts nothing, a slow batch),
        so a log never falls silent while the phase runs."""
        while not self._stop.wait(LINE_INTERVAL / 4):
            with self._lock:
                now = _clock()
                if now - (self._last_line or self.start) >= LINE_INTERVAL:
                    self._last_line = now
                    say(f"{self.name}: {self.status()}")

    def rate(self) -> float:
        """Units done per second since the phase started."""
        return self.done / max(_clock() - self.start, 1e-9)

    def status(self) -> str:
        """Done so far, rate and time left: ``120/672 images (18%), 54.6 images/s, ETA 10.3s``."""
        rate, units = self.rate(), plural(self.unit)
        if not self.done:  # nothing counted (yet): how long it has run
            size = f"0/{self.total} {units}, " if self.total else ""
            return f"{size}running for {duration(_clock() - self.start)}"
        if not self.total:
            return f"{self.done} {units} so far, {rate:.1f} {units}/s"
        eta = duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        return (f"{self.done}/{self.total} {units} ({self.done / self.total:.0%}), "
                f"{rate:.1f} {units}/s, ETA {eta}")

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[status]}"),
                       console=Console(file=sys.stderr), transient=True,
                       redirect_stdout=False)  # stdout is the command's data, never the bar's
        # the elapsed time is a column of its own: the status shows counts once there are any
        task = bar.add_task(self.name, total=self.total, status="")
        bar.start()
        self._bar = (bar, task)

    def _show(self, draw: bool, lines: bool) -> threading.Thread | None:
        """Start the thread that keeps a log speaking (``lines``), else the bar (``draw``)."""
        if lines:
            self._lines = True
            watcher = threading.Thread(target=self._watch, name=f"progress {self.name}",
                                       daemon=True)
            watcher.start()
            return watcher
        if draw and not any(p._bar for p in _open):  # one bar at a time
            self._start_bar()
        return None

    def _stop_showing(self, watcher: threading.Thread | None) -> None:
        self._stop.set()
        if watcher is not None:
            watcher.join()
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None


@contextmanager
def phase(name: str, total: int | None = None, unit: str = "item", detail: str = "",
          record: str | None = None, draw: bool = True, announce: bool = True
          ) -> Iterator[Phase]:
    """Announce the phase ``name``, show its progress, say when it ends; record its time.

    ``total`` units (``unit``: ``image``, ``batch``, ...) are expected; ``detail`` is said
    when it starts. The wall time is added to the open ``recording`` under ``record``
    (default: ``name``), so passes of one kind (``cache train``, ``cache val``) add up.
    ``draw=False`` leaves a terminal's bar to another library (Keras's epoch bar).
    ``announce=False`` says nothing until the phase has run ``LINE_INTERVAL`` or has ended
    (plain lines, also in a terminal): a phase of checks, whose mistakes stay one line.

    Example:
        >>> with phase("scan", unit="image") as scan:
        ...     scan.advance(40)
        >>> scan.done
        40
    """
    step, watcher = Phase(name, total, unit), None
    if not quiet():
        size = f"{total} {plural(unit)}" if total else ""
        if announce:
            say(f"{name}: " + ("; ".join(part for part in (detail, size) if part) or "started"))
        else:
            step._last_line = step.start  # the first count waits for the interval too
        watcher = step._show(draw, lines=not announce or not interactive())
    _open.append(step)
    try:
        yield step
    finally:
        _open.remove(step)
        step._stop_showing(watcher)
        step.seconds = _clock() - step.start
        if _records:
            key = record or name
            _records[-1][key] = round(_records[-1].get(key, 0.0) + step.seconds, 2)
    units = plural(unit)
    counted = f", {step.done} {units}, {step.rate():.1f} {units}/s" if step.done else ""
    found = f": {step.result}" if step.result else ""
    say(f"{name}: done in {duration(step.seconds)}{counted}{found}")


def advance(n: int = 1) -> None:
    """Count ``n`` units into the innermost open phase (none open: nothing happens), for a
    loop that its caller names (``Task.probabilities`` in an ``evaluate`` phase).

    Example:
        >>> advance(5)  # no phase open
    """
    if _open:
        _open[-1].advance(n)


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the wall time of each phase inside, in seconds by phase name; a record that
    is already open is shared (a job's checks and its lifecycle make one record).

    Example:
        >>> with recording() as times, phase("probe"):
        ...     pass
        >>> list(times)
        ['probe']
    """
    if _records:
        yield _records[-1]
        return
    times: dict[str, float] = {}
    _records.append(times)
    try:
        yield times
    finally:
        _records.pop()
