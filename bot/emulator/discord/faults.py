"""REST fault injection: the next N matching requests fail, or succeed in a way the client
cannot see.

Three kinds, each for requests whose path contains ``route_contains`` (any path when None):

- ``status``: answered with that status before anything happens (a 5xx storm, 429s);
- ``slow``: carried out, then answered only after ``delay_s`` (the client's timeout fires
  first, though the message exists: the case a nonce guards against);
- ``drop``: carried out, then the connection is closed without an answer.

``remaining=None`` keeps a fault until ``FaultInjector.clear()`` (an outage of some length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Fault", "FaultInjector", "FaultKind"]

JSON = dict[str, Any]
FaultKind = Literal["status", "slow", "drop"]


@dataclass
class Fault:
    """A pending failure for requests whose path contains ``route_contains``."""

    status: int
    remaining: int | None
    route_contains: str | None = None
    retry_after: float = 0.05
    kind: FaultKind = "status"
    delay_s: float = 0.0

    def matches(self, path: str) -> bool:
        """Whether a request path is targeted by this fault."""
        left = self.remaining is None or self.remaining > 0
        return left and (self.route_contains is None or self.route_contains in path)

    def response(self) -> tuple[int, JSON, dict[str, str]]:
        """Return the status, Discord-shaped body and headers of the failure."""
        if self.status == 429:
            body: JSON = {
                "message": "You are being rate limited.",
                "retry_after": self.retry_after,
                "global": False,
            }
            return 429, body, {"Retry-After": "1", "X-RateLimit-Scope": "shared"}
        return self.status, {"message": f"{self.status}: Injected fault", "code": 0}, {}


class FaultInjector:
    """Holds pending faults and hands out the first one matching a request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self.injected = 0

    def add(self, fault: Fault) -> None:
        """Queue a fault."""
        self._faults.append(fault)

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first fault matching ``path``, if any."""
        for fault in self._faults:
            if fault.matches(path):
                self.injected += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()
