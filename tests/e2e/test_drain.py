"""Messages that arrive while the bot drains for a restart (after SIGTERM, before it exits) are
journalled and answered after the restart, exactly once, their users told at once (issue 16,
"nothing accepted is lost"); only when the journal cannot keep one is its user asked to ask
again. The real process for the restart, the whole bot in-process for the failing journal."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.app import BotApp
from bot.chat.pipeline import CAUGHT_UP_NOTE, RESTARTING_NOTICE
from bot.discord.gateway import RESTARTING_TEXT
from bot.emulator.discord import DiscordEmulator
from bot.emulator.gemini import GeminiEmulator
from tests.e2e.test_chaos import BotProcess, _finals, _replies, _until
from tests.e2e.test_exactly_once import _refuse_in_db

# Gemini's answer to the question in flight keeps the bot draining this long: the new mention
# must be read and told within it (a fraction of a second; the rest is slack for a busy host).
DRAIN_S: Final = 5.0
IN_PROCESS_DRAIN_S: Final = 3.0  # the same for the whole bot in this process (no start-up)
STARTED_LINE: Final = "bot started as user"
STOPPING_LINE: Final = "stopping: finishing replies in flight"


def _logged(path: Path, line: str) -> bool:
    return line in path.read_text(errors="replace")


async def _until_logged(path: Path, line: str) -> None:
    """Wait until the bot's log has `line` (polled: a file notifies nobody)."""

    async def check() -> bool:
        return _logged(path, line)

    await _until(f"the log line {line!r}", check)


async def _metric(http: aiohttp.ClientSession, port: int, name: str, **labels: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _set_catchup_mark(db: Path, channel_id: int, last_id: int) -> None:
    """The channel's catch-up mark as if it had been saved before the drain (a crash after the
    journal write): the next start's catch-up then reads the journalled message as well."""
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute(
            "SELECT value FROM kv WHERE key = ?", (f"catchup:{channel_id}",)
        ).fetchone()
        mark = json.loads(raw)
        mark["last"] = last_id
        conn.execute(
            "UPDATE kv SET value = ?, compressed = 0 WHERE key = ?",
            (json.dumps(mark).encode(), f"catchup:{channel_id}"),
        )


async def test_a_mention_during_the_drain_is_journalled_told_and_answered_once_after_restart(
    tmp_path: Path, discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    bot = BotProcess(tmp_path, discord, gemini)
    user = discord.create_user("asker")
    dm = discord.create_dm(user)
    await bot.start()
    assert bot.process is not None
    log = tmp_path / "bot-1.stderr"
    # Started, so SIGTERM is handled (asked only now, a question reaching Gemini proves it).
    await _until_logged(log, STARTED_LINE)

    gemini.latency = DRAIN_S
    slow = int((await discord.send_message(dm, author=user, content="a slow one"))["id"])
    await gemini.wait_for_requests(1)
    bot.process.send_signal(signal.SIGTERM)
    await _until_logged(log, STOPPING_LINE)

    asked = await discord.send_message(dm, author=user, content="asked while draining")
    during = int(asked["id"])
    notice = await discord.wait_for_reply(during, timeout=10)
    assert notice.content == RESTARTING_NOTICE
    assert not _finals(discord, slow), "the drain ended before the new mention was read"
    assert await asyncio.wait_for(bot.process.wait(), 30) == 0, bot.log_tail()
    assert during in bot.journalled()
    assert len(_finals(discord, slow)) == 1  # the drain finished the question in flight
    assert _replies(discord, during) == [RESTARTING_NOTICE]  # told once, not answered yet

    # While the bot is down: another question in the same DM, for the restart's catch-up; and
    # the DM's mark moved back before the drained mention, so the catch-up reads it too.
    gemini.latency = 0.0
    down = int((await discord.send_message(dm, author=user, content="asked while down"))["id"])
    _set_catchup_mark(bot.data_dir / "bot.db", dm, slow)

    await bot.start()
    await discord.wait_for(
        lambda: _finals(discord, during) and _finals(discord, down), timeout=30, what="answers"
    )
    async with aiohttp.ClientSession() as http:
        # The catch-up read the drained mention too and handed it off: the journal refused it
        # (it is handed off before the later question, whose answer is in).
        duplicates = await _metric(
            http, bot.port, "llmbot_duplicate_deliveries_total", source="catchup"
        )
        requeued = await _metric(
            http, bot.port, "llmbot_resumed_questions_total", outcome="requeued"
        )
    assert await bot.terminate() == 0
    assert requeued == 1  # the resume answered it
    assert duplicates == 1  # and the catch-up's copy got nothing
    assert _replies(discord, during)[0] == RESTARTING_NOTICE
    assert len(_replies(discord, during)) == 2 and len(_finals(discord, during)) == 1
    assert "asked while draining" in _finals(discord, during)[0]
    assert _finals(discord, during)[0].count(CAUGHT_UP_NOTE) == 0  # answered by the resume
    assert len(_replies(discord, down)) == 1 and CAUGHT_UP_NOTE in _replies(discord, down)[0]
    assert len(_replies(discord, slow)) == 1
    assert len(gemini.requests) == 3  # one model call per question, none twice


async def _drain_with_a_slow_answer(
    app: BotApp, discord: DiscordEmulator, gemini: GeminiEmulator, dm: int, user: dict[str, Any]
) -> tuple[int, asyncio.Task[None]]:
    """Ask a question Gemini answers slowly, then stop the bot: it drains until the answer."""
    gemini.latency = IN_PROCESS_DRAIN_S
    slow = int((await discord.send_message(dm, author=user, content="a slow one"))["id"])
    await gemini.wait_for_requests(1)
    stopping = asyncio.create_task(app.stop())

    async def draining() -> bool:
        return app.pipeline.stats.in_flight > 0 and app._stopping

    await _until("the drain", draining, 10)
    return slow, stopping


async def test_a_mention_the_journal_cannot_keep_during_the_drain_is_asked_to_come_again(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(shutdown_grace_seconds=30, gemini_timeout_seconds=30)
    user = discord.create_user("asker")
    dm = discord.create_dm(user)
    _refuse_in_db(app.store.path, "INSERT", "answered:%")  # the journal fails from now on
    slow, stopping = await _drain_with_a_slow_answer(app, discord, gemini, dm, user)

    during = int((await discord.send_message(dm, author=user, content="while draining"))["id"])
    refusal = await discord.wait_for_reply(during, timeout=10)
    assert refusal.content == RESTARTING_TEXT  # nothing promised
    await stopping
    assert len(_finals(discord, slow)) == 1
    assert _replies(discord, during) == [RESTARTING_TEXT]
    assert app.answers.stats.store_errors_total >= 1


async def test_no_more_are_kept_during_the_drain_than_the_queue_takes_after_the_restart(
    start_bot: Callable[..., Any], discord: DiscordEmulator, gemini: GeminiEmulator
) -> None:
    app: BotApp = await start_bot(
        shutdown_grace_seconds=30, gemini_timeout_seconds=30, queue_max_size=2
    )
    user = discord.create_user("asker")
    dm = discord.create_dm(user)
    slow, stopping = await _drain_with_a_slow_answer(app, discord, gemini, dm, user)
    during = []
    for n in range(3):
        asked = await discord.send_message(dm, author=user, content=f"while draining {n}")
        during.append(int(asked["id"]))
        await discord.wait_for_reply(during[-1], timeout=10)
    assert [_replies(discord, i) for i in during] == [
        [RESTARTING_NOTICE],
        [RESTARTING_NOTICE],
        [RESTARTING_TEXT],  # the queue's two places are promised: asked to come again
    ]
    await stopping
    assert len(_finals(discord, slow)) == 1
    assert app.answers.stats.open_by_state["queued"] == 2
