"""Slash commands: lightbulb's dependency resolver is generated once per command class.

Without the priming, every invocation made linkd generate and `exec` the resolver again (and
left a code object and a reference cycle behind): 1,000 `/chat` meant 1,000 `exec`s. The tests
count `exec` through Python's audit hooks, so they do not depend on linkd's internals.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import lightbulb
import pytest

from bot.chat.pipeline import ChatPipeline
from bot.discord.commands import CommandServices, build_commands
from bot.discord.injection import command_classes, prime_invoke_resolvers
from bot.healing.controls import BotControls

_counting = False
_execs = 0


def _audit(event: str, _args: tuple[Any, ...]) -> None:
    global _execs
    if _counting and event == "exec":
        _execs += 1


_hooked = False


@contextlib.contextmanager
def counting_execs() -> Iterator[list[int]]:
    """Counts `exec` calls in the block (an audit hook stays for the process: it is gated)."""
    global _counting, _execs, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _execs = 0
    _counting = True
    seen: list[int] = []
    try:
        yield seen
    finally:
        _counting = False
        seen.append(_execs)


def a_command_class() -> type[lightbulb.SlashCommand]:
    class Echo(lightbulb.SlashCommand, name="echo", description="Say it again"):
        @lightbulb.invoke
        async def invoke(self, ctx: lightbulb.Context) -> None:
            return None

    return Echo


async def invoke_fresh(cls: type[lightbulb.SlashCommand], ctx: object) -> None:
    """What lightbulb does per invocation: a new instance, its invoke method read from it."""
    method = getattr(cls(), cls._command_data.invoke_method)
    with contextlib.suppress(AttributeError):  # a command body reaching into the stand-in ctx
        await method(ctx)


async def test_unprimed_commands_exec_a_resolver_per_invocation() -> None:
    # The fault being worked around: if linkd fixes it, this fails and the priming can go.
    echo = a_command_class()
    with counting_execs() as execs:
        for _ in range(20):
            await invoke_fresh(echo, object())
    assert execs[0] >= 20  # at least one per invocation


async def test_a_thousand_invocations_of_a_primed_command_exec_nothing() -> None:
    echo = a_command_class()
    assert prime_invoke_resolvers([echo]) == 1
    assert prime_invoke_resolvers([echo]) == 0  # already primed

    with counting_execs() as execs:
        for _ in range(1000):
            await invoke_fresh(echo, object())
    assert execs == [0]


def services() -> CommandServices:
    # build_commands reads only these at build time; the command bodies are not run here.
    pipeline = SimpleNamespace(budgets=None, channels=None)
    return CommandServices(
        cast(ChatPipeline, pipeline), SimpleNamespace(), cast(BotControls, None), frozenset()
    )


async def test_every_command_the_bot_registers_is_primed() -> None:
    commands = build_commands(services())
    classes = list(command_classes(commands))
    names = {cls._command_data.name for cls in classes}
    assert {"chat", "clear", "status", "health", "maintenance", "run", "undo", "quota"} <= names

    with counting_execs() as execs:
        for cls in classes:
            for _ in range(3):
                # A ctx without attributes: each body stops at its first use of it, after
                # linkd has resolved its dependencies (where the exec would happen).
                await invoke_fresh(cls, object())
    assert execs == [0], f"{execs[0]} resolver(s) generated for {len(classes)} commands"


@pytest.mark.parametrize("item", [lightbulb.Group("g", "a group"), "not a command", 3])
def test_groups_without_commands_and_other_objects_are_skipped(item: object) -> None:
    assert prime_invoke_resolvers([item]) == 0
