"""Replace a small file all at once: readers see the old content or the new, never a mix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_bytes_async"]


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write `data` to `path` via a synced temp file and rename; survives a crash at any point.

    `mode` defaults to owner-only because the first users are credential files.
    """
    path = Path(path)
    # Same directory: os.replace is only atomic within one file system.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), mode)
            tmp.write(data)
            tmp.flush()
            # Data on disk before the rename, or a crash could leave the new name empty.
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


async def atomic_write_bytes_async(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """atomic_write_bytes on a worker thread, so fsync does not stall the event loop."""
    await asyncio.to_thread(atomic_write_bytes, path, data, mode=mode)


def _fsync_directory(directory: Path) -> None:
    # The rename lives in the directory entry: sync it so the new name survives a power cut.
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        dir_fd = os.open(directory, flags)
    except OSError:
        return  # Platforms without directory handles (Windows) cannot sync this.
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # Some file systems refuse fsync on directories; the rename already happened.
    finally:
        os.close(dir_fd)
