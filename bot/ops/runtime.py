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

Reading smaps_rollup costs more than the rest of a `/metrics` scrape together, and the figure
moves slowly, so the exported gauge goes through `Throttled`: read at most every
`HEAP_REFRESH_S` seconds (`python_heap_bytes` itself always reads).
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Generic, TypeVar

__all__ = [
    "HEAP_REFRESH_S",
    "BuildInfo",
    "DiskUsage",
    "Throttled",
    "asyncio_task_count",
    "data_disk_usage",
    "detect_build_info",
    "python_heap_bytes",
    "throttled_heap_bytes",
]

logger = logging.getLogger(__name__)

_SMAPS_ROLLUP: Final = Path("/proc/self/smaps_rollup")
_DISTRIBUTION: Final = "discord-llm-bot"
# How long an exported heap estimate may be reused (deploy/prometheus scrapes every 15 s).
HEAP_REFRESH_S: Final = 5.0

_T = TypeVar("_T")


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


class Throttled(Generic[_T]):
    """`read()`, called again only once `interval_s` has passed since its last value.

    The first call reads; later calls within `interval_s` (by `clock`) return that value. A
    read that raises is not kept: the next call tries again.
    """

    def __init__(
        self,
        read: Callable[[], _T],
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self._read = read
        self._interval_s = interval_s
        self._clock = clock
        self._last: tuple[float, _T] | None = None  # (read at, value)

    @property
    def interval_s(self) -> float:
        """The longest a value is reused, in seconds."""
        return self._interval_s

    def __call__(self) -> _T:
        now = self._clock()
        last = self._last
        if last is not None and now - last[0] < self._interval_s:
            return last[1]
        value = self._read()
        self._last = (now, value)
        return value


def throttled_heap_bytes(
    interval_s: float = HEAP_REFRESH_S, *, clock: Callable[[], float] = time.monotonic
) -> Throttled[int]:
    """`python_heap_bytes`, read at most every `interval_s` seconds (the exported gauge)."""
    return Throttled(python_heap_bytes, interval_s, clock=clock)


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
