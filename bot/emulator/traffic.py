"""Simulated Discord users: they mention the bot, DM it, reply to it, attach images and use /chat.

Used by `demo` and the load test. Each turn is reported through a callback with what was asked,
what came back and how long it took, so callers can print or measure it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bot.emulator.discord import DiscordEmulator

__all__ = ["Traffic", "TurnRecord"]

Action = Literal["mention", "dm", "reply", "image", "slash", "thread"]

QUESTIONS = (
    "what is a monad, in one paragraph?",
    "give me three names for a grey cat",
    "how do I reverse a list in Python?",
    "what's the difference between TCP and UDP?",
    "write a haiku about Mondays",
    "explain recursion to a five year old",
    "what is the capital of Australia?",
    "give me a long answer about sorting algorithms with code",
    "why is the sky blue?",
    "summarise the plot of Hamlet in two sentences",
)
FOLLOW_UPS = ("can you say more?", "why?", "give me an example", "shorter please", "thanks! and?")
# A tiny valid 1x1 PNG, so image turns carry a real picture.
PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b8b1"
    "5c0000000049454e44ae426082"
)
WEIGHTS: dict[Action, float] = {
    "mention": 0.35,
    "dm": 0.2,
    "reply": 0.2,
    "image": 0.08,
    "slash": 0.1,
    "thread": 0.07,
}


@dataclass(frozen=True, slots=True)
class TurnRecord:
    action: Action
    place: str
    user: str
    asked: str
    answer: str | None  # None when nothing came back in time
    chunks: int
    seconds: float
    message_id: int | None = None  # the user's message (None for slash commands)


@dataclass
class _User:
    info: dict[str, Any]
    dm: int
    last_bot_message: tuple[int, int] | None = None  # (channel, message id)
    busy: bool = False  # a person waits for the answer before asking again
    next_at: float = 0.0  # ... and a moment more (the bot's per-user cooldown)


class Traffic:
    """A small population of users in a few guilds, talking to the bot at a steady rate."""

    def __init__(
        self,
        discord: DiscordEmulator,
        *,
        users: int = 4,
        guilds: int = 2,
        rate: float = 0.5,
        seed: int = 1,
        reply_timeout_s: float = 60.0,
        think_time_s: float = 2.5,
        on_turn: Callable[[TurnRecord], None] | None = None,
    ) -> None:
        self._discord = discord
        self._rng = random.Random(seed)
        self._rate = rate
        self._timeout = reply_timeout_s
        self._on_turn = on_turn
        self._think_time = think_time_s
        self._places: list[tuple[str, int]] = []
        self._users: list[_User] = []
        self.turns: list[TurnRecord] = []
        self._guild_ids: list[int] = []
        for g in range(guilds):
            guild = discord.create_guild(f"Guild {g + 1}")
            self._guild_ids.append(guild)
            general = discord.guild_text_channel(guild)
            thread = discord.create_channel(guild, name="bot-thread", type=11, parent_id=general)
            self._places += [
                (f"Guild {g + 1} #general", general),
                (f"Guild {g + 1} thread", thread),
            ]
        for u in range(users):
            info = discord.create_user(f"user{u + 1}")
            for guild_id in self._guild_ids:
                discord.add_member(guild_id, info)
            self._users.append(_User(info, discord.create_dm(info)))

    async def run(self, duration_s: float | None = None, turns: int | None = None) -> None:
        """Start turns at the configured rate until the duration or turn count is reached."""
        pending: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        count = 0
        try:
            while (duration_s is None or time.monotonic() - started < duration_s) and (
                turns is None or count < turns
            ):
                task = asyncio.create_task(self._turn())
                pending.add(task)
                task.add_done_callback(pending.discard)
                count += 1
                await asyncio.sleep(self._rng.expovariate(self._rate) if self._rate > 0 else 0)
            if pending:
                await asyncio.wait(pending, timeout=self._timeout)
        finally:
            for task in pending:
                task.cancel()
            for task in list(pending):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _turn(self) -> None:
        now = time.monotonic()
        idle = [u for u in self._users if not u.busy and u.next_at <= now]
        if not idle:
            return  # everyone is waiting for an answer: this tick passes
        user = self._rng.choice(idle)
        user.busy = True
        try:
            await self._take_turn(user)
        finally:
            user.busy = False
            user.next_at = time.monotonic() + self._think_time

    async def _take_turn(self, user: _User) -> None:
        actions = list(WEIGHTS)
        action: Action = self._rng.choices(actions, weights=[WEIGHTS[a] for a in actions])[0]
        if action == "reply" and user.last_bot_message is None:
            action = "mention"
        name = user.info["username"]
        started = time.monotonic()
        if action == "slash":
            await self._slash(user, started)
            return
        question = self._rng.choice(QUESTIONS)
        kwargs: dict[str, Any] = {}
        if action == "dm":
            place, channel = "DM", user.dm
        elif action == "reply":
            assert user.last_bot_message is not None
            channel, reply_to = user.last_bot_message
            place = self._place_name(channel)
            question = self._rng.choice(FOLLOW_UPS)
            kwargs["reply_to"] = reply_to
        else:
            place, channel = self._rng.choice(
                [p for p in self._places if (action == "thread") == ("thread" in p[0])]
            )
            kwargs["mention_bot"] = True
            if action == "image":
                question = "what is in this picture?"
                kwargs["attachments"] = [
                    self._discord.add_attachment(PIXEL_PNG, "pixel.png", "image/png")
                ]
        msg = await self._discord.send_message(
            channel, author=user.info, content=question, **kwargs
        )
        msg_id = int(msg["id"])
        try:
            reply = await self._discord.wait_for_reply(msg_id, timeout=self._timeout)
        except TimeoutError:
            self._record(
                TurnRecord(
                    action, place, name, question, None, 0, time.monotonic() - started, msg_id
                )
            )
            return
        user.last_bot_message = (channel, reply.id)
        answer = reply.content
        self._record(
            TurnRecord(action, place, name, question, answer, 1, time.monotonic() - started, msg_id)
        )

    async def _slash(self, user: _User, started: float) -> None:
        place, channel = self._rng.choice(self._places)
        question = self._rng.choice(QUESTIONS)
        name = user.info["username"]
        ix = await self._discord.send_interaction(
            "chat", user=user.info, channel_id=channel, options={"message": question}
        )
        try:
            await ix.wait_for_response(timeout=self._timeout)
            answer = ix.final_content
        except TimeoutError:
            answer = None
        self._record(
            TurnRecord(
                "slash", place, name, f"/chat {question}", answer, 1, time.monotonic() - started
            )
        )

    def _place_name(self, channel: int) -> str:
        for name, cid in self._places:
            if cid == channel:
                return name
        return "DM"

    def _record(self, turn: TurnRecord) -> None:
        self.turns.append(turn)
        if self._on_turn is not None:
            self._on_turn(turn)
