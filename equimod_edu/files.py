"""Writing files safely: whole or not at all, never through a link, with errors that say what happened.

    atomic_write(path, lambda f: torch.save(state, f))     # a checkpoint
    atomic_write(path, lambda f: f.write(text.encode()))   # a manifest, a config
    append_line(path, json.dumps(record))                  # one line of a log
    with RunLock(run_dir): ...                             # one writer per run folder

atomic_write puts the content in a temporary file of the same folder (a random name, created
exclusively), flushes and fsyncs it, then renames it over the target: a rename is atomic, so a kill
at any moment leaves the old file or the new one, and a link at the target is replaced, not
followed. On failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "append_line", "RunLock", "RunFolderError", "os_error_reason", "TEMP_PREFIX"]

TEMP_PREFIX = ".tmp-"  # every temporary file atomic_write makes starts so (stale ones can be recognised)


class RunFolderError(RuntimeError):
    """A run folder is in use, holds another run, or cannot be written."""


def os_error_reason(error: BaseException, path) -> str:
    """A short, plain reason for an error while writing `path` (full disk, permission, read-only...)."""
    path = Path(path)
    number = getattr(error, "errno", None)
    if number == errno.ENOSPC or "No space left" in str(error) or "enforce fail at inline_container" in str(error):
        try:
            free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free / 2**20
        except OSError:
            return "the disk is full"
        return f"the disk is full ({free:.0f} MB free)"
    if number in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if number == errno.EROFS:
        return "the file system is read-only"
    if number == errno.EISDIR:
        return "it is a folder, not a file"
    text = str(getattr(error, "strerror", None) or error).strip()
    return text.splitlines()[-1] if text else type(error).__name__  # the last line: a worker's error, not its traceback


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a new temporary binary file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_line(path, line: str) -> None:
    """Append one line to a text file, refusing to write through a symbolic link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if Path(path).is_symlink():
            raise RunFolderError(f"{path} is a symbolic link; the run folder's files must be plain files") from None
        raise
    with os.fdopen(fd, "a") as f:
        f.write(line + "\n")


class RunLock:
    """An exclusive lock on a run folder (a POSIX lock, fcntl.lockf, on RUN/.lock) while a run writes into it.

    The operating system drops the lock when the process ends, even after kill -9, so a stale lock
    never blocks a later run; forked DataLoader workers do not inherit it. It keeps a second
    *process* out (within one process, a notebook re-running a cell is not blocked). Where fcntl
    is missing (Windows) the lock is a no-op.
    """

    def __init__(self, folder):
        self.path = Path(folder) / ".lock"
        self._file = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise RunFolderError(f"{self.path.parent} is in use: a training ({holder}) is writing into it. "
                                 f"Wait for it to finish, or train into another --out.") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None
