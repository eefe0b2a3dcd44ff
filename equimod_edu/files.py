"""Writing files so that a kill at any moment leaves the old file or the new one, whole.

    atomic_write(path, lambda f: torch.save(state, f))     # a checkpoint
    atomic_write(path, lambda f: f.write(text.encode()))   # a manifest, a config

The content goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed
over the target (a rename is atomic on POSIX and Windows file systems). On failure the temporary
file is removed and the target is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write"]


def atomic_write(path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a temporary binary file next to `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
