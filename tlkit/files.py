"""Files and folders written beside their name and renamed into place.

A kill, Ctrl-C or a full disk in the middle of a write leaves the previous version of the
file (or folder) whole and no half-written one under its name; a full disk becomes one
``UserError`` line naming the path and the free space. Everything tlkit writes for a user
(predictions, reports, exports, run files) goes through here.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "preds.csv"
    >>> write_text(path, "a,b\\n")
    >>> with replacing(path) as partial:
    ...     _ = partial.write_text("c,d\\n")
    >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
    ('c,d\\n', ['preds.csv'])
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tlkit.errors import UserError

# errno values that mean "the disk (or the user's quota) is full".
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How libraries that hide errno (h5py, TensorFlow's C++ file system) word the same thing.
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def sibling(path: Path, tag: str = "partial") -> Path:
    """The hidden name beside ``path`` that a write of this process uses until it is done.

    Example:
        >>> sibling(Path("out/preds.csv")).name.startswith(".preds.csv.")
        True
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{tag}")


def remove(path: Path) -> None:
    """Remove a file or a folder if it is there (a partial write being abandoned)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the disk or quota is full.

    Example:
        >>> is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
        True
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        if any(text in str(seen) for text in _FULL_TEXT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def free_space(path: Path) -> str:
    """The free space on the disk that holds ``path`` (or its nearest existing folder).

    Example:
        >>> free_space(Path("/")).endswith("B")
        True
    """
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    free = float(shutil.disk_usage(existing).free)
    for unit in ("B", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return f"{free:.1f} TB"  # pragma: no cover - the loop returns at GB


def disk_full_error(path: Path, kept: str = "") -> UserError:
    """The one line a full disk gives: the path, the free space and what was kept.

    Example:
        >>> str(disk_full_error(Path("/tmp/x.csv")))  # doctest: +ELLIPSIS
        "the disk is full: cannot write '/tmp/x.csv' (... free); free some space and run again"
    """
    kept = f"; {kept}" if kept else ""
    return UserError(f"the disk is full: cannot write '{path}' ({free_space(path)} free)"
                     f"{kept}; free some space and run again")


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM that come during the block are raised when it ends.

    For renames that must all happen or none (a report's files, a folder swapped in).

    Example:
        >>> with signals_held():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread handles signals
        return
    # Python handlers, not a signal mask: the mask of one thread does not hold back a signal
    # that the kernel gives to another (TensorFlow's, BLAS's).
    came: list[int] = []
    before = {number: signal.signal(number, lambda number, frame: came.append(number))
              for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        if came:
            signal.raise_signal(came[0])


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a hidden path beside ``path`` to write (a file or a folder); publish on success.

    On success the written file or folder replaces ``path`` (an existing folder is moved
    aside first and removed after). On any failure the hidden one is removed and ``path``
    is untouched; a full disk becomes a ``UserError`` naming ``path``.

    Example:
        >>> import tempfile
        >>> report = Path(tempfile.mkdtemp()) / "report"
        >>> with replacing(report) as partial:
        ...     partial.mkdir(); _ = (partial / "report.md").write_text("# ok")
        >>> sorted(p.name for p in report.iterdir())
        ['report.md']
    """
    final = Path(path)
    partial = sibling(final)
    remove(partial)
    try:
        yield partial
        if partial.is_dir() and final.is_dir():
            old = sibling(final, "old")
            with signals_held():  # between the two renames nothing is under the name
                os.replace(final, old)
                os.replace(partial, final)
            remove(old)
        else:
            os.replace(partial, final)
    except BaseException as error:
        remove(partial)
        if is_disk_full(error):
            kept = f"the previous '{final.name}' is unchanged" if final.exists() else ""
            raise disk_full_error(final, kept) from error
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` beside it first, then rename it into place.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.txt"
        >>> write_text(path, "hi"); path.read_text()
        'hi'
    """
    with replacing(path) as partial:
        partial.write_text(text, encoding=encoding)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` beside it first, then rename it into place.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.bin"
        >>> write_bytes(path, b"\\x00"); path.read_bytes()
        b'\\x00'
    """
    with replacing(path) as partial:
        partial.write_bytes(data)
