"""files.py: atomic writes, appends that refuse symbolic links, plain reasons for OS errors.

(The run lock against a second process, and what a killed write leaves, are tested through the Trainer in
test_reliability.py.)
"""

import errno
import os

import pytest

from equimod_edu.files import RunFolderError, RunLock, append_line, atomic_write, os_error_reason


def test_atomic_write_leaves_the_old_file_and_no_temporary_on_failure(tmp_path):
    target = tmp_path / "deep" / "file.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]


def test_append_line_appends_and_refuses_a_symbolic_link(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_line(log, "1")
    append_line(log, "2")
    assert log.read_text() == "1\n2\n"
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    link = tmp_path / "link.jsonl"
    link.symlink_to(outside)
    with pytest.raises(RunFolderError, match="symbolic link"):
        append_line(link, "3")
    assert outside.read_text() == "keep me"


def test_os_errors_get_a_plain_reason(tmp_path):
    path = tmp_path / "checkpoint.pt"
    assert os_error_reason(OSError(errno.ENOSPC, "No space left on device"), path).startswith("the disk is full")
    assert os_error_reason(OSError(errno.EACCES, "Permission denied"), path) == "permission denied"
    assert os_error_reason(OSError(errno.EROFS, "Read-only file system"), path) == "the file system is read-only"
    assert os_error_reason(OSError(errno.EISDIR, "Is a directory"), path) == "it is a folder, not a file"
    assert os_error_reason(RuntimeError("Traceback ...\nValueError: bad image"), path) == "ValueError: bad image"


def test_the_run_lock_writes_its_holder_and_is_released_on_exit(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        assert lock.path.read_text() == f"pid {os.getpid()}"
    with RunLock(tmp_path / "run"):  # released: the folder can be locked again
        pass
