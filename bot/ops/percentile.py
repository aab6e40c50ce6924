"""The one percentile of the code base: linear interpolation between closest ranks.

It is the convention of numpy's default and of `statistics.quantiles(method="inclusive")`;
that function is not used because it computes all 99 cut points and needs two values or more,
where `/status` asks for one figure of up to a thousand recent reply times, often of one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], q: float, *, empty: float = math.nan) -> float:
    """The q-th percentile (q in 0..100) of `values`; `empty` when there are none."""
    ordered = sorted(values)
    if not ordered:
        return empty
    rank = (len(ordered) - 1) * min(100.0, max(0.0, q)) / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
