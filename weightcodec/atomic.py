"""Writing outputs all or nothing.

:func:`atomic_write` never leaves a half-written file at the destination: the bytes go to an
unnamed temporary file (Linux ``O_TMPFILE``) that only gets a name once it is complete and
synced, and is then renamed over the destination. An exception, Ctrl-C or SIGTERM (the CLI turns
it into an exception) leaves the destination as it was and nothing else behind. A process killed
with SIGKILL between naming and renaming (a few microseconds) or on a filesystem without
``O_TMPFILE`` can leave a temporary named ``.<name>.<pid>.<random>.wcodec-tmp``; the next write to
the same folder removes such leftovers whose process is gone.

The destination must be a regular file or not exist. A symlink is written through (its target
is replaced, the link stays); a directory, device, FIFO or socket is refused with an
:class:`~weightcodec.errors.OutputError`. New files get the usual ``0666 & ~umask`` mode.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from typing import BinaryIO
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError

TMP_SUFFIX = ".wcodec-tmp"
#: Leftovers older than this are removed even if their process id is in use again.
STALE_SECONDS = 24 * 3600


def resolve_output(path: str | Path, *, overwrite: bool = True) -> Path:
    """The file that writing ``path`` will create or replace, after the checks above.

    Raises:
        OutputError: ``path`` exists and ``overwrite`` is false, is not a regular file (or a
            symlink to one), or its folder does not exist.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if mode is not None:
        if stat.S_ISDIR(mode):
            raise OutputError(f"{path} is a directory")
        if not stat.S_ISREG(mode):
            raise OutputError(f"{path} is not a regular file ({_kind(mode)}); refusing to replace it: "
                              "choose another output path")
        if not overwrite:
            raise OutputError(f"{path} exists; pass --force to overwrite it")
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    return target


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def atomic_write(path: str | Path, chunks: Iterable[bytes], *, overwrite: bool = True) -> int:
    """Write ``chunks`` to ``path`` all or nothing; returns the number of bytes written.

    On any failure (including KeyboardInterrupt) ``path`` is left as it was and no temporary
    file remains.
    """

    def body(fd: int) -> int:
        written = 0
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            written += len(chunk)
        return written

    return _atomic(path, body, overwrite=overwrite)


def atomic_write_with(path: str | Path, write: Callable[[BinaryIO], object], *, overwrite: bool = True) -> int:
    """Like :func:`atomic_write`, for writers that want a file: ``write(file)`` writes the content
    to a binary file object (e.g. ``torch.save``, which then streams tensors to disk without a copy
    of the whole output in memory). Returns the number of bytes written."""

    def body(fd: int) -> int:
        with os.fdopen(fd, "wb", closefd=False) as handle:
            write(handle)
            handle.flush()
            return handle.tell()

    return _atomic(path, body, overwrite=overwrite)


def _atomic(path: str | Path, body: Callable[[int], int], *, overwrite: bool) -> int:
    target = resolve_output(path, overwrite=overwrite)
    sweep_leftovers(target)
    fd = name = None
    written = 0
    try:
        try:
            fd = os.open(target.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except (AttributeError, OSError) as exc:  # no O_TMPFILE here: a named temporary file
            if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            name = temp_name(target)
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        written = body(fd)
        os.fsync(fd)
        if name is None:
            name = temp_name(target)
            _link_unnamed(fd, name)
        os.replace(name, target)
        name = None
        _fsync_dir(target.parent)
    except BaseException as exc:
        if name is not None:
            try:
                os.unlink(name)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return written


def _link_unnamed(fd: int, name: str) -> None:
    """Give the O_TMPFILE file ``fd`` a name: linkat(AT_SYMLINK_FOLLOW) through /proc/self/fd.

    (``os.link`` with default arguments calls link(2), which does not follow the /proc link.)
    """
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(str(fd), name, src_dir_fd=proc, follow_symlinks=True)
    finally:
        os.close(proc)


def temp_name(target: Path) -> str:
    return str(target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def sweep_leftovers(target: Path) -> list[Path]:
    """Remove temporaries of earlier writes to ``target`` whose process is gone (or that are stale)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]{{8}}{re.escape(TMP_SUFFIX)}")
    removed = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        try:
            stale = time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            if stale or not _alive(int(match.group(1))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_with", "resolve_output", "sweep_leftovers"]
