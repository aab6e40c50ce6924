"""The heal action interface: what an action does when its alert fires and when it resolves.

The `heal` label of an alert names the action. Actions are idempotent (applying twice is
harmless) and `revert` is safe when nothing was applied, so the receiver may retry either.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

from bot.healing.payload import Alert

__all__ = [
    "HEAL_ACTIONS",
    "ActionRegistry",
    "ActionResult",
    "HealAction",
]

# A fixed, small set so that the `action` metric label stays bounded; the `heal` label of an
# alert rule must be one of these.
HEAL_ACTIONS: Final[tuple[str, ...]] = (
    "memory",
    "response_time",
    "error_rate",
    "api_health",
    "disk",
    "queue",
)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action run did: `figures` are measurements such as {"bytes_freed": 1.2e6}."""

    ok: bool
    detail: str = ""
    figures: dict[str, float] = field(default_factory=dict)

    @classmethod
    def success(cls, detail: str = "", **figures: float) -> ActionResult:
        """A successful run with its measurements."""
        return cls(True, detail, dict(figures))

    @classmethod
    def failure(cls, detail: str, **figures: float) -> ActionResult:
        """A failed run; `detail` says what went wrong."""
        return cls(False, detail, dict(figures))


@runtime_checkable
class HealAction(Protocol):
    """One remedy. `apply` must be idempotent; `revert` undoes it and is ok when nothing to undo."""

    @property
    def name(self) -> str:
        """The `heal` label value that selects this action (one of `HEAL_ACTIONS`)."""
        ...

    async def apply(self, alert: Alert) -> ActionResult:
        """Act on the firing alert."""
        ...

    async def revert(self, alert: Alert) -> ActionResult:
        """Undo `apply` once the alert resolved."""
        ...


class ActionRegistry:
    """Maps a `heal` label value to its action; only names in `HEAL_ACTIONS` are accepted."""

    def __init__(self, actions: Iterable[HealAction] = ()) -> None:
        self._actions: dict[str, HealAction] = {}
        for action in actions:
            self.register(action)

    def register(self, action: HealAction) -> None:
        """Add an action; an unknown or already registered name is a programming error."""
        if action.name not in HEAL_ACTIONS:
            raise ValueError(f"heal action {action.name!r} is not one of {', '.join(HEAL_ACTIONS)}")
        if action.name in self._actions:
            raise ValueError(f"heal action {action.name!r} is already registered")
        self._actions[action.name] = action

    def get(self, name: str) -> HealAction | None:
        """The action for a `heal` label value, or None."""
        return self._actions.get(name)

    def names(self) -> tuple[str, ...]:
        """Registered action names, in registration order."""
        return tuple(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions

    def __iter__(self) -> Iterator[HealAction]:
        return iter(self._actions.values())

    def __len__(self) -> int:
        return len(self._actions)
