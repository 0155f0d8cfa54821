"""Atomic file writing: a file is either its old self or wholly the new one.

The data lands in a temporary file in the destination folder, is flushed to
disk, and only then replaces the destination, so a failed run never leaves a
half-written model, checkpoint, mask or picture.
"""

import contextlib
import os
import secrets
from pathlib import Path


def _default_file_mode():
    """The mode ``open(..., "w")`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(folder):
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success it is fsynced and moved onto
    ``path``, on failure removed, leaving any existing file at ``path`` untouched.

    The temporary name keeps the extension (``name.tmp<pid>-<hex>.png``) so writers
    that infer the format from it (matplotlib, Pillow) pick the right one. The file
    gets the mode any new file gets (safetensors alone would leave it 0600).
    """
    path = Path(path)
    temp = path.with_name(f"{path.stem}.tmp{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield temp
        with open(temp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(temp, _default_file_mode())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temp, open(temp, "wb") as f:
        f.write(data)


def atomic_write_text(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
