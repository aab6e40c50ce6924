"""Process-wide figures that no component counts: heap estimate, data disk, tasks, build info.

`llmbot_python_heap_bytes` is an estimate chosen to be cheap (no walk over Python objects):

1. Linux: the resident *anonymous* memory of the process, summed by the kernel in
   `/proc/self/smaps_rollup` (about 1-5 ms for a few hundred MB). It holds the C heap *and*
   pymalloc's arenas, where CPython keeps every object of 512 bytes or less; it leaves out
   what RSS also counts but the program did not allocate: shared libraries and mapped files.
2. Elsewhere, glibc `mallinfo2()` through ctypes: `uordblks + hblkhd` (bytes malloc handed
   out, mmapped large blocks included). It misses pymalloc's arenas, which CPython maps
   directly, so it under-reads a heap of many small objects (measured: a million small dicts
   add ~220 MB of RSS and nothing to `uordblks`); hence only the fallback.
3. Neither available: 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import importlib.metadata
import logging
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BuildInfo",
    "DiskUsage",
    "asyncio_task_count",
    "data_disk_usage",
    "detect_build_info",
    "python_heap_bytes",
]

logger = logging.getLogger(__name__)

_SMAPS_ROLLUP: Final = Path("/proc/self/smaps_rollup")
_DISTRIBUTION: Final = "discord-llm-bot"


class _MallInfo2(ctypes.Structure):
    # struct mallinfo2 (glibc >= 2.33): every field a size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _anonymous_bytes() -> int | None:
    try:
        with _SMAPS_ROLLUP.open("rb") as f:
            for line in f:
                if line.startswith(b"Anonymous:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        return None
    return None


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        function = libc.mallinfo2
    except (OSError, AttributeError, TypeError):
        return None  # not glibc, or glibc older than 2.33
    function.restype = _MallInfo2
    function.argtypes = []
    return function


@functools.cache
def _heap_method() -> Callable[[], int]:
    """Pick the best working estimate once; the choice does not change while running."""
    if _anonymous_bytes() is not None:
        return lambda: _anonymous_bytes() or 0
    mallinfo = _mallinfo2()
    if mallinfo is not None:
        logger.debug("heap estimate: glibc mallinfo2 (no %s)", _SMAPS_ROLLUP)

        def from_mallinfo() -> int:
            info = mallinfo()
            return int(info.uordblks + info.hblkhd)

        return from_mallinfo
    logger.debug("heap estimate: unavailable on this platform; reporting 0")
    return lambda: 0


def python_heap_bytes() -> int:
    """The cheap heap estimate described in the module docstring."""
    return _heap_method()()


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Size and free bytes of the file system holding a directory (free for unprivileged use)."""

    size_bytes: int
    free_bytes: int


def data_disk_usage(directory: Path | None) -> DiskUsage:
    """Usage of the file system of `directory`, or of its nearest existing parent; zeros if none."""
    if directory is None:
        return DiskUsage(0, 0)
    # The data directory may not exist before the store first opens; its parent's file
    # system is where it will be created.
    for candidate in (directory, *directory.resolve().parents):
        try:
            usage = shutil.disk_usage(candidate)
        except OSError:
            continue
        return DiskUsage(usage.total, usage.free)
    return DiskUsage(0, 0)


def asyncio_task_count() -> int:
    """Tasks not yet done on the running event loop; 0 when called outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return 0
    return len(asyncio.all_tasks(loop))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """The `llmbot_build_info` labels: versions of the bot, Python and the two big clients."""

    version: str
    python: str
    hikari: str
    genai: str


@functools.cache
def detect_build_info() -> BuildInfo:
    """Versions of the installed distributions ("unknown" when one is not installed)."""
    return BuildInfo(
        version=_version(_DISTRIBUTION),
        python=platform.python_version(),
        hikari=_version("hikari"),
        genai=_version("google-genai"),
    )
