"""A bound on `linecache`, the standard library's cache of source files.

Every formatted traceback (a logged exception, OpenTelemetry's `record_exception` on a failed
span, `/debug/tasks`) reads the source lines of each file on it through `linecache`, which keeps
the whole file for the life of the process. That is bounded only by the source the bot can run:
each new path an error takes adds files (hikari's `rest.py` alone is ~5,000 lines), and a soak
run of the bot kept 1.3 MB of them from faults after its warm-up (benchmarks/RESULTS.md section
8). `trim_linecache` empties the cache once the files in it add up to more than `max_bytes`; the
next traceback reads its files again, which costs milliseconds.

Call it from the event-loop thread (the code that formats tracebacks runs there): `linecache`
is not safe against being emptied by another thread in the middle of a lookup.
"""

from __future__ import annotations

import linecache
import logging
from typing import Final

__all__ = ["LINECACHE_MAX_BYTES", "linecache_bytes", "trim_linecache"]

log = logging.getLogger(__name__)

# Source bytes, not heap bytes: a file's lines take about 2-3 times its size in memory.
LINECACHE_MAX_BYTES: Final = 1 * 2**20


def linecache_bytes() -> int:
    """The size of the source files held in `linecache` (lazy entries, not read yet, count 0)."""
    total = 0
    for entry in list(linecache.cache.values()):
        if len(entry) == 4:  # (size, mtime, lines, fullname); a lazy entry is a 1-tuple
            size = entry[0]
            total += size if isinstance(size, int) else 0
    return total


def trim_linecache(max_bytes: int = LINECACHE_MAX_BYTES) -> int:
    """Empty `linecache` if its files add up to more than `max_bytes`; returns the bytes
    dropped (0 if it was within the bound)."""
    held = linecache_bytes()
    if held <= max_bytes:
        return 0
    linecache.clearcache()
    log.debug("source line cache emptied: %d bytes of source over %d", held, max_bytes)
    return held
