"""Keep the garbage collector's full passes short in a long-running bot process.

CPython's oldest-generation collection walks every tracked object. Right after start-up that is
mostly the imported libraries (google-genai's pydantic models, hikari, OpenTelemetry): measured
here, 60-100 ms pauses three times in a 10-second run at 50 messages/s, which were the whole p99
of the latency the bot adds (benchmarks/RESULTS.md). `gc.freeze()` moves everything alive at
that point into a permanent generation that collections skip; objects made later are collected
as before.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

log = logging.getLogger(__name__)


def freeze_startup_heap() -> int:
    """Collect once, then exempt what survives from later collections; returns the count."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("%d start-up objects exempted from garbage collection", frozen)
    return frozen
