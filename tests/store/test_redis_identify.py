"""The fleet's identify turns on a real redis-server: one process identifies at a time, and the
next one only a bucket interval after the last identify."""

from __future__ import annotations

import asyncio
import itertools
import time

from bot.store.redis_identify import IdentifyTurns
from bot.store.redis_link import RedisLink
from tests.redis_server import RedisServer


async def test_processes_take_turns_a_bucket_interval_apart(redis_server: RedisServer) -> None:
    links = [RedisLink(redis_server.url) for _ in range(3)]
    turns = [
        IdentifyTurns(link, f"p{i}", interval_s=0.4, poll_s=0.02) for i, link in enumerate(links)
    ]
    spans: list[tuple[str, float, float]] = []

    async def start(turn: IdentifyTurns) -> None:
        async with turn.turn():
            began = time.monotonic()
            await asyncio.sleep(0.05)  # the shards identifying
            spans.append((turn.instance, began, time.monotonic()))

    try:
        await asyncio.gather(*(start(t) for t in turns))
        await asyncio.gather(*(t.close() for t in turns if t is not turns[-1]))
        spans.sort(key=lambda span: span[1])
        for (_, _, ended), (_, began, _) in itertools.pairwise(spans):
            assert began - ended >= 0.4  # never two at once, and the bucket interval between
        assert sum(t.waited_s > 0.3 for t in turns) == 2
        assert links[0].stats.commands["identify"] >= 2
    finally:
        for turn in turns:
            await turn.close()
        for link in links:
            await link.aclose()


async def test_a_closed_process_hands_over_at_once(redis_server: RedisServer) -> None:
    first, second = RedisLink(redis_server.url), RedisLink(redis_server.url)
    a = IdentifyTurns(first, "a", interval_s=30.0, poll_s=0.02)
    b = IdentifyTurns(second, "b", interval_s=0.1, poll_s=0.02)
    try:
        async with a.turn():
            pass
        await a.close()  # a stops: no 30 s wait for b
        async with asyncio.timeout(5):
            async with b.turn():
                pass
    finally:
        await b.close()
        await first.aclose()
        await second.aclose()
