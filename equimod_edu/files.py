"""Writing files safely: whole or not at all, never through a link, with errors that say what happened.

    atomic_write(path, lambda f: torch.save(state, f))     # a checkpoint
    atomic_write(path, lambda f: f.write(text.encode()))   # a manifest, a config
    append_line(path, json.dumps(record))                  # one line of a log
    read_run_file(path)                                    # a run's own file: plain, never a link, bounded
    with RunLock(run_dir): ...                             # one writer per run folder

atomic_write puts the content in a temporary file of the same folder (a random name, created
exclusively), flushes and fsyncs it, then renames it over the target: a rename is atomic, so a kill
at any moment leaves the old file or the new one, and a link at the target is replaced, not
followed. On failure the temporary file is removed and the target is untouched. New files get
the mode the user's umask allows (0644 under the usual umask 022), like any file the user creates.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "append_line", "read_run_file", "RunLock", "RunFolderError", "os_error_reason",
           "current_umask", "TEMP_PREFIX", "RUN_FILE_LIMIT"]

TEMP_PREFIX = ".tmp-"  # every temporary file atomic_write makes starts so (stale ones can be recognised)
RUN_FILE_LIMIT = 256 * 2**20  # bytes: far above any run's config, environment or log (a log line is ~300 bytes)


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


def current_umask() -> int:
    """The process's umask: the permission bits that new files must not get (0o022 usually)."""
    try:  # Linux: read it without changing it (os.umask sets it, for a moment, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # elsewhere: set a strict one for an instant, then restore it
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a new temporary binary file next to `path`, then rename it to `path`.

    The file gets mode 0o666 minus the umask (mkstemp makes it 0600, whatever the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # (not on Windows before Python 3.13, where modes mean little)
            os.fchmod(fd, 0o666 & ~current_umask())
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
        fd = os.open(path, flags, 0o666)  # the umask takes its bits off
    except OSError:
        if Path(path).is_symlink():
            raise RunFolderError(f"{path} is a symbolic link; the run folder's files must be plain files") from None
        raise
    with os.fdopen(fd, "a") as f:
        f.write(line + "\n")


def _not_plain(path, mode: int) -> RunFolderError:
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    return RunFolderError(f"{path} is not a plain file ({kind}); a run folder's files must be plain files: "
                          f"move it away, then run again")


def _open_plain(path, flags: int, mode: int = 0o666) -> int:
    """A descriptor of the plain file `path`, never through a symbolic link (else RunFolderError naming it).

    O_NONBLOCK: opening a FIFO does not wait for a writer (the type is checked right after).
    """
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), mode)
    except OSError as error:
        if Path(path).is_symlink():
            raise RunFolderError(f"{path} is a symbolic link; a run folder's files must be plain files: delete "
                                 f"the link (what it points to is kept), then run again") from None
        if error.errno == errno.ENXIO:  # a socket, or a FIFO opened for writing
            raise _not_plain(path, os.stat(path).st_mode) from None
        raise
    mode_now = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode_now):
        os.close(fd)
        raise _not_plain(path, mode_now)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def read_run_file(path, limit: int = RUN_FILE_LIMIT) -> str:
    """The text of a run's own file (metrics.jsonl, config.json...): a plain file, not a link, at most `limit` bytes.

    Anything else raises RunFolderError naming the file: a link, a FIFO (reading would wait forever),
    a device such as /dev/zero (endless), or a file larger than `limit`. Undecodable bytes become U+FFFD.
    """
    with os.fdopen(_open_plain(path, os.O_RDONLY), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit + 1) if size <= limit else b""
        if size > limit or len(data) > limit:
            raise RunFolderError(f"{path} is {max(size, len(data)) / 2**20:.0f} MB, larger than a run's file can be "
                                 f"({limit / 2**20:.0f} MB): move it away, then run again")
    return data.decode("utf-8", errors="replace")


class RunLock:
    """An exclusive lock on a run folder (a POSIX lock, fcntl.lockf, on RUN/.lock) while a run writes into it.

    The operating system drops the lock when the process ends, even after kill -9, so a stale lock
    never blocks a later run; forked DataLoader workers do not inherit it. It keeps a second
    *process* out (within one process, a notebook re-running a cell is not blocked). Where fcntl
    is missing (Windows) the lock is a no-op. RUN/.lock is opened without following a link: a
    link there is refused (RunFolderError), its target never written.
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
        self._file = os.fdopen(_open_plain(self.path, os.O_RDWR | os.O_CREAT), "r+")  # never through a link
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
