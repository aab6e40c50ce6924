"""One dependency resolver per slash command class, not one per invocation.

lightbulb 3 makes a new command instance for every invocation and marks `invoke` with linkd's
`AutoInjecting`. Reading the method from the instance binds a fresh `AutoInjecting` that is
given the class-level one's generated resolver, and the class-level one never generates it (only
bound copies are called), so every invocation generates and `exec`s the resolver again: about
1,000 `exec`s for 1,000 `/chat`, each leaving a code object and a reference cycle for the
garbage collector (linkd 0.6.5, the newest; benchmarks/RESULTS.md section 8). Generating it once
on the class-level `AutoInjecting` makes every bound copy reuse it, which is what linkd does for
plain functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import lightbulb
import linkd

__all__ = ["command_classes", "prime_invoke_resolvers"]

log = logging.getLogger(__name__)


def command_classes(commands: Iterable[Any]) -> Iterator[type[lightbulb.SlashCommand]]:
    """The slash command classes in `commands`, those in groups and subgroups included."""
    for item in commands:
        if isinstance(item, (lightbulb.Group, lightbulb.SubGroup)):
            yield from command_classes(item.subcommands.values())
        elif isinstance(item, type) and issubclass(item, lightbulb.SlashCommand):
            yield item


def prime_invoke_resolvers(commands: Iterable[Any]) -> int:
    """Generate each command class's invoke resolver once; returns how many were generated.

    A linkd without the private hooks used here leaves the commands as they are (they still
    work, regenerating the resolver per invocation) and says so in the log.
    """
    primed = 0
    for cls in command_classes(commands):
        method = cls.__dict__.get(cls._command_data.invoke_method)
        if not isinstance(method, linkd.AutoInjecting):
            continue  # dependency injection is off (LINKD_DI_DISABLED): nothing generated
        generate = getattr(method, "_codegen_dependency_func", None)
        if generate is None or not hasattr(method, "_dependency_func"):
            log.warning("linkd changed: slash command resolvers are generated per invocation")
            return primed
        if method._dependency_func is None:
            method._dependency_func = generate()
            primed += 1
    return primed
